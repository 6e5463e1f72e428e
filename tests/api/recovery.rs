//! Losing nothing: the sweeper (lost workers, tasks never picked up), fenced stale workers,
//! processor panics, and a database outage under a running service.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mongodb::bson::Document;
use serde_json::json;

use crate::qstash_emulator::QStash;
use crate::support::{OwnDatabase, Service};

/// Every invariant a stored task must satisfy, whatever happened to it.
pub fn assert_legal(task: &Document) {
    let status = task.get_str("status").unwrap();
    let has_lease = task.get("lease").is_some();
    let progress = task.get_i32("progress").unwrap();
    let error = task.get("lastError").and_then(|e| e.as_str());
    let (retries, max) = (
        task.get_i32("retryCount").unwrap(),
        task.get_i32("maxRetries").unwrap(),
    );
    assert!(
        ["queued", "processing", "completed", "failed", "cancelled"].contains(&status),
        "{task}"
    );
    assert_eq!(
        has_lease,
        status == "processing",
        "a lease exactly while processing: {task}"
    );
    assert!((0..=100).contains(&progress), "{task}");
    assert!((0..=max).contains(&retries), "{task}");
    assert!(
        task.get_array("errorHistory").unwrap().len() <= 20,
        "{task}"
    );
    match status {
        "completed" => assert!(progress == 100 && error.is_none(), "{task}"),
        "failed" => assert!(error.is_some_and(|e| !e.is_empty()), "{task}"),
        "queued" => assert_eq!(progress, 0, "{task}"),
        _ => {}
    }
}

#[tokio::test]
async fn a_killed_worker_is_swept_and_its_task_retried() {
    let mut first = Service::start_with(&[("JOBS_LEASE_SECONDS", "1")]).await;
    let id = first
        .create_demo("alice", json!({ "steps": 2, "stepMs": 1500 }))
        .await;
    first.wait_for_status(&id, "processing").await;
    first.kill();

    let second = first.start_sharing_db(&[("JOBS_LEASE_SECONDS", "1")]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let sweep = second.get("action=sweep").await;
    assert_eq!(sweep.body, json!({ "timedOut": 1, "neverPickedUp": 0 }));
    let failed = second.task(&id).await;
    assert_legal(&failed);
    assert_eq!(failed.get_str("status").unwrap(), "failed");
    let message = failed.get_str("lastError").unwrap();
    assert!(
        message.starts_with("The worker was lost: the task was processing for "),
        "{message}"
    );
    assert!(message.contains("lease of 1 s expired"), "{message}");

    assert_eq!(second.retry(&id, "alice").await.status, 200);
    let done = second.wait_for_status(&id, "completed").await;
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
    let jobs = Service::start_with(&[("JOBS_LEASE_SECONDS", "1")]).await;
    // Steps longer than the lease: the worker's first heartbeat comes after the lease expired.
    let id = jobs
        .create_demo("alice", json!({ "steps": 3, "stepMs": 1500 }))
        .await;
    jobs.wait_for_status(&id, "processing").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(jobs.get("action=sweep").await.body["timedOut"], 1);
    let swept = jobs.task(&id).await;

    tokio::time::sleep(Duration::from_millis(4000)).await;
    let later = jobs.task(&id).await;
    assert_eq!(
        later, swept,
        "the stale worker's progress and completion were fenced off"
    );
    assert_eq!(later.get_str("status").unwrap(), "failed");
    assert!(jobs.logs().contains("outcome dropped"));
}

#[tokio::test]
async fn a_task_never_picked_up_is_failed_and_can_be_retried() {
    let qstash = QStash::start().await;
    qstash.behave(|b| b.delivery_delay = Duration::from_secs(3600));
    let jobs = Service::behind_qstash(
        &qstash,
        &[
            ("JOBS_QUEUE_TIMEOUT_SECONDS", "1"),
            ("CRON_SECRET", "cron-secret"),
        ],
    )
    .await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    tokio::time::sleep(Duration::from_millis(1300)).await;

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
            jobs.task(&id).await.get_str("status").unwrap(),
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
    assert_eq!(sweep.body, json!({ "timedOut": 0, "neverPickedUp": 1 }));
    let failed = jobs.task(&id).await;
    assert_legal(&failed);
    let message = failed.get_str("lastError").unwrap();
    assert!(
        message.starts_with("The task was never picked up: it waited in the queue for "),
        "{message}"
    );

    qstash.behave(|b| b.delivery_delay = Duration::ZERO);
    assert_eq!(jobs.retry(&id, "alice").await.status, 200);
    jobs.wait_for_status(&id, "completed").await;
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
    let jobs =
        Service::start_with(&[("MONGODB_URI", uri.as_str()), ("JOBS_LEASE_SECONDS", "2")]).await;
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

    // Workers that lost their writes during the outage are swept once their lease expires.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(jobs.get("action=sweep").await.status, 200);
    for id in &ids {
        assert_legal(&jobs.task(id).await);
    }
    let fresh = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&fresh, "completed").await;
}
