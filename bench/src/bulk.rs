//! Retry at scale (`jobs-bench bulk`, run by `scripts/bench bulk` against secantusd-rs): one
//! user (`bulk`) with 100,000 tasks, 10,000 of them failed for one cause (one error group), the
//! rest failed for three other causes, cancelled or completed. Through the release `jobs`
//! binary over HTTP, in development mode, dispatching through QStash to the benchmark's sink:
//!
//! 1. `retryMany` by filter `{errorGroup}` page after page until `nextCursor` is null (100
//!    calls of 100): wall time, per-call latency, MongoDB commands (`x-jobs-db-commands`) and
//!    QStash requests per call, publishes per task;
//! 2. its floor on the same data (re-seeded): per page the commands the service sends, issued
//!    directly with the driver (the `find` of `Store::failed_page`, the multi-statement `update`
//!    of `Store::requeue_many`, the `find` of `Store::requeued_with`);
//! 3. the same tasks (re-seeded) as single `retry` calls;
//! 4. `groups` against the bare aggregation of `Store::error_groups`, alternating request by
//!    request (run first, on the fresh seed).
//!
//! Then, with the server's profiler on, checks that the service and the floor send the same
//! commands, and records what `explain` says of the page `find` and of the aggregation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use futures_util::TryStreamExt;
use jobs_core::error_groups::Cause;
use jobs_core::requests::{Cursor, MAX_BULK};
use jobs_core::store::error_groups_pipeline;
use jobs_core::task::{Event, EventKind, Handoff, Task, TaskId, TaskStatus, UserId};
use jobs_core::transitions::{requeue_filter, requeue_update};
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};

use crate::Settings;
use crate::qstash_sink::{Counts, Sink};
use crate::scale::{
    BIG_USER, FLOOR_APP, INSERT_BATCH, PAYLOAD_BYTES, SERVICE_APP, SPREAD_SECONDS, WARM_UP,
    commands_of, explain, list_projection, ms, normalised, payload, task, thousands,
};
use crate::service::Jobs;
use crate::stats::quantile;

/// The message of the 10,000 failures of the retried group: the `demo` processor's.
const GROUP_MESSAGE: &str = "Simulated failure on attempt 1";
/// The other causes (one task in twenty fails for one of them, in turn).
const OTHER_MESSAGES: [&str; 3] = [
    "Webhook answered 503 from https://hooks.example.com/notify?sig=8c1f2e",
    "Timed out after 30000 ms waiting for the render service",
    "Invalid payload: field 'imageUrl' is not a URL",
];
/// A second user whose failed tasks (same cause) serve the profiler check after the runs.
const CHECK_USER: &str = "check";
/// The check user's failed tasks: two pages for the service, two for the floor.
const CHECK_TASKS: usize = 4 * MAX_BULK;

/// MongoDB commands the floor's client has started (its command monitoring).
static FLOOR_COMMANDS: AtomicU64 = AtomicU64::new(0);

struct BulkSettings {
    tasks: usize,
    groups_calls: usize,
    single_concurrency: usize,
}

fn bulk_settings() -> BulkSettings {
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    BulkSettings {
        tasks: number("BENCH_BULK_TASKS", 100_000),
        groups_calls: number("BENCH_BULK_GROUPS_CALLS", 100),
        single_concurrency: number("BENCH_BULK_RETRY_CONCURRENCY", 1),
    }
}

/// The seeded data: the documents (kept to seed them again, identical) and what they hold.
struct Seed {
    docs: Vec<Task>,
    group: Cause,
    /// The group's failed tasks, newest first (the order `retryMany` takes them in).
    group_ids: Vec<TaskId>,
    other_failed: usize,
    cancelled: usize,
    completed: usize,
}

/// A task of `user` as the service would have stored it after one run ending in `status`
/// (failed with `message`), its timeline included (created, claimed, and how it ended).
fn seeded_task(
    user: &UserId,
    status: TaskStatus,
    created: DateTime,
    payload: &Document,
    failure: Option<(&str, i32)>,
) -> Result<Task> {
    let mut task = task(user, status, created, payload);
    let started = task.started_at.context("a run")?;
    let finished = task.finished_at.context("an end")?;
    if let Some(created_event) = task.events.first_mut() {
        created_event.at = created;
    }
    task.events.push(Event {
        at: started,
        ..Event::new(EventKind::Claimed, "qstash").attempt(1)
    });
    let end = match status {
        TaskStatus::Failed => {
            let (message, retry_count) = failure.context("a failed task's message")?;
            let cause = Cause::of(message);
            let entry =
                bson::from_document(doc! { "attempt": 1, "message": message, "at": finished })?;
            task.last_error = Some(message.to_owned());
            task.error_history = vec![entry];
            task.error_group = Some(cause.group);
            task.error_template = Some(cause.template);
            task.retry_count = retry_count;
            Event::new(EventKind::Failed, "qstash")
                .attempt(1)
                .message(message)
        }
        TaskStatus::Cancelled => Event::new(EventKind::Cancelled, format!("user:{user}")),
        _ => Event::new(EventKind::Completed, "qstash").attempt(1),
    };
    task.events.push(Event {
        at: finished,
        ..end
    });
    Ok(task)
}

/// `count` tasks of `bulk`, `createdAt` `SPREAD_SECONDS` apart: one in ten failed with
/// [`GROUP_MESSAGE`] (retries left), one in twenty failed with one of [`OTHER_MESSAGES`] in
/// turn (some with their retries used up), one in twenty cancelled, the rest completed.
fn build(count: usize) -> Result<Seed> {
    let payload = payload()?;
    let user = UserId::parse(BIG_USER).map_err(anyhow::Error::msg)?;
    let now = DateTime::now().timestamp_millis();
    let mut seed = Seed {
        docs: Vec::with_capacity(count),
        group: Cause::of(GROUP_MESSAGE),
        group_ids: Vec::new(),
        other_failed: 0,
        cancelled: 0,
        completed: 0,
    };
    for i in 0..count {
        let created = DateTime::from_millis(now - (count - i) as i64 * SPREAD_SECONDS * 1000);
        let task = match i % 20 {
            0 | 10 => {
                let task = seeded_task(
                    &user,
                    TaskStatus::Failed,
                    created,
                    &payload,
                    Some((GROUP_MESSAGE, 0)),
                )?;
                seed.group_ids.push(task.task_id.clone());
                task
            }
            1 => {
                seed.other_failed += 1;
                let message = OTHER_MESSAGES[(i / 20) % OTHER_MESSAGES.len()];
                let retries = ((i / 60) % 4) as i32;
                seeded_task(
                    &user,
                    TaskStatus::Failed,
                    created,
                    &payload,
                    Some((message, retries)),
                )?
            }
            3 => {
                seed.cancelled += 1;
                seeded_task(&user, TaskStatus::Cancelled, created, &payload, None)?
            }
            _ => {
                seed.completed += 1;
                seeded_task(&user, TaskStatus::Completed, created, &payload, None)?
            }
        };
        seed.docs.push(task);
    }
    seed.group_ids.reverse();
    Ok(seed)
}

/// The collection as seeded, from scratch: dropped, the service's indexes created, then the
/// same documents inserted in batches with `insert_many`. Seconds taken.
async fn insert(tasks: &Collection<Task>, seed: &Seed) -> Result<f64> {
    let started = Instant::now();
    tasks.drop().await?;
    tasks
        .create_indexes(jobs_core::store::task_indexes())
        .await?;
    for batch in seed.docs.chunks(INSERT_BATCH) {
        tasks.insert_many(batch).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// How many of `user`'s tasks of `group` are in `status`.
async fn count(tasks: &Collection<Task>, group: &str, status: TaskStatus) -> Result<u64> {
    Ok(tasks
        .count_documents(doc! { "userId": BIG_USER, "errorGroup": group, "status": status })
        .await?)
}

/// One run of bulk retries (service or floor): per-call figures.
#[derive(Default)]
struct Paged {
    latencies: Vec<f64>,
    wall_s: f64,
    retried: usize,
    skipped: usize,
    /// MongoDB commands of each call.
    commands: Vec<u64>,
    /// What the QStash sink received during the run.
    qstash: Counts,
    /// QStash requests of each call.
    qstash_per_call: Vec<u64>,
    cpu_ms: f64,
}

/// One `retryMany` call of the service: latency, tasks retried and skipped, `nextCursor`,
/// MongoDB commands.
async fn service_page(
    jobs: &Jobs,
    user: &str,
    group: &str,
    cursor: Option<&str>,
) -> Result<(f64, usize, usize, Option<String>, String)> {
    let mut body = serde_json::json!({ "userId": user, "filter": { "errorGroup": group } });
    if let Some(cursor) = cursor {
        body["cursor"] = cursor.into();
    }
    let started = Instant::now();
    let response = jobs
        .http()
        .post(jobs.url("action=retryMany"))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let commands = commands_of(&response);
    let bytes = response.bytes().await?;
    let elapsed = ms(started);
    if !status.is_success() {
        bail!(
            "retryMany answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
    let len = |key: &str| answer[key].as_array().map_or(0, Vec::len);
    Ok((
        elapsed,
        len("retried"),
        len("skipped"),
        answer["nextCursor"].as_str().map(str::to_owned),
        commands,
    ))
}

/// `retryMany` by `{errorGroup}` through the service until `nextCursor` is null.
async fn service_run(jobs: &Jobs, sink: &Sink, group: &str, max_calls: usize) -> Result<Paged> {
    let mut run = Paged::default();
    let cpu_before = jobs.cpu_ms()?;
    let sink_before = sink.counts();
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    loop {
        let before = sink.counts();
        let (latency, retried, skipped, next, commands) =
            service_page(jobs, BIG_USER, group, cursor.as_deref()).await?;
        run.qstash_per_call.push((sink.counts() - before).requests);
        run.latencies.push(latency);
        run.retried += retried;
        run.skipped += skipped;
        run.commands.push(
            commands
                .parse()
                .with_context(|| format!("x-jobs-db-commands {commands:?}"))?,
        );
        cursor = next;
        if cursor.is_none() {
            break;
        }
        if run.latencies.len() >= max_calls {
            bail!("retryMany still had a nextCursor after {max_calls} calls");
        }
    }
    run.wall_s = started.elapsed().as_secs_f64();
    run.qstash = sink.counts() - sink_before;
    run.cpu_ms = jobs.cpu_ms()? - cpu_before;
    Ok(run)
}

/// The floor's connection to the database: the service's write concern (journaled, majority),
/// its own `appName` (so the profiler tells it from the service), and its commands counted.
async fn floor_client(uri: &str) -> Result<Client> {
    let mut options = ClientOptions::parse(format!(
        "{uri}/?w=majority&journal=true&appName={FLOOR_APP}"
    ))
    .await?;
    options.command_event_handler = Some(EventHandler::callback(|event| {
        if let CommandEvent::Started(_) = event {
            FLOOR_COMMANDS.fetch_add(1, Ordering::SeqCst);
        }
    }));
    Ok(Client::with_options(options)?)
}

/// Newest first, after `after` (as the service's `after_cursor`).
fn after_cursor(after: &Cursor) -> Vec<Document> {
    vec![
        doc! { "createdAt": { "$lt": after.created_at } },
        doc! { "createdAt": after.created_at, "taskId": { "$lt": after.task_id.as_str() } },
    ]
}

/// One page of a bulk retry by `{errorGroup}`, as the service does it, issued directly: the
/// `find` of `Store::failed_page` (same filter, sort, projection, limit `MAX_BULK + 1`, decoded
/// into `Task`), ONE `update` command with a statement per task (`requeue_filter`,
/// `requeue_update`, with the service's write concern), and the `find` of
/// `Store::requeued_with`. Latency, tasks moved, tasks skipped, where the next page starts.
async fn floor_page(
    db: &Database,
    user: &UserId,
    group: &str,
    after: Option<&Cursor>,
) -> Result<(f64, usize, usize, Option<Cursor>)> {
    let tasks = db.collection::<Task>("tasks");
    let raw = db.collection::<Document>("tasks");
    let concern = db
        .write_concern()
        .map(bson::to_document)
        .transpose()?
        .context("the floor's client has a write concern")?;
    let started = Instant::now();
    let mut query =
        doc! { "userId": user.as_str(), "status": TaskStatus::Failed, "errorGroup": group };
    if let Some(after) = after {
        query.insert("$or", after_cursor(after));
    }
    let mut page: Vec<Task> = tasks
        .find(query)
        .sort(doc! { "createdAt": -1, "taskId": -1 })
        .projection(list_projection())
        .limit(MAX_BULK as i64 + 1)
        .await?
        .try_collect()
        .await?;
    let mut next = None;
    if page.len() > MAX_BULK {
        page.truncate(MAX_BULK);
        let last = page.last().context("a full page")?;
        next = Some(Cursor {
            created_at: last.created_at,
            task_id: last.task_id.clone(),
        });
    }
    let (retryable, spent): (Vec<Task>, Vec<Task>) = page
        .into_iter()
        .partition(|t| t.retry_count < t.max_retries);
    if retryable.is_empty() {
        return Ok((ms(started), 0, spent.len(), next));
    }
    let now = DateTime::now();
    let handoffs: Vec<(TaskId, Handoff)> = retryable
        .iter()
        .map(|t| (t.task_id.clone(), Handoff::new(&t.task_id, now, true)))
        .collect();
    let by = format!("bulk:{user}");
    let statements: Vec<Document> = handoffs
        .iter()
        .map(|(task_id, handoff)| {
            doc! {
                "q": requeue_filter(task_id, user),
                "u": requeue_update(handoff, &by),
                "multi": false,
            }
        })
        .collect();
    let reply = db
        .run_command(doc! {
            "update": "tasks", "updates": statements, "ordered": false, "writeConcern": concern,
        })
        .await?;
    ensure!(
        reply.get_array("writeErrors").is_err() && reply.get_document("writeConcernError").is_err(),
        "the floor's update failed: {reply}"
    );
    let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
    let dedup: Vec<&str> = handoffs.iter().map(|(_, h)| h.dedup_id.as_str()).collect();
    let moved: Vec<Document> = raw
        .find(doc! { "taskId": { "$in": ids }, "handoff.dedupId": { "$in": dedup } })
        .projection(doc! { "taskId": 1, "_id": 0 })
        .await?
        .try_collect()
        .await?;
    let skipped = spent.len() + handoffs.len() - moved.len();
    Ok((ms(started), moved.len(), skipped, next))
}

/// The floor of a bulk retry by `{errorGroup}`, page after page until there is no next page.
async fn floor_run(db: &Database, user: &UserId, group: &str, max_calls: usize) -> Result<Paged> {
    let mut run = Paged::default();
    let started = Instant::now();
    let mut cursor: Option<Cursor> = None;
    loop {
        let before = FLOOR_COMMANDS.load(Ordering::SeqCst);
        let (latency, moved, skipped, next) = floor_page(db, user, group, cursor.as_ref()).await?;
        run.commands
            .push(FLOOR_COMMANDS.load(Ordering::SeqCst) - before);
        run.latencies.push(latency);
        run.retried += moved;
        run.skipped += skipped;
        cursor = next;
        if cursor.is_none() {
            break;
        }
        if run.latencies.len() >= max_calls {
            bail!("the floor still had a next page after {max_calls} pages");
        }
    }
    run.wall_s = started.elapsed().as_secs_f64();
    Ok(run)
}

/// The group's tasks retried one `retry` call each, `concurrency` in flight.
struct Singles {
    latencies: Vec<f64>,
    wall_s: f64,
    failed: usize,
    commands: u64,
    qstash: Counts,
    cpu_ms: f64,
}

async fn single_run(
    jobs: &Jobs,
    sink: &Sink,
    ids: &[TaskId],
    concurrency: usize,
) -> Result<Singles> {
    let next = AtomicUsize::new(0);
    let cpu_before = jobs.cpu_ms()?;
    let sink_before = sink.counts();
    let started = Instant::now();
    let worker = async || -> Result<(Vec<f64>, usize, u64)> {
        let (mut latencies, mut failed, mut commands) = (Vec::new(), 0, 0);
        while let Some(id) = ids.get(next.fetch_add(1, Ordering::SeqCst)) {
            let began = Instant::now();
            let response = jobs
                .http()
                .post(jobs.url("action=retry"))
                .json(&serde_json::json!({ "taskId": id.as_str(), "userId": BIG_USER }))
                .send()
                .await?;
            let ok = response.status().is_success();
            let counted = commands_of(&response);
            let _ = response.bytes().await?;
            latencies.push(ms(began));
            failed += usize::from(!ok);
            commands += counted.parse::<u64>().unwrap_or(0);
        }
        Ok((latencies, failed, commands))
    };
    let results = futures_util::future::join_all((0..concurrency).map(|_| worker())).await;
    let wall_s = started.elapsed().as_secs_f64();
    let mut singles = Singles {
        latencies: Vec::new(),
        wall_s,
        failed: 0,
        commands: 0,
        qstash: sink.counts() - sink_before,
        cpu_ms: jobs.cpu_ms()? - cpu_before,
    };
    for result in results {
        let (latencies, failed, commands) = result?;
        singles.latencies.extend(latencies);
        singles.failed += failed;
        singles.commands += commands;
    }
    Ok(singles)
}

/// Exactly the pipeline `Store::error_groups` sends for the big user's failed tasks.
fn groups_pipeline() -> Vec<Document> {
    let user = UserId::parse(BIG_USER).expect("a valid user id");
    error_groups_pipeline(&user, TaskStatus::Failed).to_vec()
}

/// `groups` through the service: latency, the groups as `(errorGroup, count)`, commands.
async fn service_groups(jobs: &Jobs) -> Result<(f64, Vec<(String, i64)>, String)> {
    let started = Instant::now();
    let response = jobs
        .http()
        .get(jobs.url(&format!("action=groups&userId={BIG_USER}")))
        .send()
        .await?;
    let status = response.status();
    let commands = commands_of(&response);
    let bytes = response.bytes().await?;
    let elapsed = ms(started);
    ensure!(status.is_success(), "groups answered {status}");
    let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
    let groups = answer["groups"]
        .as_array()
        .context("groups in the answer")?
        .iter()
        .map(|g| {
            (
                g["errorGroup"].as_str().unwrap_or_default().to_owned(),
                g["count"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    Ok((elapsed, groups, commands))
}

/// The bare aggregation, decoded as the service reads it.
async fn floor_groups(tasks: &Collection<Task>) -> Result<(f64, Vec<(String, i64)>)> {
    let started = Instant::now();
    let found: Vec<Document> = tasks
        .aggregate(groups_pipeline())
        .await?
        .try_collect()
        .await?;
    let elapsed = ms(started);
    let groups = found
        .iter()
        .map(|g| {
            let count = g
                .get_i32("count")
                .map(i64::from)
                .or_else(|_| g.get_i64("count"))
                .unwrap_or(-1);
            (g.get_str("_id").unwrap_or_default().to_owned(), count)
        })
        .collect();
    Ok((elapsed, groups))
}

struct GroupsRun {
    service: Vec<f64>,
    floor: Vec<f64>,
    commands: Vec<String>,
    groups: Vec<(String, i64)>,
    cpu_us_per_request: f64,
}

/// `n` `groups` requests and `n` bare aggregations, alternating (and alternating which goes
/// first), after `WARM_UP` unmeasured pairs; both must find the same groups.
async fn groups_run(jobs: &Jobs, tasks: &Collection<Task>, n: usize) -> Result<GroupsRun> {
    let mut run = GroupsRun {
        service: Vec::new(),
        floor: Vec::new(),
        commands: Vec::new(),
        groups: Vec::new(),
        cpu_us_per_request: 0.0,
    };
    let mut cpu_before = 0.0;
    for i in 0..WARM_UP + n {
        if i == WARM_UP {
            cpu_before = jobs.cpu_ms()?;
        }
        let ((s, s_groups, commands), (f, f_groups)) = if i % 2 == 0 {
            let s = service_groups(jobs).await?;
            (s, floor_groups(tasks).await?)
        } else {
            let f = floor_groups(tasks).await?;
            (service_groups(jobs).await?, f)
        };
        ensure!(
            s_groups == f_groups,
            "groups differ: service {s_groups:?}, floor {f_groups:?}"
        );
        run.groups = s_groups;
        if i < WARM_UP {
            continue;
        }
        run.service.push(s);
        run.floor.push(f);
        if !run.commands.contains(&commands) {
            run.commands.push(commands);
        }
    }
    run.cpu_us_per_request = (jobs.cpu_ms()? - cpu_before) * 1000.0 / n as f64;
    Ok(run)
}

/// The check user's failed tasks, all of the retried group's cause.
async fn seed_check_user(tasks: &Collection<Task>) -> Result<()> {
    let payload = payload()?;
    let user = UserId::parse(CHECK_USER).map_err(anyhow::Error::msg)?;
    let now = DateTime::now().timestamp_millis();
    let docs = (0..CHECK_TASKS)
        .map(|i| {
            let created = DateTime::from_millis(now - (CHECK_TASKS - i) as i64 * 1000);
            seeded_task(
                &user,
                TaskStatus::Failed,
                created,
                &payload,
                Some((GROUP_MESSAGE, 0)),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    tasks.insert_many(docs).await?;
    Ok(())
}

/// With the server's profiler on: one `groups` and one bare aggregation; two `retryMany`
/// pages of the check user through the service (the second with its cursor) and two through
/// the floor. The commands each side sent, as the server received them (told apart by
/// `appName`, session fields dropped, times and generated ids masked), compared in order.
/// Report lines, and the service's page `find` (to `explain` exactly that).
async fn same_commands(
    db: &Database,
    jobs: &Jobs,
    group: &str,
) -> Result<(Vec<String>, Option<Document>)> {
    let tasks = db.collection::<Task>("tasks");
    seed_check_user(&tasks).await?;
    if let Err(error) = db.run_command(doc! { "profile": 2 }).await {
        return Ok((
            vec![format!("not checked: `profile` refused ({error})")],
            None,
        ));
    }
    service_groups(jobs).await?;
    floor_groups(&tasks).await?;
    let (_, _, _, cursor, _) = service_page(jobs, CHECK_USER, group, None).await?;
    service_page(jobs, CHECK_USER, group, cursor.as_deref()).await?;
    let user = UserId::parse(CHECK_USER).map_err(anyhow::Error::msg)?;
    let (_, _, _, next) = floor_page(db, &user, group, None).await?;
    floor_page(db, &user, group, next.as_ref()).await?;
    db.run_command(doc! { "profile": 0 }).await?;
    let entries: Vec<Document> = db
        .collection::<Document>("system.profile")
        .find(doc! {})
        .await?
        .try_collect()
        .await?;
    const COMPARED: [&str; 4] = ["find", "update", "aggregate", "getMore"];
    let sent = |app: &str| -> Vec<(String, Document)> {
        entries
            .iter()
            .filter(|entry| entry.get_str("appName").ok() == Some(app))
            .filter_map(|entry| entry.get_document("command").ok())
            .filter_map(|command| {
                let name = command.keys().next()?.clone();
                COMPARED
                    .contains(&name.as_str())
                    .then(|| (name, command.clone()))
            })
            .collect()
    };
    let (service, floor) = (sent(SERVICE_APP), sent(FLOOR_APP));
    let names = |side: &[(String, Document)]| {
        side.iter()
            .map(|(name, _)| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![format!(
        "service sent {}; floor sent {}",
        names(&service),
        names(&floor)
    )];
    if service.is_empty() || floor.is_empty() {
        lines.push("not compared: this server's `system.profile` holds no such entry".into());
        return Ok((lines, None));
    }
    // What a `groups` call and two `retryMany` pages send; a command this server's profiler
    // does not record (on neither side) cannot be compared on the wire.
    for name in ["aggregate", "find", "update"] {
        let seen = |side: &[(String, Document)]| side.iter().any(|(n, _)| n == name);
        if !seen(&service) && !seen(&floor) {
            lines.push(format!(
                "`{name}` is in neither side's entries: this server's `system.profile` does not \
                 record it, so it is not compared on the wire"
            ));
        }
    }
    let mut differ = service.len() != floor.len();
    for ((name, s), (_, f)) in service.iter().zip(&floor) {
        let (s, f) = (
            normalised(&Bson::Document(s.clone())),
            normalised(&Bson::Document(f.clone())),
        );
        if s != f {
            differ = true;
            lines.push(format!(
                "`{name}` DIFFERENT: service `{}`, floor `{}`",
                shortened(&s),
                shortened(&f)
            ));
        }
    }
    if !differ {
        lines.push(format!(
            "all {} identical after masking; as received from the service:",
            service.len()
        ));
        let mut shown = Vec::new();
        for (name, command) in &service {
            let shape = shortened(&normalised(&Bson::Document(command.clone())));
            if !shown.contains(&shape) {
                lines.push(format!("  `{name}`: `{shape}`"));
                shown.push(shape);
            }
        }
    }
    let page_find = service
        .iter()
        .find(|(name, command)| name == "find" && command.contains_key("sort"))
        .map(|(_, command)| {
            command
                .iter()
                .filter(|(key, _)| !key.starts_with('$') && *key != "lsid")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
    Ok((lines, page_find))
}

/// A command as relaxed extended JSON, arrays of many statements or ids cut to their first
/// element and a count.
fn shortened(command: &Bson) -> String {
    fn cut(value: &Bson) -> Bson {
        match value {
            Bson::Document(document) => Bson::Document(
                document
                    .iter()
                    .map(|(key, value)| (key.clone(), cut(value)))
                    .collect(),
            ),
            Bson::Array(values) if values.len() > 3 => Bson::Array(vec![
                cut(&values[0]),
                Bson::from(format!("... {} in all", values.len())),
            ]),
            Bson::Array(values) => Bson::Array(values.iter().map(cut).collect()),
            other => other.clone(),
        }
    }
    cut(command).into_relaxed_extjson().to_string()
}

fn ratio(service: f64, floor: f64) -> String {
    format!("{:.2}", service / floor)
}

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let bulk = bulk_settings();
    let client = floor_client(&settings.mongodb_uri).await?;
    let db = client.database(&format!("{}_bulk", settings.db));
    let tasks = db.collection::<Task>("tasks");
    let user = UserId::parse(BIG_USER).map_err(anyhow::Error::msg)?;

    let built = Instant::now();
    let seed = build(bulk.tasks)?;
    let build_s = built.elapsed().as_secs_f64();
    let group = seed.group.group.clone();
    let in_group = seed.group_ids.len();
    let max_calls = in_group / MAX_BULK + 2;
    let mut seeds = vec![insert(&tasks, &seed).await?];
    eprintln!("bulk: seeded {} tasks in {:.1} s", bulk.tasks, seeds[0]);

    let jobs = Jobs::start(settings, db.name(), sink).await?;

    // 4. groups, on the fresh seed (before any retry moves the group's tasks).
    eprintln!("bulk: groups x {}", bulk.groups_calls);
    let mut groups = groups_run(&jobs, &tasks, bulk.groups_calls).await?;

    // 1. retryMany through the service, on the data seeded again: each of the three runs
    // starts right after the same drop and insert, so none of them inherits the others'
    // writes (or the server's work of dropping them).
    seeds.push(insert(&tasks, &seed).await?);
    eprintln!("bulk: retryMany by errorGroup, service");
    let service = service_run(&jobs, sink, &group, max_calls).await?;
    let service_moved = count(&tasks, &group, TaskStatus::Queued).await?;
    let service_left = count(&tasks, &group, TaskStatus::Failed).await?;

    // 2. The floor, on the same data seeded again.
    seeds.push(insert(&tasks, &seed).await?);
    eprintln!("bulk: retryMany floor");
    let floor = floor_run(&db, &user, &group, max_calls).await?;
    let floor_moved = count(&tasks, &group, TaskStatus::Queued).await?;
    let floor_left = count(&tasks, &group, TaskStatus::Failed).await?;

    // 3. The same tasks, seeded again, one `retry` each.
    seeds.push(insert(&tasks, &seed).await?);
    eprintln!(
        "bulk: {} single retries, {} in flight",
        in_group, bulk.single_concurrency
    );
    let mut singles = single_run(&jobs, sink, &seed.group_ids, bulk.single_concurrency).await?;
    let singles_moved = count(&tasks, &group, TaskStatus::Queued).await?;

    // The commands each side sent, and their plans.
    eprintln!("bulk: profiler check and explain");
    let (same, page_find) = same_commands(&db, &jobs, &group).await?;
    let page_find = page_find.unwrap_or_else(|| {
        doc! {
            "find": "tasks",
            "filter": { "userId": BIG_USER, "status": TaskStatus::Failed, "errorGroup": &group },
            "sort": { "createdAt": -1, "taskId": -1 }, "projection": list_projection(),
            "limit": MAX_BULK as i64 + 1,
        }
    });
    // The same `find` for the user with 100,000 tasks.
    let mut page_find = page_find;
    if let Ok(filter) = page_find.get_document_mut("filter") {
        filter.insert("userId", BIG_USER);
    }
    let find_explain = explain(&db, page_find).await;
    let groups_explain = explain(
        &db,
        doc! { "aggregate": "tasks", "pipeline": groups_pipeline(), "cursor": {} },
    )
    .await;
    jobs.stop();

    // The report.
    println!(
        "Seeded {} tasks for `{BIG_USER}`: {} failed with \"{GROUP_MESSAGE}\" (group `{group}`, \
         template \"{}\", retries left), {} failed for {} other causes (some with their retries \
         used up), {} cancelled, {} completed; {PAYLOAD_BYTES}-byte payloads, `createdAt` \
         {SPREAD_SECONDS} s apart, timelines of 3 events, `errorGroup`/`errorTemplate` from \
         `Cause::of`. Built in {build_s:.1} s; inserted with `insert_many` in batches of \
         {INSERT_BATCH} into the indexed collection four times (before `groups`, before the \
         service's `retryMany`, before its floor, before the single retries): {} s.",
        thousands(bulk.tasks),
        thousands(in_group),
        seed.group.template,
        thousands(seed.other_failed),
        OTHER_MESSAGES.len(),
        thousands(seed.cancelled),
        thousands(seed.completed),
        seeds
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    println!();

    let pages = |run: &Paged| {
        let mut latencies = run.latencies.clone();
        (
            quantile(&mut latencies, 0.5),
            quantile(&mut latencies, 0.99),
        )
    };
    let (s50, s99) = pages(&service);
    let (f50, f99) = pages(&floor);
    let distinct = |v: &[u64]| {
        let mut d: Vec<u64> = v.to_vec();
        d.sort_unstable();
        d.dedup();
        d.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    };
    println!(
        "| `retryMany` by `{{errorGroup}}`, {} tasks | calls | retried | skipped | wall time | per call p50 | per call p99 | MongoDB commands per call | per task | QStash requests per call | publishes per task | service CPU per call |",
        thousands(in_group)
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| service (HTTP, `retryMany` until `nextCursor` is null) | {} | {} | {} | {:.2} s | {s50:.1} ms | {s99:.1} ms | {} | {:.3} | {} | {:.2} ({} batches of {:.0}, {} single) | {:.1} ms |",
        service.latencies.len(),
        thousands(service.retried),
        service.skipped,
        service.wall_s,
        distinct(&service.commands),
        service.commands.iter().sum::<u64>() as f64 / service.retried.max(1) as f64,
        distinct(&service.qstash_per_call),
        service.qstash.messages as f64 / service.retried.max(1) as f64,
        service.qstash.batches,
        service.qstash.messages as f64 / service.qstash.batches.max(1) as f64,
        service.qstash.single,
        service.cpu_ms / service.latencies.len().max(1) as f64,
    );
    println!(
        "| floor (driver: page `find`, one `update` of the page's statements, `find` of the moved) | {} | {} | {} | {:.2} s | {f50:.1} ms | {f99:.1} ms | {} | {:.3} | — | — | — |",
        floor.latencies.len(),
        thousands(floor.retried),
        floor.skipped,
        floor.wall_s,
        distinct(&floor.commands),
        floor.commands.iter().sum::<u64>() as f64 / floor.retried.max(1) as f64,
    );
    println!(
        "| ratio service / floor (target ≤ 1.5) | | | | {} | {} | {} | | | | | |",
        ratio(service.wall_s, floor.wall_s),
        ratio(s50, f50),
        ratio(s99, f99),
    );
    println!();
    println!(
        "After the runs: service {} of the group queued, {} still failed; floor {} queued, {} \
         failed; single retries {} queued. Service time per call beyond the floor at p50: \
         {:+.1} ms; mean {:+.1} ms.",
        thousands(service_moved as usize),
        service_left,
        thousands(floor_moved as usize),
        floor_left,
        thousands(singles_moved as usize),
        s50 - f50,
        (service.wall_s - floor.wall_s) * 1000.0 / service.latencies.len().max(1) as f64,
    );
    println!();

    let n = singles.latencies.len();
    let (r50, r99) = (
        quantile(&mut singles.latencies, 0.5),
        quantile(&mut singles.latencies, 0.99),
    );
    println!(
        "| the same {} tasks as single `retry` calls | concurrency | wall time | p50 | p99 | MongoDB commands per task | QStash requests per task | publishes per task | service CPU per call | failed |",
        thousands(in_group)
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| service (HTTP, one `retry` per task) | {} | {:.2} s | {r50:.1} ms | {r99:.1} ms | {:.2} | {:.2} | {:.2} | {:.2} ms | {} |",
        bulk.single_concurrency,
        singles.wall_s,
        singles.commands as f64 / n.max(1) as f64,
        singles.qstash.requests as f64 / n.max(1) as f64,
        singles.qstash.messages as f64 / n.max(1) as f64,
        singles.cpu_ms / n.max(1) as f64,
        singles.failed,
    );
    println!();
    println!(
        "`retryMany` against single `retry` for the same {} tasks: wall time {:.2} s against \
         {:.2} s ({:.1}x), MongoDB commands {} against {}, QStash requests {} against {}.",
        thousands(in_group),
        service.wall_s,
        singles.wall_s,
        singles.wall_s / service.wall_s,
        service.commands.iter().sum::<u64>(),
        singles.commands,
        service.qstash.requests,
        singles.qstash.requests,
    );
    println!();

    let (g50, g99) = (
        quantile(&mut groups.service, 0.5),
        quantile(&mut groups.service, 0.99),
    );
    let (a50, a99) = (
        quantile(&mut groups.floor, 0.5),
        quantile(&mut groups.floor, 0.99),
    );
    println!(
        "| `groups` over {} tasks (one at a time, service and aggregation alternating) | n | service p50 | service p99 | aggregation p50 | aggregation p99 | p50 ratio | p99 ratio | p50 overhead | service CPU per request | MongoDB commands |",
        thousands(bulk.tasks)
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| `groups` (failed) against the pipeline of `Store::error_groups` | {} | {g50:.2} ms | {g99:.2} ms | {a50:.2} ms | {a99:.2} ms | {} | {} | {:+.2} ms | {:.0} µs | {} |",
        groups.service.len(),
        ratio(g50, a50),
        ratio(g99, a99),
        g50 - a50,
        groups.cpu_us_per_request,
        groups.commands.join(", "),
    );
    println!();
    println!(
        "Groups found (service and aggregation agree on every call): {}.",
        groups
            .groups
            .iter()
            .map(|(g, c)| format!("`{g}` {}", thousands(*c as usize)))
            .collect::<Vec<_>>()
            .join(", ")
    );
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
        let seed = build(2_000).unwrap();
        assert_eq!(seed.group_ids.len(), 200);
        assert_eq!(seed.docs.len(), 2_000);
        assert_eq!(
            seed.group_ids.len() + seed.other_failed + seed.cancelled + seed.completed,
            2_000
        );
        let in_group = |t: &&Task| t.error_group.as_deref() == Some(seed.group.group.as_str());
        assert_eq!(seed.docs.iter().filter(in_group).count(), 200);
        let mut groups: Vec<String> = OTHER_MESSAGES.iter().map(|m| Cause::of(m).group).collect();
        groups.push(seed.group.group.clone());
        groups.sort();
        groups.dedup();
        assert_eq!(
            groups.len(),
            1 + OTHER_MESSAGES.len(),
            "four distinct causes"
        );
        // Newest first, as `retryMany` takes them.
        let created = |id: &TaskId| {
            seed.docs
                .iter()
                .find(|t| &t.task_id == id)
                .unwrap()
                .created_at
        };
        assert!(created(&seed.group_ids[0]) > created(&seed.group_ids[1]));
    }

    #[test]
    fn long_arrays_are_cut() {
        let command = Bson::Document(doc! { "updates": [1, 2, 3, 4, 5], "ordered": false });
        assert_eq!(
            shortened(&command),
            r#"{"updates":[1,"... 5 in all"],"ordered":false}"#
        );
    }
}
