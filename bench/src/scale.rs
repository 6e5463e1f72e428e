//! The scale scenario (`jobs-bench scale`, run by `scripts/bench scale` against secantusd-rs):
//! one user with 100,000 tasks (`bulk`) and one with 20 (`small`), 500-byte payloads,
//! `createdAt` spread over days, a fifth of them failed. Measures, one request at a time,
//! `list` (first page of 20) for both users and `retry` of the big user's failed tasks through
//! the release `jobs` binary over HTTP, each against its floor: the identical query issued
//! directly with the driver. Service and floor requests alternate, so both see the same
//! database and the same machine noise. Also records the list query's shape: the indexes
//! (`listIndexes`) and what `explain` says.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use jobs_core::task::{ErrorEntry, Handoff, Task, TaskId, TaskStatus, UserId};
use jobs_core::transitions::{requeue_filter, requeue_update};
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

use crate::Settings;
use crate::qstash_sink::Sink;
use crate::service::Jobs;
use crate::stats::quantile;

pub(crate) const BIG_USER: &str = "bulk";
const SMALL_USER: &str = "small";
const SMALL_TASKS: usize = 20;
/// Size of each task's `payload` as stored (BSON bytes).
pub(crate) const PAYLOAD_BYTES: usize = 500;
/// One task in this many is `failed` (the retry pool), one in twenty `cancelled`, the rest
/// `completed`.
const FAILED_EVERY: usize = 5;
/// Seconds between two consecutive tasks' `createdAt`.
pub(crate) const SPREAD_SECONDS: i64 = 7;
pub(crate) const INSERT_BATCH: usize = 1_000;
/// Unmeasured requests of each kind before the measured ones (connections, caches).
pub(crate) const WARM_UP: usize = 3;
/// The page size the Task Manager asks for.
const PAGE: i64 = 20;
/// The `appName` the service's MongoDB client sends (`Store::client_options`), and the
/// floor's.
pub(crate) const SERVICE_APP: &str = "jobs";
pub(crate) const FLOOR_APP: &str = "jobs-bench-floor";

struct ScaleSettings {
    tasks: usize,
    requests: usize,
}

fn scale_settings() -> ScaleSettings {
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    ScaleSettings {
        tasks: number("BENCH_SCALE_TASKS", 100_000),
        requests: number("BENCH_SCALE_REQUESTS", 200),
    }
}

/// A payload of exactly `PAYLOAD_BYTES` as BSON, shaped like the `demo` processor's input.
pub(crate) fn payload() -> Result<Document> {
    let mut payload = doc! { "steps": 1, "stepMs": 0, "note": "" };
    let mut bytes = Vec::new();
    payload.to_writer(&mut bytes)?;
    let padding = PAYLOAD_BYTES
        .checked_sub(bytes.len())
        .context("payload overhead above PAYLOAD_BYTES")?;
    payload.insert("note", "x".repeat(padding));
    bytes.clear();
    payload.to_writer(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() == PAYLOAD_BYTES,
        "payload is {} bytes",
        bytes.len()
    );
    Ok(payload)
}

/// A task as the service stores it (`Task::new`, as `create` inserts it), moved on to the
/// state it would have after one run ending in `status`, created at `created`.
pub(crate) fn task(
    user: &UserId,
    status: TaskStatus,
    created: DateTime,
    payload: &Document,
) -> Task {
    let mut task = Task::new(user.clone(), None, "demo".into(), payload.clone(), 3);
    let finished = DateTime::from_millis(created.timestamp_millis() + 1_500);
    task.created_at = created;
    task.handoff = Some(Handoff::new(&task.task_id, created, false));
    task.status = status;
    task.attempts = 1;
    task.started_at = Some(DateTime::from_millis(created.timestamp_millis() + 50));
    task.finished_at = Some(finished);
    task.updated_at = finished;
    match status {
        TaskStatus::Failed => {
            let message = "Simulated failure on attempt 1".to_owned();
            // From its stored form, so fields added to `ErrorEntry` later take their defaults.
            let entry: ErrorEntry =
                bson::from_document(doc! { "attempt": 1, "message": &message, "at": finished })
                    .expect("an error entry");
            task.last_error = Some(message);
            task.error_history = vec![entry];
        }
        TaskStatus::Completed => {
            task.progress = 100;
            task.result = Some(doc! { "steps": 1 });
        }
        _ => {}
    }
    task
}

struct Seeded {
    /// The big user's failed tasks, oldest first.
    failed: Vec<TaskId>,
    seconds: f64,
}

/// `count` tasks for `bulk` and 20 for `small`, inserted in batches with `insert_many` into a
/// collection that already has the service's indexes (as in production).
async fn seed(tasks: &Collection<Task>, count: usize) -> Result<Seeded> {
    let started = Instant::now();
    tasks
        .create_indexes(jobs_core::store::task_indexes())
        .await?;
    let payload = payload()?;
    let (big, small) = (
        UserId::parse(BIG_USER).map_err(anyhow::Error::msg)?,
        UserId::parse(SMALL_USER).map_err(anyhow::Error::msg)?,
    );
    let now = DateTime::now().timestamp_millis();
    let at =
        |i: usize, of: usize| DateTime::from_millis(now - (of - i) as i64 * SPREAD_SECONDS * 1000);
    let mut failed = Vec::new();
    let mut batch = Vec::with_capacity(INSERT_BATCH);
    for i in 0..count {
        let status = if i % FAILED_EVERY == 0 {
            TaskStatus::Failed
        } else if i % 20 == 1 {
            TaskStatus::Cancelled
        } else {
            TaskStatus::Completed
        };
        let task = task(&big, status, at(i, count), &payload);
        if status == TaskStatus::Failed {
            failed.push(task.task_id.clone());
        }
        batch.push(task);
        if batch.len() == INSERT_BATCH || i + 1 == count {
            tasks.insert_many(std::mem::take(&mut batch)).await?;
            if (i + 1) % 20_000 == 0 {
                eprintln!(
                    "scale: seeded {} tasks in {:.1} s",
                    i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    tasks
        .insert_many((0..SMALL_TASKS).map(|i| {
            let status = if i % FAILED_EVERY == 0 {
                TaskStatus::Failed
            } else {
                TaskStatus::Completed
            };
            task(&small, status, at(i, SMALL_TASKS), &payload)
        }))
        .await?;
    Ok(Seeded {
        failed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Latencies of one measured request kind, service and floor.
#[derive(Default)]
struct Samples {
    service: Vec<f64>,
    floor: Vec<f64>,
    errors: (usize, usize),
    /// `x-jobs-db-commands` of the service's answers, as seen (normally one value).
    commands: Vec<String>,
    cpu_us_per_request: f64,
}

/// `100000` as `100,000`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub(crate) fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

pub(crate) fn commands_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-jobs-db-commands")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

/// The first page of `user`'s tasks through the service: latency, whether it was a full page,
/// and the MongoDB commands it took.
async fn service_list(jobs: &Jobs, user: &str) -> Result<(f64, bool, String)> {
    let started = Instant::now();
    let response = jobs
        .http()
        .get(jobs.url(&format!("action=list&userId={user}&limit={PAGE}")))
        .send()
        .await?;
    let status = response.status();
    let commands = commands_of(&response);
    let body = response.bytes().await?;
    let elapsed = ms(started);
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    let full = status.is_success()
        && body["tasks"].as_array().map(Vec::len) == Some(PAGE as usize)
        && body["tasks"][0].get("payload").is_none();
    Ok((elapsed, full, commands))
}

/// What `Store::list_for` leaves out of a page (the run checks it against the service's own
/// `find`, see [`same_queries`]).
pub fn list_projection() -> Document {
    doc! { "payload": 0, "events": 0 }
}

/// Exactly the `find` `Store::list_for` sends for a first page, decoded into the same type.
async fn floor_list(tasks: &Collection<Task>, user: &str) -> Result<(f64, bool)> {
    let started = Instant::now();
    let find = tasks
        .find(doc! { "userId": user })
        .sort(doc! { "createdAt": -1, "taskId": -1 })
        .projection(list_projection())
        .limit(PAGE + 1)
        .batch_size(PAGE as u32 + 1);
    let page: Vec<Task> = find.await?.try_collect().await?;
    // A full page, plus the one task that says another page follows when there is one.
    Ok((ms(started), page.len() >= PAGE as usize))
}

async fn service_retry(jobs: &Jobs, task_id: &TaskId) -> Result<(f64, bool, String)> {
    let started = Instant::now();
    let response = jobs
        .http()
        .post(jobs.url("action=retry"))
        .json(&serde_json::json!({ "taskId": task_id.as_str(), "userId": BIG_USER }))
        .send()
        .await?;
    let status = response.status();
    let commands = commands_of(&response);
    let _ = response.bytes().await?;
    Ok((ms(started), status.is_success(), commands))
}

/// Exactly the guarded reset `requeue_for_retry` sends.
async fn floor_retry(tasks: &Collection<Task>, task_id: &TaskId) -> Result<(f64, bool)> {
    let user = UserId::parse(BIG_USER).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let before = tasks
        .find_one_and_update(
            requeue_filter(task_id, &user),
            requeue_update(
                &Handoff::new(task_id, DateTime::now(), true),
                &format!("user:{user}"),
            ),
        )
        .return_document(ReturnDocument::Before)
        .await?;
    Ok((ms(started), before.is_some()))
}

enum Kind<'a> {
    List(&'a str),
    /// Fresh failed tasks: `(service's, floor's)` for each measured pair.
    Retry(&'a [(TaskId, TaskId)]),
}

/// `n` service requests and `n` floor queries, alternating (and alternating which goes first),
/// after `WARM_UP` unmeasured pairs.
async fn measure(
    jobs: &Jobs,
    tasks: &Collection<Task>,
    kind: Kind<'_>,
    n: usize,
) -> Result<Samples> {
    let mut samples = Samples::default();
    let mut cpu_before = 0.0;
    for i in 0..WARM_UP + n {
        if i == WARM_UP {
            cpu_before = jobs.cpu_ms()?;
        }
        let service = async || match &kind {
            Kind::List(user) => service_list(jobs, user).await,
            Kind::Retry(ids) => service_retry(jobs, &ids[i].0).await,
        };
        let floor = async || match &kind {
            Kind::List(user) => floor_list(tasks, user).await,
            Kind::Retry(ids) => floor_retry(tasks, &ids[i].1).await,
        };
        let ((s, s_ok, commands), (f, f_ok)) = if i % 2 == 0 {
            let s = service().await?;
            (s, floor().await?)
        } else {
            let f = floor().await?;
            (service().await?, f)
        };
        if i < WARM_UP {
            continue;
        }
        samples.service.push(s);
        samples.floor.push(f);
        samples.errors.0 += usize::from(!s_ok);
        samples.errors.1 += usize::from(!f_ok);
        if !samples.commands.contains(&commands) {
            samples.commands.push(commands);
        }
    }
    samples.cpu_us_per_request = (jobs.cpu_ms()? - cpu_before) * 1000.0 / n as f64;
    Ok(samples)
}

/// A command as the server's profiler recorded it, without what differs between two clients
/// or two requests: session and routing fields are dropped, times become `<date>` and
/// generated ids (task ids, hand-off ids) `<id>`.
pub(crate) fn normalised(value: &Bson) -> Bson {
    const SESSION: [&str; 6] = [
        "lsid",
        "$db",
        "$clusterTime",
        "$readPreference",
        "txnNumber",
        "comment",
    ];
    match value {
        Bson::Document(document) => Bson::Document(
            document
                .iter()
                .filter(|(key, _)| !SESSION.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), normalised(value)))
                .collect(),
        ),
        Bson::Array(values) => Bson::Array(values.iter().map(normalised).collect()),
        Bson::DateTime(_) => Bson::from("<date>"),
        Bson::String(text) if text.len() >= 36 && uuid::Uuid::parse_str(&text[..36]).is_ok() => {
            Bson::from("<id>")
        }
        other => other.clone(),
    }
}

/// One `list` and one `retry` through the service and the same through the floor, with the
/// server's profiler on: the `find` and the `findAndModify` each side sent, as the server
/// received them (told apart by `appName`). Returns a report line per command, and the
/// service's `find` (to `explain` exactly that).
async fn same_queries(
    db: &Database,
    jobs: &Jobs,
    tasks: &Collection<Task>,
    (service_id, floor_id): &(TaskId, TaskId),
) -> Result<(Vec<String>, Option<Document>)> {
    if let Err(error) = db.run_command(doc! { "profile": 2 }).await {
        return Ok((
            vec![format!("not checked: `profile` refused ({error})")],
            None,
        ));
    }
    service_list(jobs, BIG_USER).await?;
    floor_list(tasks, BIG_USER).await?;
    service_retry(jobs, service_id).await?;
    floor_retry(tasks, floor_id).await?;
    db.run_command(doc! { "profile": 0 }).await?;
    let entries: Vec<Document> = db
        .collection::<Document>("system.profile")
        .find(doc! { "ns": format!("{}.tasks", db.name()) })
        .await?
        .try_collect()
        .await?;
    let sent = |app: &str, name: &str| {
        entries
            .iter()
            .filter(|entry| entry.get_str("appName").ok() == Some(app))
            .filter_map(|entry| entry.get_document("command").ok())
            .find(|command| command.keys().next().map(String::as_str) == Some(name))
            .cloned()
    };
    let mut lines = Vec::new();
    for name in ["find", "findAndModify"] {
        let (service, floor) = (sent(SERVICE_APP, name), sent(FLOOR_APP, name));
        lines.push(match (&service, &floor) {
            (Some(service), Some(floor)) => {
                let (service, floor) = (
                    normalised(&Bson::Document(service.clone())),
                    normalised(&Bson::Document(floor.clone())),
                );
                if service == floor {
                    format!("`{name}`: identical, `{}`", service.into_relaxed_extjson())
                } else {
                    format!(
                        "`{name}`: DIFFERENT: service `{}`, floor `{}`",
                        service.into_relaxed_extjson(),
                        floor.into_relaxed_extjson()
                    )
                }
            }
            _ => format!(
                "`{name}`: not checked, this server's `system.profile` does not hold it \
                 (service's found: {}, floor's found: {})",
                service.is_some(),
                floor.is_some()
            ),
        });
    }
    let service_find = sent(SERVICE_APP, "find").map(|command| {
        command
            .into_iter()
            .filter(|(key, _)| !key.starts_with('$') && key != "lsid")
            .collect()
    });
    Ok((lines, service_find))
}

/// `listIndexes` of `tasks`: one line per index, and whether the list query's index is there.
async fn indexes(tasks: &Collection<Task>) -> Result<(Vec<String>, bool)> {
    let wanted = doc! { "userId": 1, "createdAt": -1, "taskId": -1 };
    let mut lines = Vec::new();
    let mut found = false;
    let mut cursor = tasks.list_indexes().await?;
    while let Some(index) = cursor.try_next().await? {
        // Key order matters, and a server may return the directions as int32, int64 or double.
        let number = |value: &Bson| match value {
            Bson::Int32(n) => Some(f64::from(*n)),
            Bson::Int64(n) => Some(*n as f64),
            Bson::Double(n) => Some(*n),
            _ => None,
        };
        let same_keys = index.keys.len() == wanted.len()
            && index
                .keys
                .iter()
                .zip(wanted.iter())
                .all(|((k, v), (wk, wv))| k == wk && number(v) == number(wv));
        found |= same_keys;
        let options = index.options.unwrap_or_default();
        lines.push(format!(
            "`{}` {}{}",
            options.name.unwrap_or_default(),
            Bson::Document(index.keys).into_relaxed_extjson(),
            if options.unique == Some(true) {
                " unique"
            } else {
                ""
            }
        ));
    }
    Ok((lines, found))
}

/// The stages of an explain plan, outermost first, with the index each one uses.
fn stages(plan: &Document, into: &mut Vec<String>) {
    if let Ok(stage) = plan.get_str("stage") {
        match plan.get_str("indexName") {
            Ok(index) => into.push(format!("{stage}({index})")),
            Err(_) => into.push(stage.to_owned()),
        }
    }
    for key in ["inputStage", "queryPlan"] {
        if let Ok(inner) = plan.get_document(key) {
            stages(inner, into);
        }
    }
    if let Ok(inputs) = plan.get_array("inputStages") {
        for inner in inputs.iter().filter_map(Bson::as_document) {
            stages(inner, into);
        }
    }
}

/// What the server says about `command` under `explain`: the winning plan's stages and the
/// execution counters it reports, or its refusal, and the raw answer (shortened).
pub(crate) async fn explain(db: &Database, command: Document) -> String {
    let answer = db
        .run_command(doc! { "explain": command, "verbosity": "executionStats" })
        .await;
    match answer {
        Ok(answer) => describe(answer),
        Err(error) => format!("refused: {error}"),
    }
}

/// An `explain` answer in one line: the winning plan's stages, the execution counters, and
/// the raw answer (shortened).
fn describe(answer: Document) -> String {
    // An aggregation's answer holds the query's plan in its first stage, `$cursor`.
    let query = answer
        .get_array("stages")
        .ok()
        .and_then(|stages| stages.first())
        .and_then(Bson::as_document)
        .and_then(|first| first.get_document("$cursor").ok())
        .filter(|_| !answer.contains_key("queryPlanner"))
        .unwrap_or(&answer);
    let mut plan = Vec::new();
    if let Ok(winning) = query
        .get_document("queryPlanner")
        .and_then(|q| q.get_document("winningPlan"))
    {
        stages(winning, &mut plan);
    }
    let mut counters = Vec::new();
    if let Ok(stats) = query.get_document("executionStats") {
        for key in [
            "nReturned",
            "totalKeysExamined",
            "totalDocsExamined",
            "executionTimeMillis",
        ] {
            if let Some(value) = stats.get(key) {
                counters.push(format!("{key} {value}"));
            }
        }
    }
    let mut raw = Bson::Document(answer).into_relaxed_extjson().to_string();
    if raw.len() > 700 {
        let cut = (0..=700)
            .rev()
            .find(|&i| raw.is_char_boundary(i))
            .unwrap_or(0);
        raw.truncate(cut);
        raw.push_str("...");
    }
    format!(
        "plan {}; {}; raw: `{raw}`",
        if plan.is_empty() {
            "(no winningPlan stages)".to_owned()
        } else {
            plan.join(" <- ")
        },
        if counters.is_empty() {
            "no executionStats".to_owned()
        } else {
            counters.join(", ")
        }
    )
}

fn row(what: &str, samples: &mut Samples) -> String {
    let (s50, s99) = (
        quantile(&mut samples.service, 0.5),
        quantile(&mut samples.service, 0.99),
    );
    let (f50, f99) = (
        quantile(&mut samples.floor, 0.5),
        quantile(&mut samples.floor, 0.99),
    );
    format!(
        "| {what} | {} | {s50:.2} ms | {s99:.2} ms | {f50:.2} ms | {f99:.2} ms | {:.2} | {:.2} | {:+.2} ms | {:.0} µs | {} | {} / {} |",
        samples.service.len(),
        s50 / f50,
        s99 / f99,
        s50 - f50,
        samples.cpu_us_per_request,
        samples.commands.join(", "),
        samples.errors.0,
        samples.errors.1,
    )
}

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let scale = scale_settings();
    // The floor writes with the write concern the service uses (journaled, majority), and
    // names itself so that the profiler tells its commands from the service's.
    let client = mongodb::Client::with_uri_str(format!(
        "{}/?w=majority&journal=true&appName={FLOOR_APP}",
        settings.mongodb_uri
    ))
    .await?;
    let db = client.database(&format!("{}_scale", settings.db));
    let tasks = db.collection::<Task>("tasks");
    let seeded = seed(&tasks, scale.tasks).await?;
    eprintln!("scale: seeded in {:.1} s", seeded.seconds);

    // Fresh failed tasks spread over the whole collection, alternately the service's and the
    // floor's, so both act on the same kind of document at the same positions.
    // The newest failed task is kept out of the pool for `explain`.
    let (explained, pool) = seeded.failed.split_last().context("no failed task")?;
    // Two pairs beyond the measured ones: one for the same-query check.
    let needed = 2 * (WARM_UP + scale.requests + 1);
    if pool.len() < needed {
        bail!(
            "{} failed tasks for {} retries: raise BENCH_SCALE_TASKS",
            pool.len(),
            needed
        );
    }
    let picked: Vec<&TaskId> = pool
        .iter()
        .step_by(pool.len() / needed)
        .take(needed)
        .collect();
    let mut retry_pairs: Vec<(TaskId, TaskId)> = picked
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    let check_pair = retry_pairs.pop().context("no retry pair")?;

    let (index_lines, has_list_index) = indexes(&tasks).await?;
    let jobs = Jobs::start(settings, db.name(), sink).await?;
    let (same, service_find) = same_queries(&db, &jobs, &tasks, &check_pair).await?;
    let list_command = service_find.unwrap_or_else(|| {
        doc! {
            "find": "tasks", "filter": { "userId": BIG_USER },
            "sort": { "createdAt": -1, "taskId": -1 }, "projection": list_projection(),
            "limit": PAGE + 1, "batchSize": PAGE as i32 + 1,
        }
    });
    let list_explain = explain(&db, list_command).await;
    let owner = UserId::parse(BIG_USER).map_err(anyhow::Error::msg)?;
    let retry_explain = explain(
        &db,
        doc! {
            "findAndModify": "tasks",
            "query": requeue_filter(explained, &owner),
            "update": requeue_update(
                &Handoff::new(explained, DateTime::now(), true),
                &format!("user:{owner}"),
            ),
        },
    )
    .await;

    let n = scale.requests;
    eprintln!("scale: list {BIG_USER}");
    let mut list_big = measure(&jobs, &tasks, Kind::List(BIG_USER), n).await?;
    eprintln!("scale: list {SMALL_USER}");
    let mut list_small = measure(&jobs, &tasks, Kind::List(SMALL_USER), n).await?;
    eprintln!("scale: retry {BIG_USER}");
    let mut retry = measure(&jobs, &tasks, Kind::Retry(&retry_pairs), n).await?;
    jobs.stop();

    println!(
        "Seeded {} tasks for `{BIG_USER}` ({} failed) and {SMALL_TASKS} for `{SMALL_USER}`, \
         {PAYLOAD_BYTES}-byte payloads, `createdAt` {SPREAD_SECONDS} s apart, with `insert_many` \
         in batches of {INSERT_BATCH} into the indexed collection: {:.1} s.",
        thousands(scale.tasks),
        thousands(seeded.failed.len()),
        seeded.seconds
    );
    println!();
    println!(
        "| request (one at a time, service and floor alternating) | n | service p50 | service p99 | floor p50 | floor p99 | p50 ratio | p99 ratio | p50 overhead | service CPU per request | MongoDB commands | failed (service / floor) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "{}",
        row(
            &format!(
                "`list` `{BIG_USER}` ({} tasks), first page of {PAGE}",
                thousands(scale.tasks)
            ),
            &mut list_big
        )
    );
    println!(
        "{}",
        row(
            &format!("`list` `{SMALL_USER}` ({SMALL_TASKS} tasks), first page of {PAGE}"),
            &mut list_small
        )
    );
    println!(
        "{}",
        row(
            &format!("`retry` `{BIG_USER}` (a fresh failed task each)"),
            &mut retry
        )
    );
    println!();
    println!(
        "Indexes (`listIndexes`): {}. The list query's index `{{userId: 1, createdAt: -1, taskId: -1}}`: {}.",
        index_lines.join("; "),
        if has_list_index { "present" } else { "MISSING" }
    );
    println!();
    println!(
        "The commands as the server received them, service against floor (one `list` and one \
         `retry` each with the server's profiler on; times shown as `<date>`, generated ids as \
         `<id>`):"
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
    println!("`explain` (executionStats) of the retry `findAndModify`: {retry_explain}");
    db.drop().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exactly_its_size_and_numbers_read_well() {
        let mut bytes = Vec::new();
        payload().unwrap().to_writer(&mut bytes).unwrap();
        assert_eq!(bytes.len(), PAYLOAD_BYTES);
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(20), "20");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn explain_reads_a_find_and_an_aggregation() {
        let plan = doc! { "stage": "FETCH", "inputStage": { "stage": "IXSCAN", "indexName": "i" } };
        let find = doc! {
            "queryPlanner": { "winningPlan": plan.clone() },
            "executionStats": { "nReturned": 2 },
        };
        let aggregate = doc! { "stages": [ { "$cursor": find.clone() }, { "$group": {} } ] };
        for answer in [find, aggregate] {
            let line = describe(answer);
            assert!(
                line.starts_with("plan FETCH <- IXSCAN(i); nReturned 2;"),
                "{line}"
            );
        }
    }
}
