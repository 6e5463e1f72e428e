//! Every status change of SPEC section 4, and nothing else writes `status`. Each transition is
//! ONE atomic conditional update named after what it does; its filter is its guard, so two
//! racing callers cannot both win. Worker writes are fenced on `lease.id`: a worker whose lease
//! was taken away (swept, cancelled) matches nothing and stops.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use crate::error::Result;
use crate::store::Store;
use crate::task::{ERROR_HISTORY_LEN, Lease, Task, TaskId, TaskStatus, UserId};

pub const REQUEUE_FAILED_MESSAGE: &str = "Failed to re-queue task.";
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

/// The reset of `requeue_for_retry`: queued, progress 0, no error, one retry used.
pub fn requeue_update(at: DateTime) -> Document {
    doc! {
        "$set": { "status": TaskStatus::Queued, "progress": 0, "lastError": Bson::Null,
                  "result": Bson::Null, "finishedAt": Bson::Null, "updatedAt": at },
        "$inc": { "retryCount": 1 },
    }
}

fn worker_fence(task_id: &TaskId, lease_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Processing, "lease.id": lease_id }
}

impl Store {
    /// queued -> processing: takes a new lease and counts the attempt. `None` when there is
    /// nothing to claim (a duplicate delivery, or the task was cancelled).
    pub async fn claim(&self, task_id: &TaskId, lease_for: Duration) -> Result<Option<Task>> {
        let now = DateTime::now();
        let lease = doc! { "id": uuid::Uuid::new_v4().to_string(), "expiresAt": later(lease_for) };
        let claimed = self
            .tasks()
            .find_one_and_update(
                doc! { "taskId": task_id.as_str(), "status": TaskStatus::Queued },
                doc! {
                    "$set": { "status": TaskStatus::Processing, "lease": lease, "progress": 0,
                              "startedAt": now, "updatedAt": now },
                    "$inc": { "attempts": 1 },
                },
            )
            .return_document(ReturnDocument::After)
            .await?;
        if claimed.is_some() {
            log(task_id, "queued", TaskStatus::Processing, "claim");
        }
        Ok(claimed)
    }

    /// Progress from the worker; doubles as the lease heartbeat. `false` means the worker
    /// no longer owns the task and must stop.
    pub async fn report_progress(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        progress: i32,
        lease_for: Duration,
    ) -> Result<bool> {
        let updated = self
            .tasks()
            .update_one(
                worker_fence(task_id, &lease.id),
                doc! { "$set": { "progress": progress.clamp(0, 100), "lease.expiresAt": later(lease_for),
                                 "updatedAt": DateTime::now() } },
            )
            .await?;
        Ok(updated.matched_count == 1)
    }

    /// processing -> completed, fenced on the lease.
    pub async fn complete(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        result: Document,
    ) -> Result<bool> {
        let now = DateTime::now();
        let updated = self
            .tasks()
            .update_one(
                worker_fence(task_id, &lease.id),
                doc! {
                    "$set": { "status": TaskStatus::Completed, "progress": 100, "result": result,
                              "lastError": Bson::Null, "finishedAt": now, "updatedAt": now },
                    "$unset": { "lease": "" },
                },
            )
            .await?;
        let done = updated.matched_count == 1;
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
        self.fail_where(
            worker_fence(task_id, &lease.id),
            task_id,
            "processing",
            attempt,
            message,
            "fail",
        )
        .await
    }

    /// failed -> queued, for the owner, within the retry budget. Returns the task as it was
    /// before, so a failed re-queue can put it back exactly. `None` means the guard did not
    /// hold; the caller reads the task to say why.
    pub async fn requeue_for_retry(
        &self,
        task_id: &TaskId,
        user_id: &UserId,
        at: DateTime,
    ) -> Result<Option<Task>> {
        let before = self
            .tasks()
            .find_one_and_update(requeue_filter(task_id, user_id), requeue_update(at))
            .return_document(ReturnDocument::Before)
            .await?;
        if before.is_some() {
            log(task_id, "failed", TaskStatus::Queued, "requeue_for_retry");
        }
        Ok(before)
    }

    /// queued (just retried) -> failed, as it was before the retry: a retry that never
    /// reached the queue does not use up a retry. Guarded on the retry's own mark, so a task
    /// that was claimed meanwhile is left alone (`false`).
    pub async fn restore_after_failed_requeue(&self, before: &Task) -> Result<bool> {
        let updated = self
            .tasks()
            .update_one(
                doc! {
                    "taskId": before.task_id.as_str(),
                    "status": TaskStatus::Queued,
                    "retryCount": before.retry_count + 1,
                    "attempts": before.attempts,
                },
                doc! { "$set": {
                    "status": TaskStatus::Failed,
                    "progress": before.progress,
                    "retryCount": before.retry_count,
                    "lastError": REQUEUE_FAILED_MESSAGE,
                    "result": before.result.clone().map_or(Bson::Null, Bson::Document),
                    "finishedAt": before.finished_at.map_or(Bson::Null, Bson::DateTime),
                    "updatedAt": DateTime::now(),
                }},
            )
            .await?;
        let restored = updated.matched_count == 1;
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

    /// queued (never delivered) -> failed, when `create` could not reach the queue.
    pub async fn fail_unqueued(&self, task: &Task) -> Result<bool> {
        let filter = doc! { "taskId": task.task_id.as_str(), "status": TaskStatus::Queued, "attempts": task.attempts };
        self.fail_where(
            filter,
            &task.task_id,
            "queued",
            task.attempts,
            ENQUEUE_FAILED_MESSAGE,
            "fail_unqueued",
        )
        .await
    }

    /// queued / processing -> cancelled, for the owner. A running worker notices at its next
    /// fenced write. `None` means the guard did not hold.
    pub async fn cancel(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        let now = DateTime::now();
        let before = self
            .tasks()
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
            )
            .return_document(ReturnDocument::Before)
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
        self.fail_where(
            filter,
            &task.task_id,
            "processing",
            task.attempts,
            message,
            "fail_lost_worker",
        )
        .await
    }

    /// queued for too long -> failed: the rescuer's half for tasks nobody picked up. Fenced on
    /// `updatedAt`, so a task retried or claimed since it was read is left alone.
    pub async fn fail_never_picked_up(&self, task: &Task, message: &str) -> Result<bool> {
        let filter = doc! { "taskId": task.task_id.as_str(), "status": TaskStatus::Queued, "updatedAt": task.updated_at };
        self.fail_where(
            filter,
            &task.task_id,
            "queued",
            task.attempts,
            message,
            "fail_never_picked_up",
        )
        .await
    }

    async fn fail_where(
        &self,
        filter: Document,
        task_id: &TaskId,
        from: &str,
        attempt: i32,
        message: &str,
        transition: &'static str,
    ) -> Result<bool> {
        let updated = self
            .tasks()
            .update_one(filter, failed_update(attempt, message))
            .await?;
        let failed = updated.matched_count == 1;
        if failed {
            log(task_id, from, TaskStatus::Failed, transition);
        }
        Ok(failed)
    }
}
