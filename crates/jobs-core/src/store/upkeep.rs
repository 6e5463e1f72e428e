//! The store's upkeep: the indexes of `tasks`, created once per process before the first
//! insert.

use mongodb::IndexModel;
use mongodb::bson::doc;
use mongodb::options::IndexOptions;

use super::Store;
use crate::error::{JobsError, Result};

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
                Ok::<_, JobsError>(())
            })
            .await
            .copied()
    }
}
