//! A crash at every step (docs/spec.md §11, "A crash at every step"): every crash point of
//! `jobs_core::failpoints::ALL`, armed once in a `jobs` process A, in both modes: `kill` (the
//! process dies right after the step) and `error` (the step took effect but its answer is
//! lost). A hands off to a second process B on the same database (as another function instance
//! would), and B is the rescuer: its `sweep` runs every 300 ms, and a failure callback QStash
//! would repeat is repeated to B. After each row: every task is settled (nothing left `queued`
//! or `scheduled` past the rescue window), legal, never had two runs in flight, and its
//! `retryCount` counts exactly the retries that answered 200 (plus, when the process died
//! before answering, at most the one that took effect and ran); and, once any answer of
//! `groups` kept before the step is `JOBS_GROUPS_CACHE_SECONDS` (1 s) old, B's `groups` counts
//! exactly the failed tasks. Only the retry rows keep one before the step (B asks `groups`
//! first), so only they exercise that bound: the `failed.changed` kill row is the crash
//! between a write and its note (§14). That every transition notes its change is pinned by the
//! transition table test, not here.

use std::time::{Duration, Instant};

use base64::Engine;
use jobs_core::task::{AutoRetry, Backoff, EventKind, Task, TaskStatus};
use jobs_core::testing::{self, task};
use mongodb::bson::doc;
use serde_json::{Value, json};

use crate::support::{Reply, Service, closed_port, db_uri, free_port};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Kill,
    Error,
}

/// What a row does to reach its crash point.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `create` on A; `handoff_fails`: A's hand-offs go to a closed port.
    Create { handoff_fails: bool },
    /// `create` with an `Idempotency-Key` on A; the client sends it again to B when no 2xx
    /// came back, as a client of an idempotent API does.
    CreateWithKey,
    /// `retry` of a failed task on A.
    Retry { handoff_fails: bool },
    /// `retryMany` of three failed tasks on A.
    RetryMany,
    /// A delivery of a queued task to A's `process`; `fails_once`: the run fails and has an
    /// automatic retry left.
    Process { fails_once: bool },
    /// `sweep` on A over a queued task whose hand-off is stale.
    SweepStale,
    /// `sweep` on A over a task whose worker was lost.
    SweepLost,
    /// QStash's failure callback about a queued task, to A.
    DeliveryFailed,
}

fn step_of(point: &str) -> Step {
    match point {
        "create.key_admitted" => Step::CreateWithKey,
        "create.inserted" | "create.handed_off" => Step::Create {
            handoff_fails: false,
        },
        "create.failed_unqueued" => Step::Create {
            handoff_fails: true,
        },
        "retry.requeued" | "retry.handed_off" | "failed.changed" => Step::Retry {
            handoff_fails: false,
        },
        "retry.restored" => Step::Retry {
            handoff_fails: true,
        },
        "retry_many.requeued" | "retry_many.read_back" | "retry_many.handed_off" => Step::RetryMany,
        "process.claimed" | "worker.ran" | "worker.recorded" => Step::Process { fails_once: false },
        "worker.scheduled" => Step::Process { fails_once: true },
        "sweep.marked" | "sweep.handed_off" => Step::SweepStale,
        "sweep.failed_lost" => Step::SweepLost,
        "delivery_failed.failed" => Step::DeliveryFailed,
        other => panic!("crash point {other} has no row: add one to crash_points.rs"),
    }
}

/// Short enough that each rescue happens within the row's window.
const TIMING: [(&str, &str); 5] = [
    ("JOBS_LEASE_SECONDS", "1"),
    ("JOBS_GROUPS_CACHE_SECONDS", "1"),
    ("JOBS_REDISPATCH_SECONDS", "1"),
    ("JOBS_QUEUE_TIMEOUT_SECONDS", "2"),
    ("RUST_LOG", "info,mongodb=warn"),
];
/// How long after the step every task must be settled.
const RESCUE_WINDOW: Duration = Duration::from_secs(12);

struct Outcome {
    point: &'static str,
    mode: Mode,
    answer: Option<Reply>,
    tasks: Vec<Task>,
    retried_with_200: Vec<String>,
    seeded_retry_count: i32,
}

async fn run_row(point: &'static str, mode: Mode) -> Outcome {
    let step = step_of(point);
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    let store = testing::store_on(&db_uri(), &db);
    let client = mongodb::Client::with_uri_str(db_uri()).await.unwrap();
    let collection = client.database(&db).collection::<Task>("tasks");
    let (port_a, port_b) = (free_port(), free_port());
    let b_base = format!("http://127.0.0.1:{port_b}");
    let rescuer = Service::start_on(port_b, db.clone(), &TIMING).await;
    let handoff_to = match step {
        Step::Create {
            handoff_fails: true,
        }
        | Step::Retry {
            handoff_fails: true,
        } => format!("http://127.0.0.1:{}", closed_port()),
        _ => b_base.clone(),
    };
    let action = match mode {
        Mode::Kill => "kill",
        Mode::Error => "error",
    };
    let armed = format!("{point}=1*return({action})");
    let mut env: Vec<(&str, &str)> = TIMING.to_vec();
    env.extend([
        ("FAILPOINTS", armed.as_str()),
        ("JOBS_PUBLIC_URL", handoff_to.as_str()),
    ]);
    let mut a = Service::start_on(port_a, db.clone(), &env).await;

    let failed = || {
        task()
            .status(TaskStatus::Failed)
            .kind("demo", doc! { "steps": 2, "stepMs": 50 })
    };
    let mut seeded_retry_count = 0;
    let mut retried_with_200 = Vec::new();
    let answer = match step {
        Step::Create { .. } => {
            let body = json!({ "type": "demo", "userId": "alice",
                               "payload": { "steps": 2, "stepMs": 50 } });
            try_post(&a, "create", body).await
        }
        Step::CreateWithKey => {
            let body = json!({ "type": "demo", "userId": "alice", "idempotencyKey": "click-1",
                               "payload": { "steps": 2, "stepMs": 50 } });
            let reply = try_post(&a, "create", body.clone()).await;
            if reply.as_ref().is_none_or(|r| r.status >= 300) {
                let again = rescuer.post("create", body).await;
                assert!(
                    [200, 201].contains(&again.status),
                    "{point}: the same key again: {}",
                    again.body
                );
            }
            reply
        }
        Step::Retry { .. } => {
            let seed = failed().insert(&store).await;
            seeded_retry_count = seed.retry_count;
            // The kept answer of `groups` counts it, before the retry moves it.
            let groups = rescuer.get("action=groups&userId=alice").await;
            assert_eq!(groups_total(&groups.body), 1, "{point}: {}", groups.body);
            let body = json!({ "taskId": seed.task_id, "userId": "alice" });
            let reply = try_post(&a, "retry", body).await;
            if reply.as_ref().is_some_and(|r| r.status == 200) {
                retried_with_200.push(seed.task_id.to_string());
            }
            reply
        }
        Step::RetryMany => {
            let mut ids = Vec::new();
            for _ in 0..3 {
                ids.push(failed().insert(&store).await.task_id.to_string());
            }
            let body = json!({ "taskIds": ids, "userId": "alice" });
            let reply = try_post(&a, "retryMany", body).await;
            if let Some(reply) = reply.as_ref().filter(|r| r.status == 200) {
                let retried = reply.body["retried"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                retried_with_200
                    .extend(retried.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
            reply
        }
        Step::Process { fails_once } => {
            let seed = match fails_once {
                false => task().kind("demo", doc! { "steps": 2, "stepMs": 50 }),
                true => task()
                    .kind("demo", doc! { "steps": 1, "stepMs": 0, "failAttempts": 1 })
                    .auto_retry(
                        AutoRetry {
                            attempts: 1,
                            delay_seconds: 1,
                            backoff: Backoff::Fixed,
                            max_delay_seconds: 1,
                        },
                        0,
                    ),
            }
            .insert(&store)
            .await;
            let handoff = seed.handoff.clone().expect("a queued task has a hand-off");
            let body = json!({ "taskId": seed.task_id, "handoffId": handoff.dedup_id,
                               "isSelfInvoke": true });
            try_post(&a, "process", body).await
        }
        Step::SweepStale => {
            task()
                .kind("demo", doc! { "steps": 2, "stepMs": 50 })
                .updated_secs_ago(5)
                .insert(&store)
                .await;
            try_send(&a, reqwest::Method::GET, "sweep", None).await
        }
        Step::SweepLost => {
            task()
                .status(TaskStatus::Processing)
                .lease_expired_secs_ago(5)
                .insert(&store)
                .await;
            try_send(&a, reqwest::Method::GET, "sweep", None).await
        }
        Step::DeliveryFailed => {
            let seed = task().insert(&store).await;
            let handoff = seed.handoff.clone().expect("a queued task has a hand-off");
            let source = json!({ "taskId": seed.task_id, "handoffId": handoff.dedup_id });
            let body = failure_callback(&source);
            let reply = try_post(&a, "deliveryFailed", body.clone()).await;
            if reply.as_ref().is_none_or(|r| r.status != 200) {
                // QStash calls a failure callback again until it answers 2xx.
                let again = rescuer.post("deliveryFailed", body).await;
                assert_eq!(again.status, 200, "{point}: callback again: {}", again.body);
            }
            reply
        }
    };
    if mode == Mode::Kill {
        // The worker's points come after the 202: wait for the process to die there.
        let deadline = Instant::now() + Duration::from_secs(10);
        while try_send(&a, reqwest::Method::GET, "health", None)
            .await
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "{point}: never reached\n{}",
                a.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.kill();
    }

    // The rescuer: sweep until every task has settled.
    let deadline = Instant::now() + RESCUE_WINDOW;
    let tasks = loop {
        let tasks = stored_tasks(&collection).await;
        let unsettled = tasks.iter().any(|t| {
            matches!(
                t.status,
                TaskStatus::Queued | TaskStatus::Scheduled | TaskStatus::Processing
            )
        });
        if !unsettled && !tasks.is_empty() {
            break tasks;
        }
        if tasks.is_empty() && answer.as_ref().is_some_and(|r| r.status >= 400) {
            break tasks; // refused before anything was stored
        }
        assert!(
            Instant::now() < deadline,
            "{point} ({mode:?}): left unsettled past the rescue window: {tasks:#?}\nA:\n{}\nB:\n{}",
            a.logs(),
            rescuer.logs()
        );
        rescuer.get("action=sweep").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let a_logs = a.logs();
    drop(a);
    // A change whose note was lost with the process shows once the kept answer is
    // JOBS_GROUPS_CACHE_SECONDS (1 s here) old: `groups` then counts exactly the failed tasks.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let groups = rescuer.get("action=groups&userId=alice").await;
    let failed = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .count();
    if groups_total(&groups.body) != failed as i64 {
        let diagnosis = diagnose_groups(&client.database(&db)).await;
        panic!(
            "{point} ({mode:?}): groups {} against {failed} failed\n{diagnosis}\nA:\n{}\nB:\n{}",
            groups.body,
            a_logs,
            rescuer.logs()
        );
    }
    Outcome {
        point,
        mode,
        answer,
        tasks,
        retried_with_200,
        seeded_retry_count,
    }
}

/// What the database holds when `groups` disagreed with the tasks: the tasks' fields that
/// `groups` reads, the kept summary, and the same question asked directly, twice.
async fn diagnose_groups(db: &mongodb::Database) -> String {
    let raw = db.collection::<mongodb::bson::Document>("tasks");
    let all = |c: mongodb::Collection<mongodb::bson::Document>, filter| async move {
        let found = c.find(filter).await.unwrap();
        let found: Vec<_> = futures_util::TryStreamExt::try_collect(found)
            .await
            .unwrap();
        found
    };
    let fields = |d: &mongodb::bson::Document| {
        ["taskId", "userId", "status", "errorGroup", "updatedAt"]
            .map(|k| format!("{k}={:?}", d.get(k)))
            .join(" ")
    };
    let tasks: Vec<String> = all(raw.clone(), doc! {}).await.iter().map(fields).collect();
    let failed = doc! { "userId": "alice", "status": "failed" };
    let matched = all(raw.clone(), failed.clone()).await.len();
    let pipeline = [doc! { "$match": failed.clone() }, doc! { "$count": "n" }];
    let aggregated: Vec<_> =
        futures_util::TryStreamExt::try_collect(raw.aggregate(pipeline).await.unwrap())
            .await
            .unwrap();
    let summaries = all(db.collection("failureGroups"), doc! {}).await;
    format!(
        "tasks: {tasks:#?}\nfind(failed) now: {matched}\naggregate(failed) now: {aggregated:?}\nfailureGroups: {summaries:?}"
    )
}

/// How many tasks `groups` counts, all groups together.
fn groups_total(body: &Value) -> i64 {
    let groups = body["groups"].as_array().expect("groups");
    groups.iter().map(|g| g["count"].as_i64().unwrap()).sum()
}

/// A POST that may find the process dead: `None` when no answer came.
async fn try_post(service: &Service, action: &str, body: Value) -> Option<Reply> {
    try_send(service, reqwest::Method::POST, action, Some(body)).await
}

async fn try_send(
    service: &Service,
    method: reqwest::Method,
    action: &str,
    body: Option<Value>,
) -> Option<Reply> {
    let mut request = service
        .request(method, &format!("action={action}"))
        .timeout(Duration::from_secs(20));
    if let Some(body) = body {
        request = request.json(&body);
    }
    Some(Reply::read(request.send().await.ok()?).await)
}

/// QStash's failure-callback body for a `process` message whose body was `source`.
fn failure_callback(source: &Value) -> Value {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({
        "status": 500, "header": {}, "body": encode(b"boom"), "retried": 3, "maxRetries": 3,
        "sourceMessageId": "msg_1", "url": "http://example.invalid", "method": "POST",
        "sourceHeader": {}, "sourceBody": encode(source.to_string().as_bytes()),
        "createdAt": 0,
    })
}

/// Every task of the row's database, as the service reads them.
async fn stored_tasks(tasks: &mongodb::Collection<Task>) -> Vec<Task> {
    let found = tasks.find(doc! {}).await.unwrap();
    futures_util::TryStreamExt::try_collect(found)
        .await
        .unwrap()
}

/// Between a `claimed` event and the next one, the run must have ended: no two runs of a task
/// were ever in flight at once.
fn assert_one_run_at_a_time(row: &str, task: &Task) {
    let mut running = false;
    for event in &task.events {
        match event.kind {
            EventKind::Claimed => {
                assert!(!running, "{row}: two runs in flight: {:#?}", task.events);
                running = true;
            }
            EventKind::Completed
            | EventKind::Failed
            | EventKind::Swept
            | EventKind::Cancelled
            | EventKind::DeliveryFailed => running = false,
            _ => {}
        }
    }
}

fn check(outcome: &Outcome) {
    let row = format!("{} ({:?})", outcome.point, outcome.mode);
    if outcome.point == "create.key_admitted" {
        assert_eq!(outcome.tasks.len(), 1, "{row}: one task for one key");
    }
    for task in &outcome.tasks {
        testing::assert_legal(task);
        assert_one_run_at_a_time(&row, task);
        let id = task.task_id.to_string();
        let retries = task.retry_count - outcome.seeded_retry_count;
        let answered = outcome.retried_with_200.contains(&id);
        match (outcome.mode, answered) {
            (_, true) => assert_eq!(retries, 1, "{row}: a retry that answered 200 counts"),
            // No answer came: the retry counts only if it took effect and the task ran.
            (Mode::Kill, false) => assert!(
                retries == 0 || (retries == 1 && task.attempts > task.retry_count),
                "{row}: retryCount {} without a 200",
                task.retry_count
            ),
            (Mode::Error, false) => assert_eq!(retries, 0, "{row}: a refused retry is not counted"),
        }
    }
}

/// Every crash point of the build, in both modes. Rows run a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_at_every_step_strands_nothing_and_runs_nothing_twice() {
    // To chase one row: JOBS_TEST_CRASH_POINT=<point> runs only its rows, each
    // JOBS_TEST_CRASH_REPEAT times (default 1).
    let only = std::env::var("JOBS_TEST_CRASH_POINT").ok();
    let repeat: usize = std::env::var("JOBS_TEST_CRASH_REPEAT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let rows: Vec<(&'static str, Mode)> = jobs_core::failpoints::ALL
        .iter()
        .filter(|(point, _)| only.as_deref().is_none_or(|only| only == *point))
        .flat_map(|(point, _)| [(*point, Mode::Kill), (*point, Mode::Error)])
        .flat_map(|row| std::iter::repeat_n(row, repeat))
        .collect();
    // Every point has a scenario (a new point without one panics in `step_of`).
    for (point, _) in &rows {
        step_of(point);
    }
    let mut summary = Vec::new();
    for group in rows.chunks(6) {
        let outcomes =
            futures_util::future::join_all(group.iter().map(|(p, m)| run_row(p, *m))).await;
        for outcome in &outcomes {
            check(outcome);
            let told = outcome.answer.as_ref().map_or_else(
                || "no answer".to_owned(),
                |r| format!("{} {}", r.status, r.body["code"].as_str().unwrap_or("")),
            );
            let ends: Vec<&str> = outcome.tasks.iter().map(|t| t.status.as_str()).collect();
            summary.push(format!(
                "{:<24} {:?}\t{told}\t-> {ends:?}",
                outcome.point, outcome.mode
            ));
        }
    }
    eprintln!("crash points:\n{}", summary.join("\n"));
}
