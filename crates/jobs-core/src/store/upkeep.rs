//! The store's upkeep: the indexes of `tasks`, created once per process before the first
//! insert, and the migration that stores `retriesLeft` on tasks stored before it existed.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use serde::Deserialize;

use super::Store;
use crate::error::{JobsError, Result};
use crate::task::{Task, TaskId};

/// Tasks one pass of the migration reads (by `taskId`, from where the last pass stopped) and at
/// most fixes, in one statement-per-task `update`.
pub const MIGRATION_PASS: i64 = 100;
/// How long the migration may run at a process's first insert (cut short there, mid-pass if
/// need be).
pub const MIGRATION_BUDGET: Duration = Duration::from_secs(1);
/// How long each `sweep` carries it on.
pub const MIGRATION_SWEEP_BUDGET: Duration = Duration::from_secs(20);
/// The collection that records migrations: where each stands, and when it finished.
const MIGRATIONS: &str = "migrations";
const RETRIES_LEFT: &str = "retriesLeft";

/// The indexes of the `tasks` collection: `taskId` unique; a user's tasks newest first, with
/// and without a status filter, in exactly `list`'s sort order (so MongoDB serves a page from
/// the index without a blocking sort; `brandId` only filters what that walk finds; the second
/// also serves the `$match` of `groups`); a user's tasks in one status and error group, newest
/// first (bulk retry's `failed_page` by group); the sweeper's scan by status and age; and a
/// user's tasks by tag and by type, newest first (search).
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
            .keys(doc! { "userId": 1, "status": 1, "errorGroup": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "status": 1, "updatedAt": 1 })
            .build(),
        // Search (docs/spec.md §19): a user's tasks with a tag, or of a type, newest first.
        IndexModel::builder()
            .keys(doc! { "userId": 1, "tags": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "userId": 1, "type": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        // The failure chart (docs/spec.md §22): a user's tasks changed in the last day.
        IndexModel::builder()
            .keys(doc! { "userId": 1, "updatedAt": -1 })
            .build(),
    ]
}

/// The counts of a task, all the migration reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    task_id: TaskId,
    retry_count: i32,
    max_retries: i32,
    retries_left: Option<i32>,
}

impl Counts {
    /// The `retriesLeft` the counts call for, unless it is stored already.
    fn wrong(&self) -> Option<i32> {
        let right = (self.max_retries - self.retry_count).max(0);
        (self.retries_left != Some(right)).then_some(right)
    }
}

impl Store {
    /// Creates the indexes once per process, before the first insert, then gives the
    /// `retriesLeft` migration one bounded turn ([`MIGRATION_BUDGET`]).
    pub(crate) async fn ensure_indexes(&self) -> Result<()> {
        self.indexes
            .get_or_try_init(|| async {
                let tasks = self.tasks().await?;
                self.run(tasks.create_indexes(task_indexes())).await?;
                // At most MIGRATION_BUDGET in the way of a create, a pass cut short included
                // (its fixes are pinned, so a pass stopped anywhere is safe to repeat): what is
                // left, the sweep carries on.
                let turn = self.migrate_retries_left(MIGRATION_BUDGET);
                match tokio::time::timeout(MIGRATION_BUDGET, turn).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "migration of retriesLeft stopped; the sweep carries on");
                    }
                    Err(_) => tracing::info!("migration of retriesLeft paused; the sweep carries on"),
                }
                Ok::<_, JobsError>(())
            })
            .await
            .copied()
    }

    /// Stores `retriesLeft` on tasks stored before it existed (and corrects one that does not
    /// match the counts), in passes of [`MIGRATION_PASS`] tasks in `taskId` order, until all
    /// were seen or `budget` is spent. Resumable: each pass records in `migrations` the last
    /// `taskId` it reached, and the next starts after it (one indexed read per pass, whatever
    /// the collection's size); once a pass reaches the end the record says so, and later calls,
    /// in this process or another, cost one read or nothing. Idempotent: each fix is pinned on
    /// the counts it read, so a task changed meanwhile is left as its own transition wrote it.
    /// Returns how many tasks it fixed.
    pub async fn migrate_retries_left(&self, budget: Duration) -> Result<u64> {
        if self.migrated.initialized() {
            return Ok(0);
        }
        let database = self.database().await?;
        let migrations = database.collection::<Document>(MIGRATIONS);
        let record = self
            .run(migrations.find_one(doc! { "_id": RETRIES_LEFT }))
            .await?;
        if record.as_ref().is_some_and(|r| r.contains_key("doneAt")) {
            let _ = self.migrated.set(());
            return Ok(0);
        }
        let mut after = record.and_then(|r| r.get_str("after").ok().map(str::to_owned));
        let (started, mut fixed) = (Instant::now(), 0);
        let tasks = database.collection::<Counts>("tasks");
        loop {
            let filter = match &after {
                Some(id) => doc! { "taskId": { "$gt": id.as_str() } },
                None => doc! {},
            };
            let find = tasks
                .find(filter)
                .sort(doc! { "taskId": 1 })
                .projection(
                    doc! { "_id": 0, "taskId": 1, "retryCount": 1, "maxRetries": 1,
                    "retriesLeft": 1 },
                )
                .limit(MIGRATION_PASS)
                .batch_size(MIGRATION_PASS as u32);
            let page: Vec<Counts> = self.run(async { find.await?.try_collect().await }).await?;
            let fixes: Vec<Document> = page.iter().filter_map(pinned_fix).collect();
            fixed += self.update_many_statements(fixes).await?;
            let done = (page.len() as i64) < MIGRATION_PASS;
            after = page.last().map(|c| c.task_id.to_string()).or(after);
            let mut mark = doc! { "after": after.clone().map_or(Bson::Null, Bson::String) };
            if done {
                mark.insert("doneAt", DateTime::now());
            }
            let upsert = migrations.update_one(doc! { "_id": RETRIES_LEFT }, doc! { "$set": mark });
            self.run(upsert.upsert(true)).await?;
            if done {
                let _ = self.migrated.set(());
                tracing::info!(fixed, "migration of retriesLeft finished");
                return Ok(fixed);
            }
            if started.elapsed() >= budget {
                tracing::info!(
                    fixed,
                    after = after.as_deref(),
                    "migration of retriesLeft paused at its budget"
                );
                return Ok(fixed);
            }
        }
    }

    /// Stores `retriesLeft` on those of `tasks` (as read just before) whose stored value does
    /// not match their counts, in ONE command, each pinned on what was read. Returns how many
    /// it fixed. Bulk retry calls it for a task an earlier version stored during a rolling
    /// deploy, after the migration.
    pub(crate) async fn fill_retries_left(&self, tasks: &[Task]) -> Result<u64> {
        let statements: Vec<Document> = tasks
            .iter()
            .filter_map(|t| {
                pinned_fix(&Counts {
                    task_id: t.task_id.clone(),
                    retry_count: t.retry_count,
                    max_retries: t.max_retries,
                    retries_left: t.stored_retries_left,
                })
            })
            .collect();
        self.update_many_statements(statements).await
    }
}

/// One statement that sets `retriesLeft` as `counts` call for, pinned on all of them, or
/// `None` when it is right already.
fn pinned_fix(counts: &Counts) -> Option<Document> {
    let right = counts.wrong()?;
    // `null` matches a missing field too.
    let stored = counts.retries_left.map_or(Bson::Null, Bson::Int32);
    Some(doc! {
        "q": { "taskId": counts.task_id.as_str(), "retryCount": counts.retry_count,
               "maxRetries": counts.max_retries, "retriesLeft": stored },
        "u": { "$set": { "retriesLeft": right } },
        "multi": false,
    })
}
