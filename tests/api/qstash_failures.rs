//! A publish that fails (QStash answers 500, 401 or 429, is down, unreachable or too slow)
//! is a failed re-queue or enqueue: the task is restored and nothing is left queued.

use std::time::Duration;

use serde_json::json;

use crate::qstash_emulator::{DEV_TOKEN, QStash};
use crate::support::{Service, closed_port, free_port};

#[tokio::test]
async fn a_failed_publish_restores_the_task() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let id = jobs.failed_task("alice", 1, 3).await;
    let before = jobs.task(&id).await;

    for (failure, status) in [
        ("QStash answers 500", 500),
        ("QStash answers 401", 401),
        ("QStash answers 429", 429),
    ] {
        qstash.behave(|b| b.publish_status = Some(status));
        let reply = jobs.retry(&id, "alice").await;
        assert_eq!(reply.status, 503, "{failure}");
        assert_eq!(
            reply.body,
            json!({ "error": "Failed to re-queue task.", "code": "REQUEUE_FAILED" }),
            "{failure}"
        );
        let after = jobs.task(&id).await;
        assert_eq!(after.get_str("status").unwrap(), "failed", "{failure}");
        assert_eq!(
            after.get_i32("retryCount").unwrap(),
            before.get_i32("retryCount").unwrap(),
            "{failure}"
        );
        assert_eq!(
            after.get_str("lastError").unwrap(),
            "Failed to re-queue task.",
            "{failure}"
        );
    }

    qstash.stop();
    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(
        (reply.status, reply.body["code"].as_str()),
        (503, Some("REQUEUE_FAILED")),
        "QStash down"
    );

    let create = jobs
        .post("create", json!({ "type": "demo", "userId": "alice" }))
        .await;
    assert_eq!(
        (create.status, create.body["code"].as_str()),
        (503, Some("ENQUEUE_FAILED"))
    );
    let created = jobs.task(&create.task_id()).await;
    assert_eq!(
        created.get_str("status").unwrap(),
        "failed",
        "nothing is left queued with no message on its way"
    );
}

#[tokio::test]
async fn a_publish_that_times_out_is_a_failed_requeue() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let id = jobs.failed_task("alice", 1, 3).await;
    qstash.behave(|b| b.publish_delay = Duration::from_secs(12));
    let started = std::time::Instant::now();
    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(
        (reply.status, reply.body["code"].as_str()),
        (503, Some("REQUEUE_FAILED"))
    );
    eprintln!("publish gave up after {:?}", started.elapsed());
    let (status, retries, _) = jobs.state(&id).await;
    assert_eq!((status.as_str(), retries), ("failed", 0));
}

#[tokio::test]
async fn unreachable_qstash_url_is_a_failed_requeue() {
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let env = [
        ("QSTASH_TOKEN", DEV_TOKEN),
        ("QSTASH_URL", dead.as_str()),
        ("USE_QSTASH_IN_DEV", "true"),
        ("QSTASH_BASE_URL", "http://127.0.0.1:9"),
    ];
    let jobs = Service::start_on(
        port,
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &env,
    )
    .await;
    let create = jobs
        .post("create", json!({ "type": "demo", "userId": "alice" }))
        .await;
    assert_eq!(create.status, 503);
    let retry = jobs
        .post(
            "retry",
            json!({ "taskId": create.task_id(), "userId": "alice" }),
        )
        .await;
    assert_eq!(
        (retry.status, retry.body["code"].as_str()),
        (503, Some("REQUEUE_FAILED"))
    );
    let (status, retries, _) = jobs.state(&create.task_id()).await;
    assert_eq!((status.as_str(), retries), ("failed", 0));
}
