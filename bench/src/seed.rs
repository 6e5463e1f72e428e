//! Test data, made with jobs-core's public test fixtures (`jobs_core::testing`, the `testing`
//! feature): each task as the service would have left it in its state, inserted into a
//! collection whose indexes the service's own store created.

use std::time::Instant;

use anyhow::{Context, Result};
use jobs_core::task::{Task, TaskStatus};
use jobs_core::testing::{self, TaskFixture};
use mongodb::Database;
use mongodb::bson::{Document, doc};

/// Size of each task's `payload` as stored (BSON bytes).
pub const PAYLOAD_BYTES: usize = 500;
/// Seconds between two consecutive tasks' `createdAt`.
pub const SPREAD_SECONDS: i64 = 7;
pub const INSERT_BATCH: usize = 1_000;

/// A payload of exactly [`PAYLOAD_BYTES`] as BSON, shaped like the `demo` processor's input.
pub fn payload() -> Result<Document> {
    let size = |payload: &Document| -> Result<usize> {
        let mut bytes = Vec::new();
        payload.to_writer(&mut bytes)?;
        Ok(bytes.len())
    };
    let mut payload = doc! { "steps": 1, "stepMs": 0, "note": "" };
    let padding = PAYLOAD_BYTES
        .checked_sub(size(&payload)?)
        .context("payload too large")?;
    payload.insert("note", "x".repeat(padding));
    anyhow::ensure!(
        size(&payload)? == PAYLOAD_BYTES,
        "payload of the wrong size"
    );
    Ok(payload)
}

/// `count` fixture tasks of `user` in `status`, with the fixture's defaults.
pub fn plain(user: &str, status: TaskStatus, count: usize) -> Vec<Task> {
    let fixture = testing::task().owner(user).status(status);
    (0..count).map(|_| fixture.build()).collect()
}

/// `count` `demo` tasks of `user` with [`payload`]s, oldest first, the i-th as `shape(i,
/// fixture)` makes it: `createdAt` [`SPREAD_SECONDS`] apart up to now, each last updated a
/// second after it was created, with a timeline of `events` events.
pub fn spread<F>(user: &str, count: usize, events: usize, shape: F) -> Result<Vec<Task>>
where
    F: Fn(usize, TaskFixture) -> TaskFixture,
{
    let fixture = testing::task()
        .owner(user)
        .kind("demo", payload()?)
        .events_len(events);
    let task = |i: usize| {
        let ago = (count - i) as i64 * SPREAD_SECONDS;
        let timed = fixture
            .clone()
            .created_secs_ago(ago)
            .updated_secs_ago(ago - 1);
        shape(i, timed).build()
    };
    Ok((0..count).map(task).collect())
}

/// `tasks` as the whole `tasks` collection of `db`: dropped, the first task stored through the
/// service's store (`Store::insert`, which creates the service's indexes before its first
/// insert, as in production), the rest with `insert_many` in batches. Seconds taken.
pub async fn insert(uri: &str, db: &Database, tasks: &[Task]) -> Result<f64> {
    let started = Instant::now();
    let collection = db.collection::<Task>("tasks");
    collection.drop().await?;
    let (first, rest) = tasks.split_first().context("no task to insert")?;
    testing::store_on(uri, db.name()).insert(first).await?;
    for batch in rest.chunks(INSERT_BATCH) {
        collection.insert_many(batch).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_their_size_and_tasks_their_times() {
        let mut bytes = Vec::new();
        payload().unwrap().to_writer(&mut bytes).unwrap();
        assert_eq!(bytes.len(), PAYLOAD_BYTES);
        let failed = |i, t: TaskFixture| {
            if i == 0 {
                t.status(TaskStatus::Failed)
            } else {
                t
            }
        };
        let made = spread("u", 3, 2, failed).unwrap();
        let spread = made[1].created_at.timestamp_millis() - made[0].created_at.timestamp_millis();
        assert!((spread - SPREAD_SECONDS * 1000).abs() < 1000, "{spread}");
        assert_eq!(
            [made[0].status, made[1].status],
            [TaskStatus::Failed, TaskStatus::Queued]
        );
        assert_eq!(made[2].events.len(), 2);
        made.iter().for_each(testing::assert_legal);
    }
}
