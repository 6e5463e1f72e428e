//! The store's upkeep: the indexes of `tasks`, created once per process before the first
//! insert, and the backfill of `retriesLeft` on tasks stored before it existed.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::IndexOptions;

use super::Store;
use crate::error::{JobsError, Result};
use crate::task::{Task, TaskId};

/// Tasks filled in by one statement-per-task `update` of the backfill.
const BACKFILL_BATCH: i64 = 500;
/// How long the backfill may run at a process's first insert; the sweep carries on.
pub const BACKFILL_BUDGET: Duration = Duration::from_secs(2);
/// The collection that records finished backfills, one document each.
const MIGRATIONS: &str = "migrations";
const RETRIES_LEFT: &str = "retriesLeft";

/// The indexes of the `tasks` collection: `taskId` unique; a user's tasks newest first, with
/// and without a status filter, in exactly `list`'s sort order (so MongoDB serves a page from
/// the index without a blocking sort; `brandId` and `errorGroup` only filter what that walk
/// finds, and `groups` and bulk retry's `failed_page` match a prefix of the second); and the
/// sweeper's scan by status and age.
fn task_indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "taskId": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build(),
        IndexModel::builder()
            .keys(doc! { "userId": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "userId": 1, "status": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "status": 1, "updatedAt": 1 })
            .build(),
    ]
}

impl Store {
    /// Creates the indexes once per process, before the first insert.
    pub(crate) async fn ensure_indexes(&self) -> Result<()> {
        self.indexes
            .get_or_try_init(|| async {
                let tasks = self.tasks().await?;
                self.run(tasks.create_indexes(task_indexes())).await?;
                // Never in the way of a create: what is left, the sweep carries on.
                if let Err(error) = self.backfill_retries_left(BACKFILL_BUDGET).await {
                    tracing::warn!(%error, "backfill of retriesLeft stopped; the sweep carries on");
                }
                Ok::<_, JobsError>(())
            })
            .await
            .copied()
    }

    /// Fills in `retriesLeft` on tasks stored before it existed, in passes of
    /// [`BACKFILL_BATCH`], until none is left or `budget` is spent. Idempotent and resumable:
    /// it only touches tasks without the field, each statement pinned on the counts it read (a
    /// task changed meanwhile is left for the next pass); once a pass finds none, a record in
    /// `migrations` spares later processes the scan. Returns how many it filled in.
    pub async fn backfill_retries_left(&self, budget: Duration) -> Result<u64> {
        if self.backfilled.initialized() {
            return Ok(0);
        }
        let database = self.database().await?;
        let done = database.collection::<Document>(MIGRATIONS);
        if self
            .run(done.find_one(doc! { "_id": RETRIES_LEFT }))
            .await?
            .is_some()
        {
            let _ = self.backfilled.set(());
            return Ok(0);
        }
        let (started, mut filled) = (Instant::now(), 0);
        let tasks = self.tasks().await?;
        loop {
            let find = tasks
                .find(doc! { "retriesLeft": { "$exists": false } })
                .projection(doc! { "payload": 0, "events": 0, "errorHistory": 0 })
                .limit(BACKFILL_BATCH);
            let legacy: Vec<Task> = self.run(async { find.await?.try_collect().await }).await?;
            if legacy.is_empty() {
                let record = doc! { "$set": { "doneAt": DateTime::now() } };
                let upsert = done.update_one(doc! { "_id": RETRIES_LEFT }, record);
                self.run(upsert.upsert(true)).await?;
                let _ = self.backfilled.set(());
                tracing::info!(filled, "backfill of retriesLeft finished");
                return Ok(filled);
            }
            filled += self.fill_retries_left(&legacy).await?;
            if started.elapsed() >= budget {
                tracing::info!(filled, "backfill of retriesLeft paused at its budget");
                return Ok(filled);
            }
        }
    }

    /// Stores `retriesLeft` on those of `tasks` that lack it, as their counts say, in ONE
    /// command; a task whose counts changed since it was read is left alone. Returns how many
    /// it filled in.
    pub(crate) async fn fill_retries_left(&self, tasks: &[Task]) -> Result<u64> {
        let statements: Vec<Document> = tasks
            .iter()
            .filter(|t| t.stored_retries_left.is_none())
            .map(|t| pinned_fill(&t.task_id, t.retry_count, t.max_retries, t.retries_left()))
            .collect();
        self.update_many_statements(statements).await
    }
}

/// One statement of [`Store::fill_retries_left`].
fn pinned_fill(task_id: &TaskId, retry_count: i32, max_retries: i32, left: i32) -> Document {
    doc! {
        "q": { "taskId": task_id.as_str(), "retriesLeft": { "$exists": false },
               "retryCount": retry_count, "maxRetries": max_retries },
        "u": { "$set": { "retriesLeft": left } },
        "multi": false,
    }
}
