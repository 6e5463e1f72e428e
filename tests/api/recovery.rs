//! Losing nothing: the sweeper (lost workers, tasks never picked up), fenced stale workers,
//! processor panics, and a database outage under a running service. No test waits for a lease
//! or a queue timeout to pass: the factory (`jobs_core::testing`) seeds tasks that are already
//! old, and a running worker's lease is aged in the database.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jobs_core::store::Store;
use jobs_core::task::TaskStatus;
use jobs_core::testing::{self, task};
use mongodb::bson::{DateTime, Document, doc};
use serde_json::json;

use crate::qstash_emulator::QStash;
use crate::support::{OwnDatabase, Service, db_uri};

/// Every invariant a stored task must satisfy, whatever happened to it: the one checker,
/// `jobs_core::testing::assert_legal`, on the stored document.
pub fn assert_legal(task: &Document) {
    testing::assert_legal_document(task);
}

/// A store on the service's database, to seed tasks with the factory.
fn store_of(jobs: &Service) -> Store {
    testing::store_on(&db_uri(), &jobs.db_name)
}

/// Ages the lease of every `processing` task matching `filter` to `secs` ago: its worker
/// stalled (or lost its writes) for longer than the lease, without the test waiting for it.
async fn expire_leases(jobs: &Service, mut filter: Document, secs: i64) -> u64 {
    filter.insert("status", "processing");
    let expired = DateTime::from_millis(DateTime::now().timestamp_millis() - secs * 1000);
    let updated = jobs
        .tasks
        .update_many(filter, doc! { "$set": { "lease.expiresAt": expired } })
        .await
        .unwrap();
    updated.modified_count
}

/// The whole-seconds number in `message` after `prefix`, checked to be `at_least` plus at most
/// the seconds elapsed since `seeded` (the moment the old task was built).
fn seconds_after(message: &str, prefix: &str, at_least: u64, seeded: Instant) -> u64 {
    let rest = message
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{message:?} does not start with {prefix:?}"));
    let n: u64 = rest
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number of seconds in {message:?}"));
    let at_most = at_least + seeded.elapsed().as_secs();
    assert!((at_least..=at_most).contains(&n), "{message:?}: {n} s");
    n
}

#[tokio::test]
async fn a_lost_worker_is_swept_and_its_task_retried() {
    let jobs = Service::start_with(&[("JOBS_LEASE_SECONDS", "45")]).await;
    // Its worker died: the attempt started 11 minutes ago, the last progress report renewed
    // the lease 45 s before it expired, 10 minutes ago.
    let seeded = Instant::now();
    let lost = task()
        .status(TaskStatus::Processing)
        .progress(50)
        .started_secs_ago(660)
        .updated_secs_ago(645)
        .lease_expired_secs_ago(600)
        .insert(&store_of(&jobs))
        .await;
    let id = lost.task_id.as_str();

    let sweep = jobs.get("action=sweep").await;
    assert_eq!(
        sweep.body,
        json!({ "timedOut": 1, "neverPickedUp": 0, "redispatched": 0,
                "notSent": 0, "more": false })
    );
    let failed = jobs.task(id).await;
    assert_legal(&failed);
    assert_eq!(failed.get_str("status").unwrap(), "failed");
    let message = failed.get_str("lastError").unwrap();
    let prefix = "The worker was lost: the task was processing for ";
    let ran_for = seconds_after(message, prefix, 660, seeded);
    assert_eq!(
        message,
        format!("{prefix}{ran_for} s and stopped reporting progress (lease of 45 s expired).")
    );

    assert_eq!(jobs.retry(id, "alice").await.status, 200);
    let done = jobs.wait_for_status(id, "completed").await;
    assert_legal(&done);
    assert_eq!(
        (
            done.get_i32("attempts").unwrap(),
            done.get_i32("retryCount").unwrap()
        ),
        (2, 1)
    );
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_cannot_write_afterwards() {
    let jobs = Service::start().await;
    // Its first progress report comes a second after the claim, once the lease was taken.
    let id = jobs
        .create_demo("alice", json!({ "steps": 2, "stepMs": 1000 }))
        .await;
    jobs.wait_for_status(&id, "processing").await;
    // The worker stalled past its lease: the sweeper takes the task from it.
    assert_eq!(expire_leases(&jobs, doc! { "taskId": &id }, 60).await, 1);
    assert_eq!(jobs.get("action=sweep").await.body["timedOut"], 1);
    let swept = jobs.task(&id).await;
    assert_legal(&swept);

    let deadline = Instant::now() + Duration::from_secs(20);
    while !jobs.logs().contains("outcome dropped") {
        assert!(
            Instant::now() < deadline,
            "the stale worker never stopped:\n{}",
            jobs.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let later = jobs.task(&id).await;
    assert_eq!(
        later, swept,
        "the stale worker's progress and completion were fenced off"
    );
    assert_eq!(later.get_str("status").unwrap(), "failed");
}

#[tokio::test]
async fn a_task_never_picked_up_is_failed_and_can_be_retried() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(
        &qstash,
        &[
            ("JOBS_QUEUE_TIMEOUT_SECONDS", "900"),
            ("CRON_SECRET", "cron-secret"),
        ],
    )
    .await;
    // Queued 1000 s ago; its hand-off never arrived, not even when re-sent 950 s ago (the
    // queue timeout, 900 s, counts from the re-send).
    let seeded = Instant::now();
    let waiting = task()
        .updated_secs_ago(1000)
        .redispatched_secs_ago(950)
        .insert(&store_of(&jobs))
        .await;
    let id = waiting.task_id.as_str();

    for (name, auth) in [
        ("no secret", None),
        ("wrong secret", Some("Bearer guess")),
        ("not bearer", Some("Basic Y3Jvbi1zZWNyZXQ=")),
    ] {
        let mut request = jobs.request(reqwest::Method::GET, "action=sweep");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let reply = jobs.send(request).await;
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(
            jobs.task(id).await.get_str("status").unwrap(),
            "queued",
            "{name}"
        );
    }

    let sweep = jobs
        .send(
            jobs.request(reqwest::Method::GET, "action=sweep")
                .bearer_auth("cron-secret"),
        )
        .await;
    assert_eq!(
        sweep.body,
        json!({ "timedOut": 0, "neverPickedUp": 1, "redispatched": 0,
                "notSent": 0, "more": false })
    );
    let failed = jobs.task(id).await;
    assert_legal(&failed);
    let message = failed.get_str("lastError").unwrap();
    let prefix = "The task was never picked up: it waited in the queue for ";
    let waited = seconds_after(message, prefix, 1000, seeded);
    assert_eq!(message, format!("{prefix}{waited} s."));

    assert_eq!(jobs.retry(id, "alice").await.status, 200);
    let done = jobs.wait_for_status(id, "completed").await;
    assert_legal(&done);
}

#[tokio::test]
async fn a_processor_panic_fails_the_task_and_the_function_keeps_serving() {
    let jobs = Service::start().await;
    let id = jobs
        .create_demo(
            "alice",
            json!({ "steps": 2, "stepMs": 0, "panicAttempts": 1 }),
        )
        .await;
    let failed = jobs.wait_for_status(&id, "failed").await;
    assert_eq!(
        failed.get_str("lastError").unwrap(),
        "Processor panicked: demo processor panicked on attempt 1"
    );
    assert_legal(&failed);
    assert_eq!(jobs.get("action=health").await.status, 200);
    assert_eq!(jobs.retry(&id, "alice").await.status, 200);
    jobs.wait_for_status(&id, "completed").await;
}

#[tokio::test]
async fn a_database_outage_is_503_and_the_service_recovers_by_itself() {
    let mut db = OwnDatabase::start().await;
    let uri = format!("{}/?serverSelectionTimeoutMS=1500", db.uri());
    let jobs = Service::start_with(&[("MONGODB_URI", uri.as_str())]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            jobs.create_demo("alice", json!({ "steps": 30, "stepMs": 100 }))
                .await,
        );
    }

    // Requests in flight while the database goes away.
    let jobs = &jobs;
    let in_flight = join_all((0..20).map(|i| async move {
        match i % 3 {
            0 => jobs.get("action=list&userId=alice").await,
            1 => jobs.post("create", json!({ "type": "demo", "userId": "alice", "payload": { "steps": 1, "stepMs": 0 } })).await,
            _ => jobs.get(&format!("action=get&taskId={}&userId=alice", "missing")).await,
        }
    }));
    let stop = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        db.stop();
    };
    let (replies, ()) = tokio::join!(in_flight, stop);
    for reply in &replies {
        let ok = reply.status < 500
            || (reply.status == 503
                && ["DB_UNAVAILABLE", "ENQUEUE_FAILED"]
                    .contains(&reply.body["code"].as_str().unwrap_or_default()));
        assert!(
            ok,
            "unexpected answer during the outage: {} {}",
            reply.status, reply.body
        );
        if reply.status == 201 {
            ids.push(reply.task_id());
        }
    }

    let started = Instant::now();
    let down = jobs
        .get(&format!("action=get&taskId={}&userId=alice", ids[0]))
        .await;
    let waited = started.elapsed();
    assert_eq!(
        (down.status, down.body["code"].as_str()),
        (503, Some("DB_UNAVAILABLE")),
        "{}",
        down.body
    );
    eprintln!("DB_UNAVAILABLE answered after {waited:?} (serverSelectionTimeoutMS=1500)");
    assert_eq!(jobs.get("action=health").await.status, 503);
    let create = jobs
        .post("create", json!({ "type": "demo", "userId": "alice" }))
        .await;
    assert_eq!(
        (create.status, create.body["code"].as_str()),
        (503, Some("DB_UNAVAILABLE"))
    );

    db.resume().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs.get("action=health").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "the service did not recover:\n{}",
            jobs.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(jobs.get("action=list&userId=alice").await.status, 200);

    // Workers that lost their writes during the outage are swept once their lease expires:
    // their leases are aged rather than waited for.
    expire_leases(jobs, doc! {}, 60).await;
    assert_eq!(jobs.get("action=sweep").await.status, 200);
    for id in &ids {
        assert_legal(&jobs.task(id).await);
    }
    let fresh = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&fresh, "completed").await;
}
