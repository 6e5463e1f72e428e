//! The store's upkeep against SecantusDB: `retriesLeft` filled in on tasks stored before it
//! existed, in bounded passes, idempotent and resumable, and then never scanned for again.

use std::time::Duration;

use jobs_core::task::TaskStatus;
use jobs_core::testing::{self, assert_legal, task};
use mongodb::bson::{self, Document, doc};

/// `count` failed tasks as the previous version stored them: no `retriesLeft`, with assorted
/// budgets (`maxRetries` 0..=4, `retryCount` up to it).
fn legacy(count: usize) -> Vec<Document> {
    (0..count)
        .map(|i| {
            let max = (i % 5) as i32;
            let used = (i % 3) as i32 % (max + 1);
            let built = task()
                .status(TaskStatus::Failed)
                .max_retries(max)
                .retry_count(used)
                .build();
            let mut stored = bson::to_document(&built).unwrap();
            stored
                .remove("retriesLeft")
                .expect("the fixture stores retriesLeft");
            stored
        })
        .collect()
}

#[tokio::test]
async fn retries_left_is_backfilled_in_bounded_passes_then_never_again() {
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    let uri = testing::test_mongodb_uri();
    let store = testing::store_on(&uri, &db);
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let tasks = client.database(&db).collection::<Document>("tasks");
    tasks.insert_many(legacy(1_200)).await.unwrap();
    let missing = || tasks.count_documents(doc! { "retriesLeft": { "$exists": false } });

    // A spent budget stops after one pass of 500; the next call resumes where it stopped.
    let mut passes = Vec::new();
    for _ in 0..3 {
        passes.push(store.backfill_retries_left(Duration::ZERO).await.unwrap());
    }
    assert_eq!(passes, [500, 500, 200]);
    assert_eq!(missing().await.unwrap(), 0);
    // The pass that found none left a record: done, and every task as the rule says.
    assert_eq!(
        store.backfill_retries_left(Duration::ZERO).await.unwrap(),
        0
    );
    let stored: Vec<jobs_core::task::Task> = {
        let typed = client.database(&db).collection("tasks");
        let mut cursor = typed.find(doc! {}).await.unwrap();
        let mut all = Vec::new();
        while cursor.advance().await.unwrap() {
            all.push(cursor.deserialize_current().unwrap());
        }
        all
    };
    assert_eq!(stored.len(), 1_200);
    stored.iter().for_each(assert_legal);

    // Idempotent: a task the previous version stores after that (a rolling deploy) is not
    // scanned for by this process or a new one (the record spares them the scan); `retry`
    // and `retryMany` fill it in when they meet it (tests/api/upgrade.rs).
    tasks.insert_many(legacy(1)).await.unwrap();
    let fresh_process = testing::store_on(&uri, &db);
    assert_eq!(
        fresh_process
            .backfill_retries_left(Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(missing().await.unwrap(), 1);
}
