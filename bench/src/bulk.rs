//! Retry at scale (`jobs-bench bulk`, run by `scripts/bench bulk` against secantusd-rs): one
//! user (`bulk`) with 100,000 tasks, 10,000 of them failed for one cause (one error group), the
//! rest failed for three other causes, cancelled or completed. Through the release `jobs`
//! binary over HTTP, in development mode, dispatching through QStash to the benchmark's sink:
//!
//! 1. `groups` against the bare aggregation, alternating request by request (on the fresh
//!    seed): as an open page asks it, nothing changed since the last (the kept answer, spec
//!    §14), and each right after a change of the user's failed tasks (its version moved
//!    directly, untimed: the service aggregates and keeps again);
//! 2. `retryMany` by filter `{errorGroup}` page after page until `nextCursor` is null (10 calls
//!    of 1,000): wall time, per-call latency, MongoDB commands (`x-jobs-db-commands`) and
//!    QStash requests per call, publishes per task;
//! 3. its floor on the same data (seeded again): the whole group in ONE `updateMany`, ONE
//!    `find` of what it stamped and the batch publishes, issued directly (`floor.rs`);
//! 4. the same tasks (seeded again) as single `retry` calls, alternating with single retries of
//!    a user alone in a database of 20 tasks (a second `jobs` on its own database).
//!
//! Then records what `explain` says of the page `find`, the floor's filter and both
//! aggregations.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use jobs_core::task::{Task, TaskStatus};
use mongodb::bson::doc;
use serde_json::json;

use crate::calls::{Call, Figures};
use crate::floor::{self, BULK_PAGE};
use crate::run::col::*;
use crate::run::{Col, Table, alternate, measured, pages, thousands};
use crate::seed::{self, INSERT_BATCH, PAYLOAD_BYTES, SPREAD_SECONDS};
use crate::{Settings, check, number, qstash_sink::Sink, service::Jobs};

/// The user alone in a database of [`SMALL_TASKS`] tasks whose single retries the big user's
/// are compared with, and its failed task that each retry takes (put back untimed).
const SMALL_USER: &str = "small";
const SMALL_TASKS: usize = 20;

const BIG_USER: &str = "bulk";
/// The message of the 10,000 failures of the retried group: the `demo` processor's.
const GROUP_MESSAGE: &str = "Simulated failure on attempt 1";
/// The other causes (one task in twenty fails for one of them, in turn).
const OTHER_MESSAGES: [&str; 3] = [
    "Webhook answered 503 from https://hooks.example.com/notify?sig=8c1f2e",
    "Timed out after 30000 ms waiting for the render service",
    "Invalid payload: field 'imageUrl' is not a URL",
];

/// `count` tasks of `user`, each with the timeline of its one run (3 events): one in ten
/// failed with [`GROUP_MESSAGE`] (retries left), one in twenty failed with one of
/// [`OTHER_MESSAGES`] in turn (some with their retries used up), one in twenty cancelled, the
/// rest completed.
pub fn build(user: &str, count: usize) -> Result<Vec<Task>> {
    seed::spread(user, count, 3, |i, task| match i % 20 {
        0 | 10 => task.status(TaskStatus::Failed).last_error(GROUP_MESSAGE),
        1 => {
            let message = OTHER_MESSAGES[(i / 20) % OTHER_MESSAGES.len()];
            let failed = task.status(TaskStatus::Failed).last_error(message);
            failed.retry_count(((i / 60) % 4) as i32)
        }
        3 => task.status(TaskStatus::Cancelled),
        _ => task.status(TaskStatus::Completed),
    })
}

/// The tasks of `group`'s, newest first (the order `retryMany` takes them in).
fn in_group(tasks: &[Task], group: &str) -> Vec<String> {
    let of_group = tasks
        .iter()
        .rev()
        .filter(|t| t.error_group.as_deref() == Some(group));
    of_group.map(|t| t.task_id.to_string()).collect()
}

/// The columns of a run of `retryMany`, service or floor (whose QStash and CPU cells are `—`).
const PAGED: [Col; 11] = [
    ("calls", |s, _| s.n.to_string()),
    ("retried", |s, _| thousands(s.retried)),
    ("skipped", |s, _| s.skipped.to_string()),
    ("wall time", |s, _| format!("{:.2} s", s.wall_s)),
    ("per call p50", |s, _| format!("{:.1} ms", s.p50_ms)),
    ("per call p99", |s, _| format!("{:.1} ms", s.p99_ms)),
    ("MongoDB commands per call", |s, _| s.commands.join(", ")),
    ("per task", |s, _| {
        format!("{:.3}", s.commands_total as f64 / s.retried.max(1) as f64)
    }),
    ("QStash requests per call", |s, _| match s.qstash {
        Some(_) => s.qstash_per_call.join(", "),
        None => "—".into(),
    }),
    ("publishes per task", |s, _| match s.qstash {
        Some(q) => {
            let per_task = q.messages as f64 / s.retried.max(1) as f64;
            let per_batch = q.messages as f64 / q.batches.max(1) as f64;
            format!(
                "{per_task:.2} ({} batches of {per_batch:.0}, {} single)",
                q.batches, q.single
            )
        }
        None => "—".into(),
    }),
    ("service CPU per call", |s, _| match s.qstash {
        Some(_) => format!("{:.1} ms", s.per_call(s.cpu_ms)),
        None => "—".into(),
    }),
];

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let count = number("BENCH_BULK_TASKS", 100_000);
    let groups_calls = number("BENCH_BULK_GROUPS_CALLS", 100);
    let client = floor::client(&settings.mongodb_uri).await?;
    let db = client.database(&format!("{}_bulk", settings.db));
    let tasks = db.collection::<Task>("tasks");

    let built = Instant::now();
    let seeded = build(BIG_USER, count)?;
    let build_s = built.elapsed().as_secs_f64();
    let first = seeded.first().context("no task")?;
    let group = first.error_group.as_deref().context("a failure's group")?;
    let group_ids = in_group(&seeded, group);
    let max_calls = group_ids.len() / BULK_PAGE + 2;
    let insert = async || seed::insert(&settings.mongodb_uri, &db, &seeded).await;
    let mut seeds = vec![insert().await?];
    eprintln!("bulk: seeded {count} tasks in {:.1} s", seeds[0]);
    let jobs = Jobs::start(settings, db.name(), sink).await?;

    // The user alone in a small database, with its own `jobs`.
    let small_db = client.database(&format!("{}_small", settings.db));
    let failed = |_, task: jobs_core::testing::TaskFixture| {
        task.status(TaskStatus::Failed).last_error(GROUP_MESSAGE)
    };
    let small_tasks = seed::spread(SMALL_USER, SMALL_TASKS, 3, failed)?;
    seed::insert(&settings.mongodb_uri, &small_db, &small_tasks).await?;
    let small_jobs = Jobs::start(settings, small_db.name(), sink).await?;
    let small = small_db.collection::<Task>("tasks");

    let service_groups = async || -> Result<Call> {
        let (mut call, answer) = jobs
            .call(&format!("action=groups&userId={BIG_USER}"), None)
            .await?;
        ensure!(call.ok, "groups answered {answer}");
        let groups = answer["groups"]
            .as_array()
            .context("groups in the answer")?;
        let count = |g: &serde_json::Value| g["count"].as_i64().unwrap_or(-1);
        let found = groups
            .iter()
            .map(|g| (g["errorGroup"].as_str().unwrap_or_default(), count(g)));
        call.found = Some(floor::groups_found(found));
        Ok(call)
    };
    let service_page =
        async |user: &str, cursor: Option<String>| -> Result<(Call, Option<String>)> {
            let mut body = json!({ "userId": user, "filter": { "errorGroup": group } });
            if let Some(cursor) = cursor {
                body["cursor"] = cursor.into();
            }
            let before = sink.counts();
            let (mut call, answer) = jobs.call("action=retryMany", Some(body)).await?;
            ensure!(call.ok, "retryMany answered {answer}");
            call.qstash = Some((sink.counts() - before).requests);
            let len = |key: &str| answer[key].as_array().map_or(0, Vec::len);
            (call.retried, call.skipped) = (len("retried"), len("skipped"));
            Ok((call, answer["nextCursor"].as_str().map(str::to_owned)))
        };
    let count_in = async |status: TaskStatus| {
        let filter = doc! { "userId": BIG_USER, "errorGroup": group, "status": status };
        Ok::<_, anyhow::Error>(tasks.count_documents(filter).await? as usize)
    };

    // 1. groups, on the fresh seed (before any retry moves the group's tasks).
    eprintln!("bulk: groups x {groups_calls}");
    let aggregate = |_| floor::groups(&tasks, BIG_USER);
    let (groups_service, groups_floor) =
        alternate(&jobs, groups_calls, |_| service_groups(), aggregate).await?;
    let summaries = db.collection::<mongodb::bson::Document>("failureGroups");
    let changed_then_groups = async || -> Result<Call> {
        let bump = doc! { "$inc": { "version": 1_i64 } };
        summaries.update_one(doc! { "_id": BIG_USER }, bump).await?;
        service_groups().await
    };
    eprintln!("bulk: groups x {groups_calls}, each after a change");
    let (changed_service, changed_floor) =
        alternate(&jobs, groups_calls, |_| changed_then_groups(), aggregate).await?;

    // 2. retryMany through the service, on the data seeded again: each of the three runs
    // starts right after the same drop and insert, so none of them inherits the others'
    // writes (or the server's work of dropping them).
    // Each round seeds the data again before the service's run and before the floor's, and
    // lets the server settle first (`fsync`, then 2 s), so neither inherits the other's writes
    // or the insert's background work; the figures of the round with the median ratio are
    // the table's, every round's wall times are listed.
    let settle = async || {
        let _ = client
            .database("admin")
            .run_command(doc! { "fsync": 1 })
            .await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    };
    let mut rounds = Vec::new();
    let (mut service_end, mut floor_end) = ([0; 2], [0; 2]);
    for round in 0..number("BENCH_BULK_ROUNDS", 3) {
        seeds.push(insert().await?);
        settle().await;
        eprintln!("bulk: round {round}: retryMany by errorGroup, service");
        let service_pages = pages(max_calls, |cursor| service_page(BIG_USER, cursor));
        let service = measured(&jobs, sink, service_pages).await?;
        service_end = [
            count_in(TaskStatus::Queued).await?,
            count_in(TaskStatus::Failed).await?,
        ];

        seeds.push(insert().await?);
        settle().await;
        eprintln!("bulk: round {round}: retryMany floor");
        let (sink_before, started) = (sink.counts(), Instant::now());
        let floor_call = floor::bulk_all(&db, BIG_USER, group, &sink.url).await?;
        let mut floor = Figures::of(&[floor_call], started.elapsed().as_secs_f64());
        floor.qstash = Some(sink.counts() - sink_before);
        floor_end = [
            count_in(TaskStatus::Queued).await?,
            count_in(TaskStatus::Failed).await?,
        ];
        rounds.push((service, floor));
    }
    rounds.sort_by(|a, b| (a.0.wall_s / a.1.wall_s).total_cmp(&(b.0.wall_s / b.1.wall_s)));
    let walls: Vec<String> = rounds
        .iter()
        .map(|(s, f)| {
            format!(
                "{:.2} / {:.2} s ({:.2})",
                s.wall_s,
                f.wall_s,
                s.wall_s / f.wall_s
            )
        })
        .collect();
    let (service, floor) = rounds.swap_remove(rounds.len() / 2);

    // 4. The same tasks, seeded again, one `retry` each, alternating with a retry of the small
    // user's task, which is put back to `failed` after each (untimed).
    seeds.push(insert().await?);
    settle().await;
    eprintln!(
        "bulk: {} single retries, alternating with the user of {SMALL_TASKS} tasks",
        group_ids.len()
    );
    let small_id = small_tasks[0].task_id.to_string();
    let retry = async |i: usize| -> Result<Call> {
        let id = &group_ids[i % group_ids.len()];
        let body = json!({ "taskId": id, "userId": BIG_USER });
        Ok(jobs.call("action=retry", Some(body)).await?.0)
    };
    let retry_small = async |_| -> Result<Call> {
        let body = json!({ "taskId": small_id, "userId": SMALL_USER });
        let (call, answer) = small_jobs.call("action=retry", Some(body)).await?;
        ensure!(call.ok, "the small user's retry answered {answer}");
        let failed_again =
            doc! { "$set": { "status": "failed", "retryCount": 0, "retriesLeft": 3 } };
        small
            .update_one(doc! { "taskId": &small_id }, failed_again)
            .await?;
        Ok(call)
    };
    let singles_n = group_ids.len() - crate::run::WARM_UP;
    let (singles, singles_small) = alternate(&jobs, singles_n, retry, retry_small).await?;
    let singles_moved = count_in(TaskStatus::Queued).await?;
    small_jobs.stop();

    // The plans.
    eprintln!("bulk: explain");
    let page_find = doc! {
        "find": "tasks",
        "filter": { "userId": BIG_USER, "status": "failed", "errorGroup": group },
        "sort": floor::newest_first(), "projection": floor::page_projection(),
        "limit": BULK_PAGE as i64 + 1,
    };
    let find_explain = check::explain(&db, page_find).await;
    let floor_find = doc! { "find": "tasks", "filter": floor::bulk_filter(BIG_USER, group) };
    let floor_explain = check::explain(&db, floor_find).await;
    let pipeline = floor::groups_pipeline(BIG_USER);
    let aggregate = doc! { "aggregate": "tasks", "pipeline": pipeline, "cursor": {} };
    let groups_explain = check::explain(&db, aggregate).await;
    jobs.stop();

    // The report.
    let of_status = |s| thousands(seeded.iter().filter(|t| t.status == s).count());
    let other_failed = seeded
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .count()
        - group_ids.len();
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:.1}")).collect();
    println!(
        "Seeded {} tasks for `{BIG_USER}`: {} failed with \"{GROUP_MESSAGE}\" (group `{group}`, \
         template \"{}\", retries left), {} failed for {} other causes (some with their retries \
         used up), {} cancelled, {} completed; {PAYLOAD_BYTES}-byte payloads, `createdAt` \
         {SPREAD_SECONDS} s apart, timelines of 3 events, `errorGroup`/`errorTemplate` as the \
         service records them. Built in {build_s:.1} s; inserted with `insert_many` in batches of \
         {INSERT_BATCH} into the indexed collection before `groups`, before each round's \
         `retryMany` and its floor, and before the single retries: {} s. \
         `{SMALL_USER}`: {SMALL_TASKS} failed tasks alone in a database of their own.",
        thousands(count),
        thousands(group_ids.len()),
        first.error_template.as_deref().unwrap_or_default(),
        thousands(other_failed),
        OTHER_MESSAGES.len(),
        of_status(TaskStatus::Cancelled),
        of_status(TaskStatus::Completed),
        seeds.join(" / "),
    );
    println!();

    let in_group = format!("{} tasks", thousands(group_ids.len()));
    let lead = format!("`retryMany` by `{{errorGroup}}`, {in_group}");
    let mut paged = Table::new(&[&lead], "floor", &PAGED);
    let label = "service (HTTP, `retryMany` until `nextCursor` is null)";
    paged.row(&[label], &service, &floor);
    let label = "floor (driver: ONE `updateMany` of the whole group, ONE `find` of what it \
                 stamped, the batch publishes)";
    paged.row(&[label], &floor, &service);
    let wall = format!("{:.2}", service.wall_s / floor.wall_s);
    let label = "ratio service / floor, wall time (target ≤ 1.3)";
    let blank = |n| vec![String::new(); n];
    paged.cells([vec![label.into()], blank(3), vec![wall], blank(7)].concat());
    paged.print();
    println!();
    let rate = service.retried as f64 / service.wall_s;
    println!(
        "Rounds, service / floor wall time (ratio), sorted; the table shows the median: {}.",
        walls.join(", ")
    );
    println!();
    println!(
        "Service: {:.0} tasks per second ({:.0}x the 13 of the last release). After the runs: \
         service {} of the group queued, {} still failed; floor {} queued, {} failed; single \
         retries {} queued.",
        rate,
        rate / 13.0,
        thousands(service_end[0]),
        service_end[1],
        thousands(floor_end[0]),
        floor_end[1],
        thousands(singles_moved),
    );
    println!();

    let lead = "single `retry`, one at a time, the two users alternating";
    let columns = [
        N, S_P50, S_P99, F_P50, F_P99, RATIO_P50, RATIO_P99, CPU, COMMANDS,
    ];
    let mut single = Table::new(&[lead], &format!("`{SMALL_USER}`"), &columns);
    let label = format!(
        "`{BIG_USER}` ({} tasks; the {in_group} of the group) against `{SMALL_USER}` \
         ({SMALL_TASKS} tasks alone; target p50 ratio ≤ 1.5)",
        thousands(count)
    );
    single.row(&[&label], &singles, &singles_small);
    single.print();
    println!();
    let singles_s = singles.total_ms / 1000.0;
    println!(
        "`retryMany` against single `retry` for the same {in_group}: {:.2} s against {:.2} s \
         of single calls ({:.1}x), MongoDB commands {} against {}.",
        service.wall_s,
        singles_s,
        singles_s / service.wall_s,
        service.commands_total,
        singles.commands_total,
    );
    println!();

    let lead = format!(
        "`groups` over {} tasks (one at a time, service and aggregation alternating)",
        thousands(count)
    );
    let columns = [
        N, S_P50, S_P99, F_P50, F_P99, RATIO_P50, RATIO_P99, OVERHEAD, CPU, COMMANDS,
    ];
    let mut groups = Table::new(&[&lead], "aggregation", &columns);
    let label = "`groups` (failed) against the bare aggregation (target p50 ratio ≤ 1.3, ≤ 50 ms): nothing changed since the last call (the kept answer)";
    groups.row(&[label], &groups_service, &groups_floor);
    let label = "the same, each right after a change of the user's failed tasks (aggregated and kept again)";
    groups.row(&[label], &changed_service, &changed_floor);
    groups.print();
    println!();
    let found = groups_service.found.unwrap_or_default();
    println!("Groups found (service and aggregation agree on every call): {found}.");
    println!();
    println!(
        "`explain` (executionStats) of the service's page `find` (first page; run after the \
         single retries, when the group has no failed task left): {find_explain}"
    );
    println!();
    println!("`explain` (executionStats) of the floor's filter, as a `find`: {floor_explain}");
    println!();
    println!("`explain` (executionStats) of the bare aggregation: {groups_explain}");
    db.drop().await?;
    small_db.drop().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_has_one_group_of_a_tenth() {
        let tasks = build("u", 2_000).unwrap();
        let mut groups: Vec<_> = tasks.iter().filter_map(|t| t.error_group.clone()).collect();
        let group_ids = in_group(&tasks, &groups[0]);
        assert_eq!((tasks.len(), group_ids.len()), (2_000, 200));
        groups.sort();
        groups.dedup();
        assert_eq!(
            groups.len(),
            1 + OTHER_MESSAGES.len(),
            "four distinct causes"
        );
        // Newest first, as `retryMany` takes them.
        let created = |id: &str| {
            tasks
                .iter()
                .find(|t| t.task_id.as_str() == id)
                .unwrap()
                .created_at
        };
        assert!(created(&group_ids[0]) > created(&group_ids[1]));
        tasks.iter().for_each(jobs_core::testing::assert_legal);
    }
}
