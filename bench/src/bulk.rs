//! Retry at scale (`jobs-bench bulk`, run by `scripts/bench bulk` against secantusd-rs): one
//! user (`bulk`) with 100,000 tasks, 10,000 of them failed for one cause (one error group), the
//! rest failed for three other causes, cancelled or completed. Through the release `jobs`
//! binary over HTTP, in development mode, dispatching through QStash to the benchmark's sink:
//!
//! 1. `retryMany` by filter `{errorGroup}` page after page until `nextCursor` is null (100
//!    calls of 100): wall time, per-call latency, MongoDB commands (`x-jobs-db-commands`) and
//!    QStash requests per call, publishes per task;
//! 2. its floor on the same data (seeded again): per page a `find`, one `update` command of
//!    the page's statements and a `find` of the moved tasks, issued directly (`floor.rs`);
//! 3. the same tasks (seeded again) as single `retry` calls;
//! 4. `groups` against the bare aggregation, alternating request by request (run first, on
//!    the fresh seed).
//!
//! Then, with the server's profiler on, checks that the service and the floor send the same
//! commands, and records what `explain` says of the page `find` and of the aggregation.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use jobs_core::task::{Task, TaskStatus};
use jobs_core::testing::TaskFixture;
use mongodb::bson::doc;
use serde_json::json;

use crate::calls::{Call, Figures};
use crate::floor::{self, BULK_PAGE};
use crate::run::col::*;
use crate::run::{Col, Table, alternate, drive, measured, pages, thousands};
use crate::seed::{self, INSERT_BATCH, PAYLOAD_BYTES, SPREAD_SECONDS};
use crate::{Settings, check, number, qstash_sink::Sink, service::Jobs};

const BIG_USER: &str = "bulk";
/// The message of the 10,000 failures of the retried group: the `demo` processor's.
const GROUP_MESSAGE: &str = "Simulated failure on attempt 1";
/// The other causes (one task in twenty fails for one of them, in turn).
const OTHER_MESSAGES: [&str; 3] = [
    "Webhook answered 503 from https://hooks.example.com/notify?sig=8c1f2e",
    "Timed out after 30000 ms waiting for the render service",
    "Invalid payload: field 'imageUrl' is not a URL",
];
/// A second user whose failed tasks (same cause) serve the profiler check after the runs:
/// two pages for the service, two for the floor.
const CHECK_USER: &str = "check";
const CHECK_TASKS: usize = 4 * BULK_PAGE;

/// `count` tasks of `user`, each with the timeline of its one run (3 events): one in ten
/// failed with [`GROUP_MESSAGE`] (retries left), one in twenty failed with one of
/// [`OTHER_MESSAGES`] in turn (some with their retries used up), one in twenty cancelled, the
/// rest completed.
fn build(user: &str, count: usize) -> Result<Vec<Task>> {
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

/// The columns of the single retries.
const SINGLE: [Col; 8] = [
    ("wall time", |s, _| format!("{:.2} s", s.wall_s)),
    ("p50", |s, _| format!("{:.1} ms", s.p50_ms)),
    ("p99", |s, _| format!("{:.1} ms", s.p99_ms)),
    ("MongoDB commands per task", |s, _| {
        format!("{:.2}", s.per_call(s.commands_total as f64))
    }),
    ("QStash requests per task", |s, _| {
        format!("{:.2}", s.per_call(s.sent().requests as f64))
    }),
    ("publishes per task", |s, _| {
        format!("{:.2}", s.per_call(s.sent().messages as f64))
    }),
    ("service CPU per call", |s, _| {
        format!("{:.2} ms", s.per_call(s.cpu_ms))
    }),
    ("failed", |s, _| s.errors.to_string()),
];

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let count = number("BENCH_BULK_TASKS", 100_000);
    let groups_calls = number("BENCH_BULK_GROUPS_CALLS", 100);
    let concurrency = number("BENCH_BULK_RETRY_CONCURRENCY", 1);
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

    // 4. groups, on the fresh seed (before any retry moves the group's tasks).
    eprintln!("bulk: groups x {groups_calls}");
    let aggregate = |_| floor::groups(&tasks, BIG_USER);
    let (groups_service, groups_floor) =
        alternate(&jobs, groups_calls, |_| service_groups(), aggregate).await?;

    // 1. retryMany through the service, on the data seeded again: each of the three runs
    // starts right after the same drop and insert, so none of them inherits the others'
    // writes (or the server's work of dropping them).
    seeds.push(insert().await?);
    eprintln!("bulk: retryMany by errorGroup, service");
    let service_pages = pages(max_calls, |cursor| service_page(BIG_USER, cursor));
    let service = measured(&jobs, sink, service_pages).await?;
    let service_end = [
        count_in(TaskStatus::Queued).await?,
        count_in(TaskStatus::Failed).await?,
    ];

    // 2. The floor, on the same data seeded again.
    seeds.push(insert().await?);
    eprintln!("bulk: retryMany floor");
    let started = Instant::now();
    let floor_pages = pages(max_calls, |cursor| {
        floor::bulk_page(&db, BIG_USER, group, cursor)
    });
    let floor = Figures::of(&floor_pages.await?, started.elapsed().as_secs_f64());
    let floor_end = [
        count_in(TaskStatus::Queued).await?,
        count_in(TaskStatus::Failed).await?,
    ];

    // 3. The same tasks, seeded again, one `retry` each.
    seeds.push(insert().await?);
    eprintln!(
        "bulk: {} single retries, {concurrency} in flight",
        group_ids.len()
    );
    let retry = async |i: usize| -> Result<Option<Call>> {
        let Some(id) = group_ids.get(i) else {
            return Ok(None);
        };
        let body = json!({ "taskId": id, "userId": BIG_USER });
        Ok(Some(jobs.call("action=retry", Some(body)).await?.0))
    };
    let singles = measured(&jobs, sink, drive(concurrency, None, retry)).await?;
    let singles_moved = count_in(TaskStatus::Queued).await?;

    // The commands each side sent, and their plans.
    eprintln!("bulk: profiler check and explain");
    let failed = |_, task: TaskFixture| task.status(TaskStatus::Failed).last_error(GROUP_MESSAGE);
    tasks
        .insert_many(seed::spread(CHECK_USER, CHECK_TASKS, 3, failed)?)
        .await?;
    let (same, page_find) =
        check::same_commands(&db, &["find", "update", "aggregate", "getMore"], async {
            service_groups().await?;
            floor::groups(&tasks, BIG_USER).await?;
            let (_, cursor) = service_page(CHECK_USER, None).await?;
            service_page(CHECK_USER, cursor).await?;
            let (_, next) = floor::bulk_page(&db, CHECK_USER, group, None).await?;
            floor::bulk_page(&db, CHECK_USER, group, next).await?;
            Ok(())
        })
        .await?;
    let mut page_find = page_find.unwrap_or_else(|| {
        let filter = doc! { "userId": BIG_USER, "status": "failed", "errorGroup": group };
        let (sort, projection) = (floor::newest_first(), floor::page_projection());
        let limit = BULK_PAGE as i64 + 1;
        doc! { "find": "tasks", "filter": filter, "sort": sort, "projection": projection, "limit": limit }
    });
    // The same `find` for the user with 100,000 tasks.
    if let Ok(filter) = page_find.get_document_mut("filter") {
        filter.insert("userId", BIG_USER);
    }
    let find_explain = check::explain(&db, page_find).await;
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
         {INSERT_BATCH} into the indexed collection four times (before `groups`, before the \
         service's `retryMany`, before its floor, before the single retries): {} s.",
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
    let label =
        "floor (driver: page `find`, one `update` of the page's statements, `find` of the moved)";
    paged.row(&[label], &floor, &service);
    let ratios = [
        (service.wall_s, floor.wall_s),
        (service.p50_ms, floor.p50_ms),
    ];
    let ratios = [ratios[0], ratios[1], (service.p99_ms, floor.p99_ms)];
    let ratios = ratios.map(|(s, f)| format!("{:.2}", s / f)).to_vec();
    let (blank, label) = (
        |n| vec![String::new(); n],
        "ratio service / floor (target ≤ 1.5)",
    );
    paged.cells([vec![label.into()], blank(3), ratios, blank(5)].concat());
    paged.print();
    println!();
    println!(
        "After the runs: service {} of the group queued, {} still failed; floor {} queued, {} \
         failed; single retries {} queued. Service time per call beyond the floor at p50: \
         {:+.1} ms; mean {:+.1} ms.",
        thousands(service_end[0]),
        service_end[1],
        thousands(floor_end[0]),
        floor_end[1],
        thousands(singles_moved),
        service.p50_ms - floor.p50_ms,
        service.per_call((service.wall_s - floor.wall_s) * 1000.0),
    );
    println!();

    let lead = format!("the same {in_group} as single `retry` calls");
    let mut single = Table::new(&[&lead, "concurrency"], "floor", &SINGLE);
    let label = "service (HTTP, one `retry` per task)";
    single.row(&[label, &concurrency.to_string()], &singles, &singles);
    single.print();
    println!();
    println!(
        "`retryMany` against single `retry` for the same {in_group}: wall time {:.2} s against \
         {:.2} s ({:.1}x), MongoDB commands {} against {}, QStash requests {} against {}.",
        service.wall_s,
        singles.wall_s,
        singles.wall_s / service.wall_s,
        service.commands_total,
        singles.commands_total,
        service.sent().requests,
        singles.sent().requests,
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
    let label = "`groups` (failed) against the pipeline of `Store::error_groups`";
    groups.row(&[label], &groups_service, &groups_floor);
    groups.print();
    println!();
    let found = groups_service.found.unwrap_or_default();
    println!("Groups found (service and aggregation agree on every call): {found}.");
    println!();
    println!(
        "The commands as the server received them, service against floor (profiler on for one \
         `groups` and one aggregation, then two `retryMany` pages of `{CHECK_USER}` ({CHECK_TASKS} \
         failed tasks of the same group) through each; times shown as `<date>`, generated ids \
         as `<id>`, long arrays cut):"
    );
    println!();
    for line in same {
        println!("- {line}");
    }
    println!();
    println!(
        "`explain` (executionStats) of the service's page `find` (first page, `userId` set to \
         `{BIG_USER}`; run after the single retries, when the group has no failed task left): \
         {find_explain}"
    );
    println!();
    println!("`explain` (executionStats) of the `groups` aggregation: {groups_explain}");
    db.drop().await?;
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
