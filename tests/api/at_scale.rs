//! Retry at scale (docs/spec.md §12-15): automatic retries with backoff, bulk retry by ids
//! and by filter, error groups, and each task's timeline.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jobs_core::store::Store;
use jobs_core::task::{AutoRetry, Backoff, TaskStatus};
use jobs_core::testing::{self, task};
use mongodb::bson::{DateTime, Document};
use serde_json::{Value, json};

use crate::qstash_emulator::QStash;
use crate::support::{Service, db_uri};

fn store_of(jobs: &Service) -> Store {
    testing::store_on(&db_uri(), &jobs.db_name)
}

/// Calls `sweep` every 250 ms, as `scripts/dev`'s ticker does, until dropped.
struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    fn start(jobs: &Service) -> Self {
        let url = jobs.url("action=sweep");
        Self(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let _ = http.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn kinds(task: &Value) -> Vec<String> {
    task["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn millis(rfc3339: &str) -> i64 {
    DateTime::parse_rfc3339_str(rfc3339)
        .unwrap()
        .timestamp_millis()
}

/// A demo that fails twice, with two automatic retries a second apart: it completes on its
/// own, and each next attempt was scheduled within the jitter bounds (1 s x [0.8, 1.2]).
#[tokio::test]
async fn automatic_retries_complete_a_task_on_its_own() {
    let jobs = Service::start().await;
    let _ticker = Ticker::start(&jobs);
    let reply = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice",
                    "payload": { "steps": 1, "stepMs": 0, "failAttempts": 2 },
                    "autoRetry": { "attempts": 2, "delaySeconds": 1, "backoff": "fixed" } }),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.task_id();

    let mut scheduled_at = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let task = jobs.task(&id).await;
        let status = task.get_str("status").unwrap();
        if status == "scheduled" {
            let next = task
                .get_datetime("nextAttemptAt")
                .unwrap()
                .timestamp_millis();
            if !scheduled_at.contains(&next) {
                scheduled_at.push(next);
            }
        }
        if status == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {task}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let task = jobs
        .get(&format!("action=get&userId=alice&taskId={id}"))
        .await
        .body["task"]
        .clone();
    assert_eq!(
        (&task["autoRetries"], &task["retryCount"], &task["attempts"]),
        (&json!(2), &json!(0), &json!(3))
    );
    let timeline: Vec<String> = kinds(&task)
        .into_iter()
        .filter(|k| ["failed", "scheduled", "completed"].contains(&k.as_str()))
        .collect();
    assert_eq!(
        timeline,
        ["failed", "scheduled", "failed", "scheduled", "completed"],
        "{task}"
    );
    let failures: Vec<i64> = task["errorHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| millis(e["at"].as_str().unwrap()))
        .collect();
    assert_eq!(scheduled_at.len(), 2, "both scheduled states were seen");
    for (failed_at, next) in failures.iter().zip(&scheduled_at) {
        let delay = next - failed_at;
        assert!(
            (790..=1210).contains(&delay),
            "delay {delay} ms outside 1 s ± 20 %"
        );
    }
    let by: HashSet<&str> = task["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["by"].as_str().unwrap())
        .collect();
    assert!(
        by.contains("user:alice") && by.contains("auto") && by.contains("self"),
        "{by:?}"
    );
}

/// A permanent failure (a webhook answering 400) is `failed` at once, with no automatic
/// retry scheduled, and its `errorHistory` entry says so.
#[tokio::test]
async fn a_permanent_failure_is_not_retried_automatically() {
    let stub = crate::stubs::Recorder::start_with_status(400).await;
    let host = stub.url.trim_start_matches("http://").to_owned();
    let jobs = Service::start_with(&[
        ("JOBS_WEBHOOK_ALLOWED_HOSTS", host.as_str()),
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
    ])
    .await;
    let reply = jobs
        .post(
            "create",
            json!({ "type": "webhook", "userId": "alice", "payload": { "url": format!("{}/hook", stub.url) },
                    "autoRetry": { "attempts": 3, "delaySeconds": 1 } }),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let failed = jobs.wait_for_status(&reply.task_id(), "failed").await;
    assert_eq!(failed.get_i32("autoRetries").unwrap(), 0);
    let history = failed.get_array("errorHistory").unwrap();
    let entry = history.last().unwrap().as_document().unwrap();
    assert_eq!(entry.get_str("message"), Ok("Webhook answered HTTP 400"));
    assert_eq!(entry.get_bool("permanent"), Ok(true));
    let task = jobs
        .get(&format!(
            "action=get&userId=alice&taskId={}",
            reply.task_id()
        ))
        .await;
    assert!(!kinds(&task.body["task"]).contains(&"scheduled".to_owned()));
    let shown = task.body["task"]["errorHistory"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(shown["permanent"], true, "the page is told: {shown}");
}

/// A scheduled task can be cancelled; a manual retry of a task whose automatic retries ran
/// out gives it a fresh automatic budget.
#[tokio::test]
async fn scheduled_tasks_cancel_and_a_manual_retry_restores_the_automatic_budget() {
    let jobs = Service::start().await;
    let store = store_of(&jobs);
    let policy = AutoRetry {
        attempts: 2,
        delay_seconds: 60,
        backoff: Backoff::Fixed,
        max_delay_seconds: 60,
    };
    let waiting = task()
        .status(TaskStatus::Scheduled)
        .auto_retry(policy, 1)
        .attempts(1)
        .next_attempt_in_secs(60)
        .insert(&store)
        .await;
    let cancel = jobs
        .post(
            "cancel",
            json!({ "taskId": waiting.task_id, "userId": "alice" }),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    let cancelled = jobs.task(waiting.task_id.as_str()).await;
    assert_eq!(cancelled.get_str("status"), Ok("cancelled"));

    let spent = task()
        .status(TaskStatus::Failed)
        .auto_retry(policy, 2)
        .insert(&store)
        .await;
    let retry = jobs.retry(spent.task_id.as_str(), "alice").await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let done = jobs
        .wait_for_status(spent.task_id.as_str(), "completed")
        .await;
    assert_eq!(
        (done.get_i32("autoRetries"), done.get_i32("retryCount")),
        (Ok(0), Ok(1))
    );
}

/// A scheduled task delivered before it is due is refused with 425 (so QStash delivers it
/// again) and claimed once it is due.
#[tokio::test]
async fn an_early_delivery_is_refused_and_the_task_claimed_when_due() {
    let jobs = Service::start().await;
    let policy = AutoRetry {
        attempts: 1,
        delay_seconds: 1,
        backoff: Backoff::Fixed,
        max_delay_seconds: 1,
    };
    let waiting = task()
        .status(TaskStatus::Scheduled)
        .auto_retry(policy, 1)
        .attempts(1)
        .next_attempt_in_secs(2)
        .insert(&store_of(&jobs))
        .await;
    let body = json!({ "taskId": waiting.task_id });
    let early = jobs.post("process", body.clone()).await;
    assert_eq!(
        (early.status, early.body["code"].as_str()),
        (425, Some("NOT_DUE"))
    );
    assert_eq!(
        jobs.task(waiting.task_id.as_str()).await.get_str("status"),
        Ok("scheduled")
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let due = jobs.post("process", body).await;
    assert_eq!(due.status, 202, "{}", due.body);
    jobs.wait_for_status(waiting.task_id.as_str(), "completed")
        .await;
}

/// Seeds the tasks of one `retryMany` by ids: 60 retryable, 10 completed, 10 out of retries,
/// 10 unknown ids and 10 of another user. Returns (all ids in order, the retryable ones).
async fn mixed_hundred(store: &Store) -> (Vec<String>, Vec<String>, Vec<(String, &'static str)>) {
    let mut ids = Vec::new();
    let mut retryable = Vec::new();
    let mut skipped = Vec::new();
    for _ in 0..60 {
        let t = task().status(TaskStatus::Failed).insert(store).await;
        retryable.push(t.task_id.to_string());
        ids.push(t.task_id.to_string());
    }
    for (fixture, code) in [
        (task().status(TaskStatus::Completed), "NOT_FAILED"),
        (
            task()
                .status(TaskStatus::Failed)
                .max_retries(1)
                .retry_count(1),
            "MAX_RETRIES",
        ),
        (
            task().status(TaskStatus::Failed).owner("mallory"),
            "TASK_NOT_FOUND",
        ),
    ] {
        for _ in 0..10 {
            let t = fixture.clone().insert(store).await;
            ids.push(t.task_id.to_string());
            skipped.push((t.task_id.to_string(), code));
        }
    }
    for n in 0..10 {
        let unknown = format!("no-such-task-{n}");
        ids.push(unknown.clone());
        skipped.push((unknown, "TASK_NOT_FOUND"));
    }
    (ids, retryable, skipped)
}

/// `retryMany` with 100 ids: exactly the retryable ones are retried, each skip has its code,
/// nothing else changed, in at most 4 MongoDB commands (3, and one more when a task's stored
/// `retriesLeft` needs fixing).
#[tokio::test]
async fn retry_many_by_ids_retries_exactly_the_retryable_ones() {
    let jobs = Service::start().await;
    let store = store_of(&jobs);
    let (ids, retryable, skipped) = mixed_hundred(&store).await;
    let untouched: Vec<_> = jobs
        .snapshot()
        .await
        .into_iter()
        .filter(|t| !retryable.contains(&t.get_str("taskId").unwrap().to_owned()))
        .collect();

    let reply = jobs
        .post("retryMany", json!({ "taskIds": ids, "userId": "alice" }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.db_commands() <= 4, "{} commands", reply.db_commands());
    let retried: HashSet<String> = serde_json::from_value(reply.body["retried"].clone()).unwrap();
    assert_eq!(retried, retryable.iter().cloned().collect::<HashSet<_>>());
    let codes: Vec<(String, String)> = reply.body["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["taskId"].as_str().unwrap().into(),
                s["code"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = skipped
        .iter()
        .map(|(id, code)| (id.clone(), code.to_string()))
        .collect();
    assert_eq!(codes, expected);
    assert_eq!(reply.body["nextCursor"], Value::Null);

    for id in &retryable {
        let task = jobs.wait_for_status(id, "completed").await;
        assert_eq!(task.get_i32("retryCount"), Ok(1));
    }
    let after: Vec<_> = jobs
        .snapshot()
        .await
        .into_iter()
        .filter(|t| !retryable.contains(&t.get_str("taskId").unwrap().to_owned()))
        .collect();
    assert_eq!(after, untouched, "nothing else changed");
}

/// 20 concurrent `retry` calls racing a `retryMany` on the same 20 tasks: each task is
/// retried exactly once, by one of them.
#[tokio::test]
async fn single_retries_racing_a_bulk_retry_retry_each_task_once() {
    // Hand-offs are accepted and nothing runs: wins are counted by the answers.
    let recorder = crate::stubs::Recorder::start().await;
    let jobs = Service::start_with(&[("JOBS_PUBLIC_URL", recorder.url.as_str())]).await;
    let store = store_of(&jobs);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            task()
                .status(TaskStatus::Failed)
                .insert(&store)
                .await
                .task_id
                .to_string(),
        );
    }
    let singles = join_all(ids.iter().map(|id| jobs.retry(id, "alice")));
    let bulk = jobs.post("retryMany", json!({ "taskIds": ids, "userId": "alice" }));
    let (singles, bulk) = tokio::join!(singles, bulk);
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let by_bulk: HashSet<String> = serde_json::from_value(bulk.body["retried"].clone()).unwrap();
    for (id, single) in ids.iter().zip(&singles) {
        let wins = usize::from(single.status == 200) + usize::from(by_bulk.contains(id));
        assert_eq!(wins, 1, "{id}: single {} {}", single.status, single.body);
        let stored = jobs.task(id).await;
        assert_eq!(
            (stored.get_str("status"), stored.get_i32("retryCount")),
            (Ok("queued"), Ok(1))
        );
    }
}

/// 1,250 failed tasks in two groups; retrying one group by filter, page by page (1,000 a
/// call), retries exactly that group in 3 commands a call and leaves the other untouched.
#[tokio::test]
async fn retry_many_by_filter_pages_through_one_group() {
    const GROUP: usize = 1_150;
    let recorder = crate::stubs::Recorder::start().await;
    let jobs = Service::start_with(&[("JOBS_PUBLIC_URL", recorder.url.as_str())]).await;
    let in_group = (0..GROUP).map(|n| {
        let message = format!("Simulated failure on attempt {}", n % 3 + 1);
        let failed = task().status(TaskStatus::Failed).last_error(&message);
        failed.created_secs_ago(10_000 - n as i64).build()
    });
    let others = (0..100).map(|n| {
        let failed = task().status(TaskStatus::Failed);
        let failed = failed.last_error(&format!("Webhook answered HTTP 50{}", n % 4));
        failed.created_secs_ago(10_000 - n).build()
    });
    let seeded: Vec<Document> = in_group
        .chain(others)
        .map(|t| mongodb::bson::to_document(&t).unwrap())
        .collect();
    jobs.tasks.insert_many(seeded).await.unwrap();
    let groups = jobs.get("action=groups&userId=alice").await;
    assert_eq!(groups.status, 200, "{}", groups.body);
    // Aggregated and kept (find, aggregate, keep); asked again, the kept answer (one find).
    assert_eq!(groups.db_commands(), 3);
    let again = jobs.get("action=groups&userId=alice").await;
    assert_eq!((again.db_commands(), &again.body), (1, &groups.body));
    let rows = groups.body["groups"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{}", groups.body);
    assert_eq!(
        (&rows[0]["template"], &rows[0]["count"]),
        (&json!("Simulated failure on attempt <n>"), &json!(GROUP))
    );
    assert_eq!(
        (&rows[1]["template"], &rows[1]["count"]),
        (&json!("Webhook answered HTTP <n>"), &json!(100))
    );
    let group = rows[0]["errorGroup"].as_str().unwrap().to_owned();
    let listed = jobs
        .get(&format!(
            "action=list&userId=alice&errorGroup={group}&limit=100"
        ))
        .await;
    assert_eq!(listed.body["tasks"].as_array().unwrap().len(), 100);

    let mut cursor = Value::Null;
    let mut retried = 0;
    let mut calls = 0;
    loop {
        let mut body = json!({ "filter": { "errorGroup": group }, "userId": "alice" });
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let page = jobs.post("retryMany", body).await;
        assert_eq!(page.status, 200, "{}", page.body);
        // Page read, the re-queue, its note for `groups` (spec §13).
        assert_eq!(page.db_commands(), 3);
        retried += page.body["retried"].as_array().unwrap().len();
        calls += 1;
        cursor = page.body["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!((retried, calls), (GROUP, 2));
    // The retries moved the version: the group is gone from `groups` at once.
    let after = jobs.get("action=groups&userId=alice").await;
    let rows = after.body["groups"].as_array().unwrap();
    assert_eq!(after.db_commands(), 3, "aggregated again");
    assert_eq!(rows.len(), 1, "{}", after.body);
    assert_eq!(rows[0]["count"], json!(100));
    let tasks = jobs.snapshot().await;
    for stored in &tasks {
        let in_group = stored.get_str("errorGroup") == Ok(group.as_str());
        let expected = if in_group {
            ("queued", 1)
        } else {
            ("failed", 0)
        };
        assert_eq!(
            (
                stored.get_str("status").unwrap(),
                stored.get_i32("retryCount").unwrap()
            ),
            expected,
            "{stored}"
        );
    }
    let events = tasks
        .iter()
        .find(|t| t.get_str("errorGroup") == Ok(group.as_str()))
        .unwrap()
        .get_array("events")
        .unwrap()
        .last()
        .unwrap()
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        (events.get_str("kind"), events.get_str("by")),
        (Ok("retried"), Ok("bulk:alice"))
    );
}

/// `limit` sizes a filter page: 7 failed tasks in pages of 3 are 3 calls, newest first.
#[tokio::test]
async fn retry_many_pages_by_limit() {
    let recorder = crate::stubs::Recorder::start().await;
    let jobs = Service::start_with(&[("JOBS_PUBLIC_URL", recorder.url.as_str())]).await;
    let store = store_of(&jobs);
    let mut ids = Vec::new();
    for n in 0..7 {
        let failed = task().status(TaskStatus::Failed).created_secs_ago(100 - n);
        ids.push(failed.insert(&store).await.task_id.to_string());
    }
    ids.reverse();
    let (mut cursor, mut pages) = (Value::Null, Vec::new());
    loop {
        let mut body = json!({ "filter": {}, "limit": 3, "userId": "alice" });
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let page = jobs.post("retryMany", body).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages.push(page.body["retried"].clone());
        cursor = page.body["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(
        pages,
        [json!(ids[0..3]), json!(ids[3..6]), json!(ids[6..7])],
        "newest first, 3 a call"
    );
}

/// Bad `retryMany` bodies are refused and change nothing.
#[tokio::test]
async fn bad_retry_many_bodies_are_refused() {
    let jobs = Service::start().await;
    let too_many: Vec<String> = (0..1001).map(|n| format!("t{n}")).collect();
    let rows = [
        json!({ "userId": "alice" }),
        json!({ "taskIds": [], "userId": "alice" }),
        json!({ "taskIds": too_many, "userId": "alice" }),
        json!({ "taskIds": ["a"], "filter": {}, "userId": "alice" }),
        json!({ "taskIds": [{ "$ne": null }], "userId": "alice" }),
        json!({ "filter": { "errorGroup": "not-hex" }, "userId": "alice" }),
        json!({ "filter": { "status": "completed" }, "userId": "alice" }),
        json!({ "filter": {}, "cursor": "forged", "userId": "alice" }),
        json!({ "filter": {}, "limit": 0, "userId": "alice" }),
        json!({ "filter": {}, "limit": 1001, "userId": "alice" }),
        json!({ "filter": {}, "limit": -1, "userId": "alice" }),
        json!({ "filter": {}, "limit": 2.5, "userId": "alice" }),
        json!({ "filter": {}, "limit": "10", "userId": "alice" }),
        json!({ "taskIds": ["a"], "limit": 10, "userId": "alice" }),
    ];
    for body in rows {
        let reply = jobs.post("retryMany", body.clone()).await;
        assert_eq!(
            (reply.status, reply.body["code"].as_str()),
            (400, Some("INVALID_BODY")),
            "{body}: {}",
            reply.body
        );
    }
    assert!(jobs.snapshot().await.is_empty());
}

/// Through QStash, an automatic retry's hand-off is published at once with
/// `Upstash-Not-Before` and waits there: the task completes on its own, with no sweep.
#[tokio::test]
async fn automatic_retries_through_qstash_wait_in_the_queue() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let reply = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice",
                    "payload": { "steps": 1, "stepMs": 0, "failAttempts": 1 },
                    "autoRetry": { "attempts": 1, "delaySeconds": 2, "backoff": "fixed" } }),
        )
        .await;
    let id = reply.task_id();
    let scheduled = jobs.wait_for_status(&id, "scheduled").await;
    let next = scheduled
        .get_datetime("nextAttemptAt")
        .unwrap()
        .timestamp_millis();
    jobs.wait_for_status(&id, "completed").await;
    let published = qstash.published();
    assert_eq!(
        published.len(),
        2,
        "the first hand-off and the scheduled one"
    );
    // Whole seconds rounded up: never before the task is due.
    let not_before = (next as u64).div_ceil(1000);
    assert_eq!(published[1].not_before, Some(not_before));
    assert_eq!(
        published[1].headers["upstash-not-before"],
        not_before.to_string()
    );
}

/// QStash's clock 900 ms ahead of the function's, and no redelivery to fall back on: the
/// delivery still comes after the task is due by the function's clock (Not-Before rounded up,
/// then 1 s of skew allowed), so the automatic retry runs.
#[tokio::test]
async fn a_delivery_900_ms_early_still_runs_the_automatic_retry() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[("JOBS_QSTASH_RETRIES", "0")]).await;
    qstash.behave(|b| b.early_by = Duration::from_millis(900));
    for _ in 0..3 {
        let reply = jobs
            .post(
                "create",
                json!({ "type": "demo", "userId": "alice",
                        "payload": { "steps": 1, "stepMs": 0, "failAttempts": 1 },
                        "autoRetry": { "attempts": 1, "delaySeconds": 1, "backoff": "fixed" } }),
            )
            .await;
        let done = jobs.wait_for_status(&reply.task_id(), "completed").await;
        assert_eq!(done.get_i32("attempts"), Ok(2));
    }
    let statuses: Vec<Option<u16>> = qstash.delivered().iter().map(|d| d.status).collect();
    assert!(!statuses.contains(&Some(425)), "{statuses:?}");
    assert!(qstash.callbacks().is_empty());
}

/// QStash giving up on early deliveries (every answer 425 NOT_DUE) is not a failure of the
/// task: the callback leaves it scheduled and hands it off again under a new dedup id (QStash
/// would swallow the old one), and it runs when due.
#[tokio::test]
async fn a_failure_callback_after_425_hands_the_task_off_again() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[("JOBS_QSTASH_RETRIES", "0")]).await;
    let reply = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice",
                    "payload": { "steps": 1, "stepMs": 0, "failAttempts": 1 },
                    "autoRetry": { "attempts": 1, "delaySeconds": 3, "backoff": "fixed" } }),
        )
        .await;
    let id = reply.task_id();
    qstash.behave(|b| b.ignore_not_before = true);
    let scheduled = jobs.wait_for_status(&id, "scheduled").await;
    let first = scheduled
        .get_document("handoff")
        .unwrap()
        .get_str("dedupId")
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !qstash.callbacks().iter().any(|c| c.body["status"] == 425) {
        assert!(std::time::Instant::now() < deadline, "no failure callback");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    qstash.behave(|b| b.ignore_not_before = false);
    let done = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(done.get_i32("attempts"), Ok(2));
    let events = done.get_array("events").unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.as_document().unwrap().get_str("kind").unwrap())
        .collect();
    assert!(!kinds.contains(&"deliveryFailed"), "{kinds:?}");
    assert!(kinds.contains(&"redispatched"), "{kinds:?}");
    let last = qstash.published().last().unwrap().headers["upstash-deduplication-id"].clone();
    assert_ne!(last, first, "handed off again under a new dedup id");
}
