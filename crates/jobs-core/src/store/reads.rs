//! What actions read from `tasks`, each read named after the question it answers.

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::{PRIMARY, Store};
use crate::error::Result;
use crate::selection::{BulkFilter, Cursor, ListQuery};
use crate::task::{Handoff, Task, TaskId, TaskStatus, UserId};

/// The aggregation of `groups` (docs/spec.md §14): a user's tasks in `status` grouped by
/// `errorGroup`, largest groups first, at most 50, each with its newest task's template and id.
/// The `$match` is exactly a prefix of an index (`{userId, status, ...}`): a test on
/// `errorGroup` there (`$type`, `$ne: null`) makes secantusd-rs examine every document for it,
/// about five times slower, so tasks without a cause are grouped under `null` and that group
/// dropped after. The newest of a group is the `$max` of a document that starts with
/// `updatedAt` (ties: the greater `taskId`), so only the groups are sorted.
fn error_groups_pipeline(user: &UserId, status: TaskStatus) -> [Document; 6] {
    [
        doc! { "$match": { "userId": user.as_str(), "status": status } },
        doc! { "$group": {
            "_id": "$errorGroup",
            "count": { "$sum": 1 },
            "newest": { "$max": {
                "at": "$updatedAt", "taskId": "$taskId", "template": "$errorTemplate",
            } },
        } },
        doc! { "$match": { "_id": { "$ne": Bson::Null } } },
        doc! { "$sort": { "count": -1, "newest.at": -1 } },
        doc! { "$limit": 50 },
        doc! { "$project": { "count": 1, "template": "$newest.template",
        "lastAt": "$newest.at", "exampleTaskId": "$newest.taskId" } },
    ]
}

/// What a summary of a task leaves out (`list` and `watch`): its payload with its versions, its
/// timeline and its steps (`get` has them). `prefix` is `""` for a task, `"fullDocument."` for a
/// change event.
pub(crate) fn summary_projection(prefix: &str) -> Document {
    [
        "payload",
        "payloadHistory",
        "payloadBase",
        "events",
        "steps",
    ]
    .into_iter()
    .map(|field| (format!("{prefix}{field}"), Bson::Int32(0)))
    .collect()
}

/// Newest first, after `after`: `createdAt` older, or the same and a smaller `taskId`.
fn after_cursor(after: &Cursor) -> Vec<Document> {
    vec![
        doc! { "createdAt": { "$lt": after.created_at } },
        doc! { "createdAt": after.created_at, "taskId": { "$lt": after.task_id.as_str() } },
    ]
}

/// The tasks whose current hand-off is one of `handoffs`. Dedup ids are unique per hand-off,
/// so `$in` on both fields cannot pair one task's id with another's hand-off.
pub(crate) fn carrying(handoffs: &[(TaskId, Handoff)]) -> Document {
    let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
    let dedup: Vec<&str> = handoffs.iter().map(|(_, h)| h.dedup_id.as_str()).collect();
    doc! { "taskId": { "$in": ids }, "handoff.dedupId": { "$in": dedup } }
}

/// A user's `failed` tasks that `filter` selects (bulk retry by filter).
pub(crate) fn failed_selection(user: &UserId, filter: &BulkFilter) -> Document {
    let mut query = doc! { "userId": user.as_str(), "status": TaskStatus::Failed };
    if let Some(kind) = &filter.kind {
        query.insert("type", kind.as_str());
    }
    if let Some(group) = &filter.error_group {
        query.insert("errorGroup", group.as_str());
    }
    if let Some(brand) = &filter.brand_id {
        query.insert("brandId", brand.as_str());
    }
    query
}

/// What a bulk re-queue did, read back ([`Store::requeued_with`]).
#[derive(Debug, Default, PartialEq)]
pub struct ReadBack {
    /// The tasks that carry the batch's hand-off.
    pub moved: Vec<TaskId>,
    /// Tasks not moved whose counts leave no retry.
    pub out_of_retries: Vec<TaskId>,
}

/// A page of `list`: its tasks and, when more follow, where the next page starts.
pub struct Page {
    /// At most the requested number of tasks, newest first, payloads left out.
    pub tasks: Vec<Task>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl Store {
    /// A task by id, whoever owns it.
    pub async fn find(&self, task_id: &TaskId) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(tasks.find_one(doc! { "taskId": task_id.as_str() }))
            .await
    }

    /// A task of this user; another user's task is indistinguishable from a missing one.
    pub async fn find_owned(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(tasks.find_one(doc! { "taskId": task_id.as_str(), "userId": user_id.as_str() }))
            .await
    }

    /// One page of a user's tasks, newest first, in one `find` round trip: one task more than
    /// the page is read to know whether another page follows. Without `brandId` or
    /// `errorGroup` the filter is a prefix of an index and the sort its order; payloads and
    /// timelines are left out (`get` has them).
    pub async fn list_for(&self, user: &UserId, query: &ListQuery) -> Result<Page> {
        let mut filter = doc! { "userId": user.as_str() };
        if let Some(status) = query.status {
            filter.insert("status", status);
        }
        if let Some(brand) = &query.brand_id {
            filter.insert("brandId", brand.as_str());
        }
        if let Some(group) = &query.error_group {
            filter.insert("errorGroup", group.as_str());
        }
        if let Some(after) = &query.after {
            filter.insert("$or", after_cursor(after));
        }
        let tasks = self.tasks().await?;
        let find = tasks
            .find(filter)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .projection(summary_projection(""))
            .limit(query.limit + 1)
            .batch_size(query.limit as u32 + 1);
        let mut tasks: Vec<Task> = self.run(async { find.await?.try_collect().await }).await?;
        let next = (tasks.len() as i64 > query.limit).then(|| {
            tasks.truncate(query.limit as usize);
            let last = tasks.last().expect("a full page has a last task");
            Cursor {
                created_at: last.created_at,
                task_id: last.task_id.clone(),
            }
        });
        Ok(Page { tasks, next })
    }

    /// Tasks by id, whoever owns them, in ONE `find` (bulk retry reads its candidates).
    pub async fn find_many(&self, task_ids: &[TaskId]) -> Result<Vec<Task>> {
        let ids: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        self.scan(doc! { "taskId": { "$in": ids } }, task_ids.len() as i64)
            .await
    }

    /// Up to `limit` of a user's `failed` tasks matching `filter`, newest first, after
    /// `after`, without payloads, timelines and error histories: one page of a bulk retry by
    /// filter, in ONE `find` served by the `{userId, status, errorGroup, createdAt, taskId}`
    /// index (by group) or the `{userId, status, createdAt, taskId}` one.
    pub async fn failed_page(
        &self,
        user: &UserId,
        filter: &BulkFilter,
        (after, limit): (Option<&Cursor>, i64),
        with_payload: bool,
    ) -> Result<Vec<Task>> {
        let mut query = failed_selection(user, filter);
        if let Some(after) = after {
            query.insert("$or", after_cursor(after));
        }
        let tasks = self.tasks().await?;
        let find = tasks
            .find(query)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .projection(match with_payload {
                // A correction (docs/spec.md §17) reads each payload and its versions.
                true => doc! { "events": 0, "errorHistory": 0, "steps": 0 },
                false => doc! { "payload": 0, "payloadHistory": 0, "payloadBase": 0, "events": 0,
                "errorHistory": 0, "steps": 0 },
            })
            .limit(limit)
            .batch_size(limit as u32);
        self.run(async { find.await?.try_collect().await }).await
    }

    /// What a bulk re-queue did with `handoffs`' tasks, in ONE `find` of four fields a task:
    /// the tasks that now carry their hand-off (moved), and among the others those whose counts
    /// leave no retry (the re-queue matched them on a stale `retriesLeft` and left them as
    /// they were).
    pub async fn requeued_with(&self, handoffs: &[(TaskId, Handoff)]) -> Result<ReadBack> {
        let tasks = self.database().await?.collection::<Document>("tasks");
        let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
        let projection =
            doc! { "_id": 0, "taskId": 1, "handoff.dedupId": 1, "retryCount": 1, "maxRetries": 1 };
        let find = tasks
            .find(doc! { "taskId": { "$in": ids } })
            .projection(projection)
            .limit(handoffs.len() as i64)
            .batch_size(handoffs.len().max(1) as u32);
        let found: Vec<Document> = self.run(async { find.await?.try_collect().await }).await?;
        let mut read_back = ReadBack::default();
        for task in &found {
            let Some(id) = task
                .get_str("taskId")
                .ok()
                .and_then(|id| TaskId::parse(id).ok())
            else {
                continue;
            };
            let carries = task
                .get_document("handoff")
                .and_then(|h| h.get_str("dedupId"));
            let ours = handoffs
                .iter()
                .any(|(t, h)| *t == id && Ok(h.dedup_id.as_str()) == carries);
            // Any number type: a count another writer stored as Int64 or Double still counts.
            let count = |key| match task.get(key) {
                Some(Bson::Int32(n)) => Some(f64::from(*n)),
                Some(Bson::Int64(n)) => Some(*n as f64),
                Some(Bson::Double(n)) => Some(*n),
                _ => None,
            };
            if ours {
                read_back.moved.push(id);
            } else if count("retryCount") >= count("maxRetries") {
                read_back.out_of_retries.push(id);
            }
        }
        Ok(read_back)
    }

    /// The tasks that still carry one of `handoffs`, without payloads and timelines, in ONE
    /// `find`: how a bulk retry's undo left them.
    pub async fn carrying_tasks(&self, handoffs: &[(TaskId, Handoff)]) -> Result<Vec<Task>> {
        let tasks = self.tasks().await?;
        let find = tasks
            .find(carrying(handoffs))
            .projection(doc! { "payload": 0, "payloadHistory": 0, "payloadBase": 0, "events": 0, "steps": 0 })
            .limit(handoffs.len() as i64)
            .batch_size(handoffs.len().max(1) as u32);
        self.run(async { find.await?.try_collect().await }).await
    }

    /// A user's failures grouped by cause, largest first, at most 50, in ONE aggregation.
    pub async fn error_groups(&self, user: &UserId, status: TaskStatus) -> Result<Vec<Document>> {
        let pipeline = error_groups_pipeline(user, status);
        let tasks = self.tasks().await?;
        let mut aggregate = tasks.aggregate(pipeline);
        if status == TaskStatus::Failed {
            // `failed_groups` pairs it with a version read there.
            aggregate = aggregate.selection_criteria(PRIMARY);
        }
        self.run(async { aggregate.await?.try_collect().await })
            .await
    }
}
