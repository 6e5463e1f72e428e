//! Upgrading: the `retriesLeft` migration runs where the indexes are made (a process's first
//! insert) and on each `sweep`; during a rolling deploy, tasks the previous version stores
//! (without `retriesLeft`) or retries (leaving it stale) are retried within their budget,
//! alone and in bulk.

use jobs_core::task::TaskStatus;
use jobs_core::testing::task;
use mongodb::bson::{Document, doc};
use serde_json::json;

use crate::support::Service;

/// `count` failed tasks as the previous version stored them, straight into the database (no
/// insert of this version's has run yet); their ids.
async fn seed_legacy(jobs: &Service, count: usize) -> Vec<String> {
    let built: Vec<_> = (0..count)
        .map(|i| {
            let failed = task()
                .status(TaskStatus::Failed)
                .retry_count((i % 3) as i32);
            failed.stored_retries_left(None).build()
        })
        .collect();
    let ids = built.iter().map(|t| t.task_id.to_string()).collect();
    let documents: Vec<Document> = built
        .iter()
        .map(|t| mongodb::bson::to_document(t).unwrap())
        .collect();
    jobs.tasks.insert_many(documents).await.unwrap();
    ids
}

/// Every task has `retriesLeft` as its counts say, and the migration is recorded done.
async fn assert_migrated(jobs: &Service, count: usize) {
    let tasks = jobs.snapshot().await;
    assert!(tasks.len() >= count);
    for stored in &tasks {
        let (used, max) = (stored.get_i32("retryCount"), stored.get_i32("maxRetries"));
        let left = max.unwrap() - used.unwrap();
        assert_eq!(stored.get_i32("retriesLeft"), Ok(left), "{stored}");
    }
    let record = jobs
        .tasks
        .client()
        .database(&jobs.db_name)
        .collection::<Document>("migrations")
        .find_one(doc! { "_id": "retriesLeft" })
        .await
        .unwrap()
        .expect("the migration's record");
    assert!(record.contains_key("doneAt"), "{record}");
}

#[tokio::test]
async fn the_first_create_of_a_process_migrates_the_tasks_stored_before() {
    let jobs = Service::start().await;
    seed_legacy(&jobs, 20).await;
    let created = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice", "payload": { "steps": 1 } }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_migrated(&jobs, 21).await;
}

#[tokio::test]
async fn sweep_migrates_the_tasks_stored_before() {
    let jobs = Service::start().await;
    seed_legacy(&jobs, 60).await;
    let sweep = jobs.get("action=sweep").await;
    assert_eq!(sweep.status, 200, "{}", sweep.body);
    assert_migrated(&jobs, 60).await;
}

/// `retriesLeft` as an earlier version's retry or undo left it: one too many (it moved
/// `retryCount` alone) or one too few.
#[tokio::test]
async fn a_stale_retries_left_neither_grants_nor_refuses_a_retry() {
    let jobs = Service::start().await;
    let spent = jobs.failed_task("alice", 9, 1).await;
    let retried = jobs.retry(&spent, "alice").await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    jobs.wait_for_status(&spent, "failed").await;
    let low = jobs.failed_task("alice", 1, 2).await;
    let low_too = jobs.failed_task("alice", 1, 2).await;
    let stale = |id: &str, left: i32| {
        let tasks = jobs.tasks.clone();
        let id = id.to_owned();
        async move {
            let set = doc! { "$set": { "retriesLeft": left } };
            let done = tasks.update_one(doc! { "taskId": &id }, set).await.unwrap();
            assert_eq!(done.matched_count, 1);
        }
    };
    stale(&spent, 1).await;
    stale(&low, 0).await;
    stale(&low_too, 0).await;

    let refused = jobs.retry(&spent, "alice").await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (409, Some("MAX_RETRIES"))
    );
    let reply = jobs.retry(&low, "alice").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let bulk = jobs
        .post(
            "retryMany",
            json!({ "taskIds": [spent, low_too], "userId": "alice" }),
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    assert_eq!(bulk.body["retried"], json!([low_too]));
    assert_eq!(
        bulk.body["skipped"],
        json!([{ "taskId": spent, "code": "MAX_RETRIES" }])
    );
    for id in [&low, &low_too] {
        let done = jobs.wait_for_status(id, "completed").await;
        assert_eq!(
            (done.get_i32("retryCount"), done.get_i32("retriesLeft")),
            (Ok(1), Ok(1)),
            "{done}"
        );
    }
    let untouched = jobs.task(&spent).await;
    assert_eq!(
        (untouched.get_str("status"), untouched.get_i32("retryCount")),
        (Ok("failed"), Ok(1))
    );
}

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
