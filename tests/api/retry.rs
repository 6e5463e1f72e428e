//! The headline feature end to end: retry of a failed task, its error table, its races.

use futures_util::future::join_all;
use mongodb::bson::{DateTime, doc};
use serde_json::json;

use crate::support::{Service, closed_port};

#[tokio::test]
async fn a_failed_task_is_retried_and_completes() {
    let jobs = Service::start().await;
    let id = jobs
        .create_demo(
            "alice",
            json!({ "steps": 4, "stepMs": 150, "failAttempts": 1 }),
        )
        .await;

    let failed = jobs.wait_for_status(&id, "failed").await;
    assert_eq!(
        failed.get_str("lastError").unwrap(),
        "Simulated failure on attempt 1"
    );
    assert_eq!(failed.get_i32("retryCount").unwrap(), 0);

    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({ "success": true, "taskId": id }));

    // Self-invocation awaits the claim, so the task may already be processing, and its first
    // three steps are memoised, so the new attempt may already have replayed some of them;
    // either way the retry has reset it. (The QStash tests observe `queued` itself.)
    let after = jobs
        .get(&format!("action=get&taskId={id}&userId=alice"))
        .await
        .body["task"]
        .clone();
    match after["status"].as_str().unwrap() {
        "queued" => assert_eq!(after["progress"], 0, "{after}"),
        "processing" => assert!(after["progress"].as_i64().unwrap() < 100, "{after}"),
        other => panic!("a retried task is queued or processing, not {other}: {after}"),
    }
    assert_eq!(after["lastError"], json!(null));
    assert_eq!(after["retryCount"], 1);

    let done = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(done.get_i32("progress").unwrap(), 100);
    assert_eq!(done.get_i32("attempts").unwrap(), 2);
    assert_eq!(done.get_i32("retryCount").unwrap(), 1);
    let history = done.get_array("errorHistory").unwrap();
    assert_eq!(history.len(), 1, "the first failure is kept in the history");
}

#[tokio::test]
async fn retry_error_table() {
    let jobs = Service::start().await;
    let failed = jobs.failed_task("alice", 1, 3).await;
    let completed = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&completed, "completed").await;
    let exhausted = jobs.failed_task("alice", 5, 1).await;
    assert_eq!(jobs.retry(&exhausted, "alice").await.status, 200);
    jobs.wait_for_status(&exhausted, "failed").await;

    let missing = "Missing required fields: taskId, userId";
    let rows = [
        (
            json!({ "userId": "alice" }),
            400,
            "MISSING_FIELDS",
            missing.to_owned(),
        ),
        (
            json!({ "taskId": failed }),
            400,
            "MISSING_FIELDS",
            missing.to_owned(),
        ),
        (
            json!({ "taskId": "", "userId": "alice" }),
            400,
            "MISSING_FIELDS",
            missing.to_owned(),
        ),
        (
            json!({ "taskId": failed, "userId": "" }),
            400,
            "MISSING_FIELDS",
            missing.to_owned(),
        ),
        (
            json!({ "taskId": "no-such-task", "userId": "alice" }),
            404,
            "TASK_NOT_FOUND",
            "Task with ID no-such-task not found".to_owned(),
        ),
        (
            json!({ "taskId": failed, "userId": "mallory" }),
            403,
            "NOT_OWNER",
            "Unauthorized: You do not own this task".to_owned(),
        ),
        (
            json!({ "taskId": completed, "userId": "alice" }),
            409,
            "NOT_FAILED",
            "Only failed tasks can be retried.".to_owned(),
        ),
        (
            json!({ "taskId": exhausted, "userId": "alice" }),
            409,
            "MAX_RETRIES",
            "Max retries (1) reached.".to_owned(),
        ),
    ];
    for (body, status, code, message) in rows {
        let before = jobs.snapshot().await;
        let reply = jobs.post("retry", body.clone()).await;
        assert_eq!(
            (reply.status, reply.body["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
        assert_eq!(reply.body["error"], message, "{body}");
        assert_eq!(jobs.snapshot().await, before, "{body} changed a document");
    }
}

#[tokio::test]
async fn default_retry_budget_is_three() {
    let jobs = Service::start().await;
    let id = jobs.failed_task("alice", 10, 3).await;
    for _ in 0..3 {
        assert_eq!(jobs.retry(&id, "alice").await.status, 200);
        jobs.wait_for_status(&id, "failed").await;
    }
    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.body["error"], "Max retries (3) reached.");
    let task = jobs.task(&id).await;
    assert_eq!(
        (
            task.get_i32("retryCount").unwrap(),
            task.get_i32("attempts").unwrap()
        ),
        (3, 4)
    );
}

#[tokio::test]
async fn fifty_concurrent_retries_have_exactly_one_winner() {
    let jobs = Service::start().await;
    let id = jobs.failed_task("alice", 1, 3).await;

    let body = json!({ "taskId": id, "userId": "alice" });
    let replies = join_all((0..50).map(|_| jobs.post("retry", body.clone()))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == 409 && r.body["code"] == "NOT_FAILED")
        .count();
    assert_eq!((ok, conflicts), (1, 49));

    let done = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(done.get_i32("retryCount").unwrap(), 1);
    assert_eq!(
        done.get_i32("attempts").unwrap(),
        2,
        "exactly one new processing attempt"
    );
}

#[tokio::test]
async fn the_same_delivery_three_times_runs_the_processor_once() {
    let jobs = Service::start().await;
    let id = uuid::Uuid::now_v7().to_string();
    let now = DateTime::now();
    jobs.tasks
        .insert_one(doc! {
            "taskId": &id, "userId": "alice", "type": "demo", "payload": { "steps": 2, "stepMs": 50 },
            "status": "queued", "progress": 0, "retryCount": 0, "maxRetries": 3, "attempts": 0,
            "lastError": null, "errorHistory": [], "result": null, "createdAt": now, "updatedAt": now,
        })
        .await
        .unwrap();

    let delivery = json!({ "taskId": id });
    let replies = join_all((0..3).map(|_| jobs.post("process", delivery.clone()))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 202]);

    let done = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(done.get_i32("attempts").unwrap(), 1);
    assert_eq!(
        jobs.post("process", delivery).await.status,
        200,
        "a late redelivery does nothing"
    );
    assert_eq!(jobs.task(&id).await, done);
}

#[tokio::test]
async fn unreachable_self_invocation_restores_the_task() {
    let jobs = Service::start().await;
    let id = jobs.failed_task("alice", 5, 3).await;
    assert_eq!(jobs.retry(&id, "alice").await.status, 200);
    let before = jobs.wait_for_status(&id, "failed").await;
    assert_eq!(before.get_i32("retryCount").unwrap(), 1);

    let dead_end = format!("http://127.0.0.1:{}", closed_port());
    let cut_off = jobs
        .start_sharing_db(&[("JOBS_PUBLIC_URL", &dead_end)])
        .await;
    let reply = cut_off.retry(&id, "alice").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        json!({ "error": "Failed to re-queue task.", "code": "REQUEUE_FAILED" })
    );

    let after = jobs.task(&id).await;
    assert_eq!(after.get_str("status").unwrap(), "failed");
    assert_eq!(
        after.get_i32("retryCount").unwrap(),
        1,
        "a retry that never reached the queue is not used up"
    );
    assert_eq!(
        after.get_str("lastError").unwrap(),
        "Failed to re-queue task."
    );
    assert_eq!(
        after.get_i32("attempts").unwrap(),
        before.get_i32("attempts").unwrap()
    );
    assert_eq!(
        after.get_i32("progress").unwrap(),
        0,
        "the rest as the retry left it (docs/spec.md §4, restore_after_failed_requeue)"
    );

    // With the queue back, the same task retries normally.
    assert_eq!(jobs.retry(&id, "alice").await.status, 200);
}

#[tokio::test]
async fn create_that_cannot_reach_the_queue_leaves_a_retryable_failed_task() {
    let dead_end = format!("http://127.0.0.1:{}", closed_port());
    let jobs = Service::start_with(&[("JOBS_PUBLIC_URL", &dead_end)]).await;
    let reply = jobs
        .post("create", json!({ "type": "demo", "userId": "alice" }))
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body["code"], "ENQUEUE_FAILED");
    let task = jobs.task(&reply.task_id()).await;
    assert_eq!(task.get_str("status").unwrap(), "failed");
    assert!(
        task.get_str("lastError")
            .unwrap()
            .starts_with("Failed to queue task")
    );
    assert_eq!(task.get_i32("retryCount").unwrap(), 0);
}

/// `get` and `list` are one command each; `retry` three: as the plan's, read the task, then ONE
/// conditional update pinned on what was read; then the note for `groups` (§14).
#[tokio::test]
async fn what_retry_get_and_list_cost_in_database_commands() {
    let jobs = Service::start().await;
    let id = jobs.failed_task("alice", 1, 3).await;
    let get = jobs
        .get(&format!("action=get&taskId={id}&userId=alice"))
        .await;
    assert_eq!((get.status, get.db_commands()), (200, 1));
    let retry = jobs.retry(&id, "alice").await;
    assert_eq!((retry.status, retry.db_commands()), (200, 3));
    let list = jobs.get("action=list&userId=alice").await;
    assert_eq!((list.status, list.db_commands()), (200, 1));
}

#[tokio::test]
async fn another_users_task_is_out_of_reach() {
    let jobs = Service::start().await;
    let failed = jobs.failed_task("alice", 1, 3).await;
    let running = jobs
        .create_demo("alice", json!({ "steps": 100, "stepMs": 100 }))
        .await;
    let before = jobs.snapshot().await;

    let get = jobs
        .get(&format!("action=get&taskId={failed}&userId=mallory"))
        .await;
    assert_eq!(
        (get.status, get.body["code"].as_str()),
        (404, Some("TASK_NOT_FOUND"))
    );
    let retry = jobs.retry(&failed, "mallory").await;
    assert_eq!(
        (retry.status, retry.body["code"].as_str()),
        (403, Some("NOT_OWNER"))
    );
    let cancel = jobs
        .post("cancel", json!({ "taskId": running, "userId": "mallory" }))
        .await;
    assert_eq!(
        (cancel.status, cancel.body["code"].as_str()),
        (403, Some("NOT_OWNER"))
    );
    let list = jobs.get("action=list&userId=mallory").await;
    assert_eq!(list.body["tasks"], json!([]));

    let after = jobs.snapshot().await;
    let failed_doc = |docs: &[mongodb::bson::Document]| {
        docs.iter()
            .find(|d| d.get_str("taskId").unwrap() == failed)
            .cloned()
    };
    assert_eq!(failed_doc(&after), failed_doc(&before));
    assert_ne!(
        jobs.task(&running).await.get_str("status").unwrap(),
        "cancelled"
    );
    jobs.post("cancel", json!({ "taskId": running, "userId": "alice" }))
        .await;
}

#[tokio::test]
async fn cancel_stops_a_running_task() {
    let jobs = Service::start().await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 50, "stepMs": 40 }))
        .await;
    jobs.wait_for_status(&id, "processing").await;
    let reply = jobs
        .post("cancel", json!({ "taskId": id, "userId": "alice" }))
        .await;
    assert_eq!(reply.body, json!({ "success": true, "taskId": id }));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let task = jobs.task(&id).await;
    assert_eq!(
        task.get_str("status").unwrap(),
        "cancelled",
        "the worker's later writes are fenced off"
    );
    assert!(task.get("lease").is_none());

    let again = jobs
        .post("cancel", json!({ "taskId": id, "userId": "alice" }))
        .await;
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (409, Some("NOT_CANCELLABLE"))
    );
    let retry = jobs.retry(&id, "alice").await;
    assert_eq!(retry.status, 409);
}

#[tokio::test]
async fn list_pages_newest_first() {
    let jobs = Service::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            jobs.create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
                .await,
        );
    }
    jobs.create_demo("bob", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    ids.reverse();

    let mut seen = Vec::new();
    let mut query = "action=list&userId=alice&limit=2".to_owned();
    loop {
        let page = jobs.get(&query).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["taskId"].as_str().unwrap().to_owned()),
        );
        match page.body["nextCursor"].as_str() {
            Some(cursor) => query = format!("action=list&userId=alice&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    for id in &ids {
        jobs.wait_for_status(id, "completed").await;
    }
    let completed = jobs.get("action=list&userId=alice&status=completed").await;
    assert_eq!(completed.body["tasks"].as_array().unwrap().len(), 5);
    let failed = jobs.get("action=list&userId=alice&status=failed").await;
    assert_eq!(failed.body["tasks"], json!([]));
}
