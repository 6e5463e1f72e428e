//! The store's upkeep against SecantusDB: the `retriesLeft` migration stores the field on tasks
//! stored before it existed (and corrects a wrong one), in bounded passes that resume where the
//! last one stopped, in this process or another, and then costs nothing.

use std::time::Duration;

use jobs_core::store::{MIGRATION_PASS, count_commands};
use jobs_core::task::{Task, TaskStatus};
use jobs_core::testing::{self, assert_legal, task};
use mongodb::bson::{Document, doc};

/// A failed task with an assorted budget (`maxRetries` 0..=4, `retryCount` up to it) and
/// `retriesLeft` as `stored` says: absent as an earlier version stored it, wrong as an earlier
/// version's retry left it, or right.
fn seeded(i: usize, stored: Stored) -> Task {
    let max = (i % 5) as i32;
    let used = (i % 3) as i32 % (max + 1);
    let fixture = task()
        .status(TaskStatus::Failed)
        .max_retries(max)
        .retry_count(used);
    match stored {
        Stored::Absent => fixture.stored_retries_left(None),
        Stored::Wrong => fixture.stored_retries_left(Some(max - used + 1)),
        Stored::Right => fixture,
    }
    .build()
}

#[derive(Clone, Copy)]
enum Stored {
    Absent,
    Wrong,
    Right,
}

#[tokio::test]
async fn retries_left_is_migrated_in_resumable_passes_then_never_again() {
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    let uri = testing::test_mongodb_uri();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let tasks = client.database(&db).collection::<Task>("tasks");
    let pass = MIGRATION_PASS as usize;
    // Two and a half passes of tasks: every third right already, the rest absent or wrong.
    let count = pass * 5 / 2;
    let kinds = [Stored::Absent, Stored::Wrong, Stored::Right];
    let mut all: Vec<Task> = (0..count).map(|i| seeded(i, kinds[i % 3])).collect();
    // One stored with `retriesLeft: null`, which counts as missing.
    let mut null = mongodb::bson::to_document(&all[0]).unwrap();
    null.insert("retriesLeft", mongodb::bson::Bson::Null);
    let raw = client.database(&db).collection::<Document>("tasks");
    raw.insert_one(null).await.unwrap();
    tasks.insert_many(&all[1..]).await.unwrap();
    all.sort_by(|a, b| a.task_id.as_str().cmp(b.task_id.as_str()));
    let to_fix = |range: std::ops::Range<usize>| {
        all[range]
            .iter()
            .filter(|t| t.stored_retries_left != Some(t.retries_left()))
            .count() as u64
    };

    // A spent budget stops after one pass, in `taskId` order, in at most four commands (the
    // record, the page, the fixes, the record again), whatever the collection's size.
    let first = testing::store_on(&uri, &db);
    let (fixed, commands) = count_commands(first.migrate_retries_left(Duration::ZERO)).await;
    assert_eq!(fixed.unwrap(), to_fix(0..pass), "the first pass");
    assert!(commands <= 4, "one pass is {commands} commands");
    // Another process resumes after the last task the first pass reached.
    let second = testing::store_on(&uri, &db);
    let fixed = second.migrate_retries_left(Duration::ZERO).await.unwrap();
    assert_eq!(
        fixed,
        to_fix(pass..2 * pass),
        "the second pass, where the first stopped"
    );
    // With a budget, it runs to the end: the short page finishes it.
    let fixed = second
        .migrate_retries_left(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(fixed, to_fix(2 * pass..count), "the rest");

    let mut cursor = tasks.find(doc! {}).await.unwrap();
    let mut stored = Vec::new();
    while cursor.advance().await.unwrap() {
        stored.push(cursor.deserialize_current().unwrap());
    }
    assert_eq!(stored.len(), count);
    for task in &stored {
        assert_legal(task);
        assert_eq!(
            task.stored_retries_left,
            Some(task.retries_left()),
            "{task:?}"
        );
    }

    // Done: this process does not look again, a new one reads the record once.
    let (fixed, commands) = count_commands(second.migrate_retries_left(Duration::ZERO)).await;
    assert_eq!((fixed.unwrap(), commands), (0, 0), "done, in this process");
    let fresh = testing::store_on(&uri, &db);
    let (fixed, commands) = count_commands(fresh.migrate_retries_left(Duration::ZERO)).await;
    assert_eq!(
        (fixed.unwrap(), commands),
        (0, 1),
        "done, for a new process"
    );
    let record = client
        .database(&db)
        .collection::<Document>("migrations")
        .find_one(doc! { "_id": "retriesLeft" })
        .await
        .unwrap()
        .expect("the migration's record");
    assert!(record.contains_key("doneAt"), "{record:?}");
}
