//! The scale scenario (`jobs-bench scale`, run by `scripts/bench scale` against secantusd-rs):
//! one user with 100,000 tasks (`bulk`) and one with 20 (`small`), 500-byte payloads,
//! `createdAt` spread over days, a fifth of them failed. Measures, one request at a time,
//! `list` (first page of 20) for both users and `retry` of the big user's failed tasks through
//! the release `jobs` binary over HTTP, each against its floor (`floor.rs`), service and floor
//! alternating. Also records the list query's shape: the indexes and what `explain` says.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use jobs_core::task::{Task, TaskStatus};
use mongodb::bson::doc;
use serde_json::json;

use crate::calls::Call;
use crate::floor::{self, PAGE};
use crate::qstash_sink::Sink;
use crate::run::col::*;
use crate::run::{Table, alternate, thousands};
use crate::seed::{self, INSERT_BATCH, PAYLOAD_BYTES, SPREAD_SECONDS};
use crate::service::Jobs;
use crate::{Settings, check, number};

const BIG_USER: &str = "bulk";
const SMALL_USER: &str = "small";
const SMALL_TASKS: usize = 20;
/// One task in this many is `failed` (the retry pool), one in twenty `cancelled`, the rest
/// `completed`.
const FAILED_EVERY: usize = 5;

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let (count, n) = (
        number("BENCH_SCALE_TASKS", 100_000),
        number("BENCH_SCALE_REQUESTS", 200),
    );
    let client = floor::client(&settings.mongodb_uri).await?;
    let db = client.database(&format!("{}_scale", settings.db));
    let tasks = db.collection::<Task>("tasks");

    let started = Instant::now();
    let status = |i: usize, cancelled: bool| match i {
        i if i % FAILED_EVERY == 0 => TaskStatus::Failed,
        i if cancelled && i % 20 == 1 => TaskStatus::Cancelled,
        _ => TaskStatus::Completed,
    };
    let mut all = seed::spread(BIG_USER, count, 1, |i, t| t.status(status(i, true)))?;
    let failed: Vec<String> = all
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .map(|t| t.task_id.to_string())
        .collect();
    all.extend(seed::spread(SMALL_USER, SMALL_TASKS, 1, |i, t| {
        t.status(status(i, false))
    })?);
    seed::insert(&settings.mongodb_uri, &db, &all).await?;
    let seeded_s = started.elapsed().as_secs_f64();
    eprintln!("scale: seeded in {seeded_s:.1} s");

    // Fresh failed tasks spread over the whole collection, alternately the service's and the
    // floor's, so both act on the same kind of document at the same positions. The newest
    // failed task is kept out of the pool for `explain`, one pair for the commands' check.
    let (explained, pool) = failed.split_last().context("no failed task")?;
    let needed = 2 * (crate::run::WARM_UP + n + 1);
    if pool.len() < needed {
        bail!(
            "{} failed tasks for {needed} retries: raise BENCH_SCALE_TASKS",
            pool.len()
        );
    }
    let picked: Vec<&String> = pool
        .iter()
        .step_by(pool.len() / needed)
        .take(needed)
        .collect();
    let mut pairs: Vec<(&String, &String)> =
        picked.chunks(2).map(|pair| (pair[0], pair[1])).collect();
    let (check_service, check_floor) = pairs.pop().context("no retry pair")?;

    let index_lines = check::indexes(&tasks).await?;
    // The service names none of its indexes, so this is the server's name for these keys.
    let list_index = index_lines
        .iter()
        .any(|l| l.starts_with("`userId_1_createdAt_-1_taskId_-1`"));
    let jobs = Jobs::start(settings, db.name(), sink).await?;
    let list = async |user: &str| -> Result<Call> {
        let (mut call, answer) = jobs
            .call(&format!("action=list&userId={user}&limit={PAGE}"), None)
            .await?;
        let page = answer["tasks"].as_array();
        call.ok &= page.map(Vec::len) == Some(PAGE as usize)
            && answer["tasks"][0].get("payload").is_none();
        Ok(call)
    };
    let retry = async |id: &str| {
        Ok(jobs
            .call(
                "action=retry",
                Some(json!({ "taskId": id, "userId": BIG_USER })),
            )
            .await?
            .0)
    };
    // `retry` is not compared on the wire: its floor is the plainest `updateOne` (a guard on the
    // stored `retriesLeft`), the service's guard compares the counts (docs/spec.md §4).
    let (same, service_find) = check::same_commands(&db, &["find"], async {
        list(BIG_USER).await?;
        floor::list(&tasks, BIG_USER).await?;
        Ok(())
    })
    .await?;
    retry(check_service).await?;
    floor::retry(&tasks, check_floor, BIG_USER).await?;
    let list_command = service_find.unwrap_or_else(|| {
        doc! {
            "find": "tasks", "filter": { "userId": BIG_USER }, "sort": floor::newest_first(),
            "projection": floor::page_projection(), "limit": PAGE + 1, "batchSize": PAGE as i32 + 1,
        }
    });
    let list_explain = check::explain(&db, list_command).await;
    let (query, update) = floor::requeue(explained, BIG_USER, &format!("user:{BIG_USER}"));
    let statement = doc! { "q": query, "u": update };
    let retry_explain =
        check::explain(&db, doc! { "update": "tasks", "updates": [statement] }).await;

    println!(
        "Seeded {} tasks for `{BIG_USER}` ({} failed) and {SMALL_TASKS} for `{SMALL_USER}`, \
         {PAYLOAD_BYTES}-byte payloads, `createdAt` {SPREAD_SECONDS} s apart, with `insert_many` \
         in batches of {INSERT_BATCH} into the indexed collection: {seeded_s:.1} s.",
        thousands(count),
        thousands(failed.len()),
    );
    println!();
    let columns = [
        N, S_P50, S_P99, F_P50, F_P99, RATIO_P50, RATIO_P99, OVERHEAD, CPU, COMMANDS,
    ];
    let columns = [&columns[..], &[FAILED]].concat();
    let lead = "request (one at a time, service and floor alternating)";
    let mut table = Table::new(&[lead], "floor", &columns);
    let rows = [
        (
            format!(
                "`list` `{BIG_USER}` ({} tasks), first page of {PAGE}",
                thousands(count)
            ),
            Some(BIG_USER),
        ),
        (
            format!("`list` `{SMALL_USER}` ({SMALL_TASKS} tasks), first page of {PAGE}"),
            Some(SMALL_USER),
        ),
        (
            format!("`retry` `{BIG_USER}` (a fresh failed task each)"),
            None,
        ),
    ];
    for (label, listed) in rows {
        let (service, floor) = match listed {
            Some(user) => {
                alternate(&jobs, n, |_| list(user), |_| floor::list(&tasks, user)).await?
            }
            None => {
                alternate(
                    &jobs,
                    n,
                    |i| retry(pairs[i].0),
                    |i| floor::retry(&tasks, pairs[i].1, BIG_USER),
                )
                .await?
            }
        };
        table.row(&[&label], &service, &floor);
    }
    jobs.stop();
    table.print();
    println!();
    println!(
        "Indexes (`listIndexes`): {}. The list query's index `{{userId: 1, createdAt: -1, taskId: -1}}`: {}.",
        index_lines.join("; "),
        if list_index { "present" } else { "MISSING" }
    );
    println!();
    println!(
        "The commands as the server received them, service against floor (one `list` each with \
         the server's profiler on; times shown as `<date>`, generated ids as `<id>`):"
    );
    println!();
    for line in same {
        println!("- {line}");
    }
    println!();
    println!(
        "`explain` (executionStats) of the service's list `find` for `{BIG_USER}`: {list_explain}"
    );
    println!();
    println!("`explain` (executionStats) of the floor's retry `update`: {retry_explain}");
    db.drop().await?;
    Ok(())
}
