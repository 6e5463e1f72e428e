//! A rolling deploy: tasks the previous version stores (without `retriesLeft`) after this
//! version's upkeep has finished are retried within their budget, alone and in bulk.

use mongodb::bson::doc;
use serde_json::json;

use crate::support::Service;

/// Strips `retriesLeft` from the given tasks, as the previous version would have stored them.
async fn as_the_previous_version_stored(jobs: &Service, ids: &[&str]) {
    let unset = jobs
        .tasks
        .update_many(
            doc! { "taskId": { "$in": ids } },
            doc! { "$unset": { "retriesLeft": "" } },
        )
        .await
        .unwrap();
    assert_eq!(unset.modified_count, ids.len() as u64);
}

#[tokio::test]
async fn a_task_stored_by_the_previous_version_is_retried_within_its_budget() {
    let jobs = Service::start().await;
    // Fails on every attempt, with one retry allowed.
    let id = jobs.failed_task("alice", 9, 1).await;
    as_the_previous_version_stored(&jobs, &[&id]).await;

    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let failed = jobs.wait_for_status(&id, "failed").await;
    assert_eq!(failed.get_i32("retryCount"), Ok(1));
    assert_eq!(
        failed.get_i32("retriesLeft"),
        Ok(0),
        "filled in, then spent"
    );

    as_the_previous_version_stored(&jobs, &[&id]).await;
    let refused = jobs.retry(&id, "alice").await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(
        refused.body,
        json!({ "error": "Max retries (1) reached.", "code": "MAX_RETRIES" })
    );
}

#[tokio::test]
async fn a_bulk_retry_takes_tasks_stored_by_the_previous_version() {
    let jobs = Service::start().await;
    let legacy = jobs.failed_task("alice", 1, 2).await;
    let current = jobs.failed_task("alice", 1, 2).await;
    let spent = jobs.failed_task("alice", 1, 0).await;
    as_the_previous_version_stored(&jobs, &[&legacy, &spent]).await;

    let reply = jobs
        .post(
            "retryMany",
            json!({ "taskIds": [legacy, current, spent], "userId": "alice" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["retried"], json!([legacy, current]));
    assert_eq!(
        reply.body["skipped"],
        json!([{ "taskId": spent, "code": "MAX_RETRIES" }])
    );
    for id in [&legacy, &current] {
        let done = jobs.wait_for_status(id, "completed").await;
        assert_eq!(
            (done.get_i32("retryCount"), done.get_i32("retriesLeft")),
            (Ok(1), Ok(1))
        );
    }
}
