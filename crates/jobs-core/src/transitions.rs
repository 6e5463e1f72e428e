//! Every status change of docs/spec.md §4, and nothing else writes `status`. Each transition is
//! ONE atomic conditional update named after what it does; its filter is its guard, so two
//! racing callers cannot both win. Worker writes are fenced on `lease.id`: a worker whose lease
//! was taken away (swept, cancelled) matches nothing and stops. Writes about a hand-off are
//! fenced on `handoff.dedupId`: a later retry's hand-off is never mistaken for an earlier one.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use crate::error::Result;
use crate::store::Store;
use crate::task::{ERROR_HISTORY_LEN, Handoff, Lease, Task, TaskId, TaskStatus, UserId};

/// `lastError` of a task whose retry could not be handed off (the plan's message).
pub const REQUEUE_FAILED_MESSAGE: &str = "Failed to re-queue task.";
/// `lastError` of a task whose `create` could not hand it off.
pub const ENQUEUE_FAILED_MESSAGE: &str =
    "Failed to queue task: the queue could not be reached. Retry it.";

fn log(task_id: &TaskId, from: &str, to: TaskStatus, transition: &'static str) {
    tracing::info!(task_id = %task_id, from, to = %to, transition, "task state changed");
}

fn later(by: Duration) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + by.as_millis() as i64)
}

/// The `$set`/`$push`/`$unset` of any move to `failed`.
fn failed_update(attempt: i32, message: &str) -> Document {
    let now = DateTime::now();
    doc! {
        "$set": { "status": TaskStatus::Failed, "lastError": message, "finishedAt": now, "updatedAt": now },
        "$push": { "errorHistory": {
            "$each": [{ "attempt": attempt, "message": message, "at": now }],
            "$slice": -ERROR_HISTORY_LEN,
        }},
        "$unset": { "lease": "" },
    }
}

/// The guard of `requeue_for_retry`: the owner's task, failed, with retries left.
pub fn requeue_filter(task_id: &TaskId, user_id: &UserId) -> Document {
    doc! {
        "taskId": task_id.as_str(),
        "userId": user_id.as_str(),
        "status": TaskStatus::Failed,
        "$expr": { "$lt": ["$retryCount", "$maxRetries"] },
    }
}

/// The reset of `requeue_for_retry`: queued, progress 0, no error, one retry used, and the
/// hand-off that is about to be sent recorded in the same update.
pub fn requeue_update(handoff: &Handoff) -> Document {
    doc! {
        "$set": { "status": TaskStatus::Queued, "progress": 0, "lastError": Bson::Null,
                  "result": Bson::Null, "finishedAt": Bson::Null, "updatedAt": handoff.at,
                  "handoff": handoff.to_bson() },
        "$inc": { "retryCount": 1 },
    }
}

fn worker_fence(task_id: &TaskId, lease_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Processing, "lease.id": lease_id }
}

/// A `queued` task whose current hand-off is `dedup_id`.
fn handoff_fence(task_id: &TaskId, dedup_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Queued, "handoff.dedupId": dedup_id }
}

impl Store {
    async fn update_one(&self, filter: Document, update: Document) -> Result<bool> {
        let tasks = self.tasks().await?;
        Ok(self
            .run(tasks.update_one(filter, update))
            .await?
            .matched_count
            == 1)
    }

    async fn find_one_and_update(
        &self,
        filter: Document,
        update: Document,
        returns: ReturnDocument,
    ) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(
            tasks
                .find_one_and_update(filter, update)
                .return_document(returns),
        )
        .await
    }

    /// queued -> processing: takes a new lease and counts the attempt. `None` when there is
    /// nothing queued to claim (a redelivery, or the task was cancelled or failed meanwhile).
    pub async fn claim(&self, task_id: &TaskId, lease_for: Duration) -> Result<Option<Task>> {
        let now = DateTime::now();
        let lease = doc! { "id": uuid::Uuid::new_v4().to_string(), "expiresAt": later(lease_for) };
        let claimed = self
            .find_one_and_update(
                doc! { "taskId": task_id.as_str(), "status": TaskStatus::Queued },
                doc! {
                    "$set": { "status": TaskStatus::Processing, "lease": lease, "progress": 0,
                              "startedAt": now, "updatedAt": now },
                    "$inc": { "attempts": 1 },
                },
                ReturnDocument::After,
            )
            .await?;
        if claimed.is_some() {
            log(task_id, "queued", TaskStatus::Processing, "claim");
        }
        Ok(claimed)
    }

    /// Progress from the worker; also renews the lease. `false` means the worker no longer
    /// owns the task and must stop.
    pub async fn report_progress(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        progress: i32,
        lease_for: Duration,
    ) -> Result<bool> {
        self.update_one(
            worker_fence(task_id, &lease.id),
            doc! { "$set": { "progress": progress.clamp(0, 100), "lease.expiresAt": later(lease_for),
                             "updatedAt": DateTime::now() } },
        )
        .await
    }

    /// The worker's own heartbeat, whatever the processor reports. `false` means the lease
    /// was taken (cancelled, swept): the worker stops its processor.
    pub async fn renew_lease(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<bool> {
        self.update_one(
            worker_fence(task_id, &lease.id),
            doc! { "$set": { "lease.expiresAt": later(lease_for) } },
        )
        .await
    }

    /// processing -> completed, fenced on the lease.
    pub async fn complete(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        result: Document,
    ) -> Result<bool> {
        let now = DateTime::now();
        let done = self
            .update_one(
                worker_fence(task_id, &lease.id),
                doc! {
                    "$set": { "status": TaskStatus::Completed, "progress": 100, "result": result,
                              "lastError": Bson::Null, "finishedAt": now, "updatedAt": now },
                    "$unset": { "lease": "" },
                },
            )
            .await?;
        if done {
            log(task_id, "processing", TaskStatus::Completed, "complete");
        }
        Ok(done)
    }

    /// processing -> failed, fenced on the lease.
    pub async fn fail(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        attempt: i32,
        message: &str,
    ) -> Result<bool> {
        let update = failed_update(attempt, message);
        self.fail_where(
            worker_fence(task_id, &lease.id),
            update,
            task_id,
            "processing",
            "fail",
        )
        .await
    }

    /// failed -> queued, for the owner, within the retry budget, recording `handoff`. Returns
    /// the task as it was before, so a failed re-queue can put it back exactly. `None` means
    /// the guard did not hold; the caller reads the task to say why.
    pub async fn requeue_for_retry(
        &self,
        task_id: &TaskId,
        user_id: &UserId,
        handoff: &Handoff,
    ) -> Result<Option<Task>> {
        let before = self
            .find_one_and_update(
                requeue_filter(task_id, user_id),
                requeue_update(handoff),
                ReturnDocument::Before,
            )
            .await?;
        if before.is_some() {
            log(task_id, "failed", TaskStatus::Queued, "requeue_for_retry");
        }
        Ok(before)
    }

    /// queued (just retried) -> failed, as it was before the retry: a retry that never
    /// reached the queue does not use up a retry. Fenced on the retry's hand-off, so a task
    /// claimed (or retried again) meanwhile is left alone (`false`).
    pub async fn restore_after_failed_requeue(
        &self,
        before: &Task,
        handoff: &Handoff,
    ) -> Result<bool> {
        let mut set = doc! {
            "status": TaskStatus::Failed,
            "progress": before.progress,
            "retryCount": before.retry_count,
            "lastError": REQUEUE_FAILED_MESSAGE,
            "result": before.result.clone().map_or(Bson::Null, Bson::Document),
            "finishedAt": before.finished_at.map_or(Bson::Null, Bson::DateTime),
            "updatedAt": DateTime::now(),
        };
        let mut update = doc! {};
        match &before.handoff {
            Some(earlier) => _ = set.insert("handoff", earlier.to_bson()),
            None => _ = update.insert("$unset", doc! { "handoff": "" }),
        }
        update.insert("$set", set);
        let restored = self
            .update_one(handoff_fence(&before.task_id, &handoff.dedup_id), update)
            .await?;
        if restored {
            log(
                &before.task_id,
                "queued",
                TaskStatus::Failed,
                "restore_after_failed_requeue",
            );
        }
        Ok(restored)
    }

    /// queued (never delivered) -> failed, when `create` could not hand the task off.
    /// `false` when it was claimed meanwhile (the hand-off did arrive after all).
    pub async fn fail_unqueued(&self, task: &Task, handoff: &Handoff) -> Result<bool> {
        let update = failed_update(task.attempts, ENQUEUE_FAILED_MESSAGE);
        self.fail_where(
            handoff_fence(&task.task_id, &handoff.dedup_id),
            update,
            &task.task_id,
            "queued",
            "fail_unqueued",
        )
        .await
    }

    /// queued / processing -> cancelled, for the owner. A running worker notices at its next
    /// fenced write. `None` means the guard did not hold.
    pub async fn cancel(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        let now = DateTime::now();
        let before = self
            .find_one_and_update(
                doc! {
                    "taskId": task_id.as_str(),
                    "userId": user_id.as_str(),
                    "status": { "$in": [TaskStatus::Queued, TaskStatus::Processing] },
                },
                doc! {
                    "$set": { "status": TaskStatus::Cancelled, "finishedAt": now, "updatedAt": now },
                    "$unset": { "lease": "" },
                },
                ReturnDocument::Before,
            )
            .await?;
        if let Some(task) = &before {
            log(
                task_id,
                task.status.as_str(),
                TaskStatus::Cancelled,
                "cancel",
            );
        }
        Ok(before)
    }

    /// processing (lease expired) -> failed: the rescuer's half for lost workers.
    pub async fn fail_lost_worker(
        &self,
        task: &Task,
        lease: &Lease,
        message: &str,
    ) -> Result<bool> {
        let mut filter = worker_fence(&task.task_id, &lease.id);
        filter.insert("lease.expiresAt", doc! { "$lt": DateTime::now() });
        let update = failed_update(task.attempts, message);
        self.fail_where(
            filter,
            update,
            &task.task_id,
            "processing",
            "fail_lost_worker",
        )
        .await
    }

    /// queued -> queued: marks a stale hand-off as re-sent, once. `true` means this caller
    /// won and must send it again (with the same deduplication id).
    pub async fn mark_redispatched(&self, task_id: &TaskId, handoff: &Handoff) -> Result<bool> {
        let mut filter = handoff_fence(task_id, &handoff.dedup_id);
        filter.insert("handoff.redispatched", doc! { "$exists": false });
        let marked = self
            .update_one(
                filter,
                doc! { "$set": { "handoff.redispatched": DateTime::now() } },
            )
            .await?;
        if marked {
            log(task_id, "queued", TaskStatus::Queued, "mark_redispatched");
        }
        Ok(marked)
    }

    /// queued, re-sent and still unclaimed -> failed: the rescuer's half for tasks nobody
    /// picked up. A retry that never ran since it was queued is given back in the same
    /// update. Fenced on the hand-off (or, for a task queued before hand-offs were recorded,
    /// on `updatedAt`), so a task retried or claimed since it was read is left alone.
    pub async fn fail_never_picked_up(&self, task: &Task, message: &str) -> Result<bool> {
        let mut update = failed_update(task.attempts, message);
        let filter = match &task.handoff {
            Some(handoff) => {
                if handoff.retry {
                    update.insert("$inc", doc! { "retryCount": -1 });
                }
                handoff_fence(&task.task_id, &handoff.dedup_id)
            }
            None => doc! {
                "taskId": task.task_id.as_str(), "status": TaskStatus::Queued,
                "handoff": { "$exists": false }, "updatedAt": task.updated_at,
            },
        };
        self.fail_where(
            filter,
            update,
            &task.task_id,
            "queued",
            "fail_never_picked_up",
        )
        .await
    }

    /// queued -> failed when QStash gave up delivering hand-off `dedup_id` (its failure
    /// callback), `task` as read just before. A later hand-off of the same task is left alone;
    /// a retry whose hand-off never arrived is given back, as `fail_never_picked_up` does.
    pub async fn fail_undelivered(
        &self,
        task: &Task,
        dedup_id: &str,
        message: &str,
    ) -> Result<bool> {
        let mut update = failed_update(task.attempts, message);
        let current = task.handoff.as_ref().filter(|h| h.dedup_id == dedup_id);
        if current.is_some_and(|h| h.retry) {
            update.insert("$inc", doc! { "retryCount": -1 });
        }
        self.fail_where(
            handoff_fence(&task.task_id, dedup_id),
            update,
            &task.task_id,
            "queued",
            "fail_undelivered",
        )
        .await
    }

    async fn fail_where(
        &self,
        filter: Document,
        update: Document,
        task_id: &TaskId,
        from: &str,
        transition: &'static str,
    ) -> Result<bool> {
        let failed = self.update_one(filter, update).await?;
        if failed {
            log(task_id, from, TaskStatus::Failed, transition);
        }
        Ok(failed)
    }
}
