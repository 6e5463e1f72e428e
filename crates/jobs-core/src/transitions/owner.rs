//! The owner's transitions: create a task, retry a failed one (and undo a retry whose hand-off failed),
//! fail a task whose `create` could not hand it off, and cancel.

use super::*;
use crate::error::{JobsError, is_duplicate_key};

impl Store {
    /// none -> queued: stores a new task as `create` made it (creating the indexes first, once
    /// per process).
    pub async fn insert(&self, task: &Task) -> Result<()> {
        self.ensure_indexes().await?;
        self.run(self.tasks().await?.insert_one(task)).await?;
        Ok(())
    }

    /// none -> queued for a keyed create: inserts a new task (creating the indexes first, once
    /// per process), unless a task with
    /// its id is stored already: then that task, which another create of the same idempotency
    /// key inserted first. Only one create inserts a task, so only one hands it off.
    pub async fn insert_unless_stored(&self, task: &Task) -> Result<Option<Task>> {
        self.ensure_indexes().await?;
        let tasks = self.tasks().await?;
        match self.run(async { Ok(tasks.insert_one(task).await) }).await? {
            Ok(_) => Ok(None),
            Err(error) if is_duplicate_key(&error) => {
                let stored = self.find(&task.task_id).await?.ok_or_else(|| {
                    JobsError::internal(format!("duplicate task id {} but no task", task.task_id))
                })?;
                // The same hand-off (its dedup id is new per hand-off) is this very insert,
                // applied once already and re-sent by the driver: it is ours to hand off.
                let ours = stored.handoff.as_ref().map(|h| &h.dedup_id)
                    == task.handoff.as_ref().map(|h| &h.dedup_id);
                if !ours {
                    tracing::info!(task_id = %task.task_id, "task already stored by another create of its idempotency key");
                }
                Ok((!ours).then_some(stored))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// failed -> queued, for `user_id`, within the retry budget, recording `handoff`, resuming
    /// `from` the failed step or the start (docs/spec.md §16): ONE
    /// conditional update of `task` as the caller read it, pinned on its counts
    /// ([`requeue_filter`], [`requeue_pipeline`]). `false` means the guard did not hold (counts
    /// read that leave no retry are refused without a command); the caller reads the task to
    /// say why.
    pub async fn requeue_for_retry(
        &self,
        task: &Task,
        user_id: &UserId,
        handoff: &Handoff,
        from: Resume,
    ) -> Result<bool> {
        self.requeue_edited(task, user_id, handoff, (from, None))
            .await
    }

    /// `requeue_for_retry` that also stores `edit`, a new version of the task's payload
    /// (docs/spec.md §17), in the same update, pinned on the version read: `false` as well when
    /// another edit stored a version since.
    pub async fn requeue_edited(
        &self,
        task: &Task,
        user_id: &UserId,
        handoff: &Handoff,
        (from, edit): (Resume, Option<&Edit>),
    ) -> Result<bool> {
        if task.retries_left() == 0 {
            return Ok(false);
        }
        let by = format!("user:{user_id}");
        let dedup_id = Bson::String(handoff.dedup_id.clone());
        let dedup_id = doc! { "$literal": dedup_id }.into();
        let requeue = requeue_pipeline(handoff.at, dedup_id, &by, (from, edit));
        let tasks = self.tasks().await?;
        let mut filter = requeue_filter(task, user_id);
        if edit.is_some() {
            filter.insert("payloadVersion", version_read(task.payload_version));
        }
        let outcome = self.run(tasks.update_one(filter, requeue)).await;
        let outcome = outcome.map(|updated| updated.modified_count == 1);
        let requeued = self.noting_failed(user_id, outcome, |r| *r).await?;
        if requeued {
            log(
                &task.task_id,
                "failed",
                TaskStatus::Queued,
                "requeue_for_retry",
            );
        }
        Ok(requeued)
    }

    /// queued (just retried) -> failed: a retry that never reached the queue does not use up
    /// a retry (see [`restore_update`]). Fenced on the retry's hand-off, so a task claimed (or
    /// retried again) meanwhile is left alone (`false`).
    pub async fn restore_after_failed_requeue(
        &self,
        task_id: &TaskId,
        user_id: &UserId,
        handoff: &Handoff,
    ) -> Result<bool> {
        let update = restore_update(&format!("user:{user_id}"));
        let outcome = self
            .update_one(handoff_fence(task_id, &handoff.dedup_id), update)
            .await;
        let restored = self.noting_failed(user_id, outcome, |r| *r).await?;
        if restored {
            log(
                task_id,
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
        let by = format!("user:{}", task.user_id);
        let update = failed_update(
            task.attempts,
            ENQUEUE_FAILED_MESSAGE,
            Event::new(EventKind::Failed, by),
        );
        self.fail_where(
            handoff_fence(&task.task_id, &handoff.dedup_id),
            update,
            (&task.task_id, &task.user_id),
            "queued",
            "fail_unqueued",
        )
        .await
    }

    /// queued / scheduled / processing -> cancelled, for the owner. A running worker notices
    /// at its next fenced write. `None` means the guard did not hold.
    pub async fn cancel(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        let now = DateTime::now();
        let mut update = doc! {
            "$set": { "status": TaskStatus::Cancelled, "finishedAt": now, "updatedAt": now,
                      "nextAttemptAt": Bson::Null },
            "$unset": { "lease": "" },
        };
        push_events(
            &mut update,
            &[Event::new(EventKind::Cancelled, format!("user:{user_id}"))],
        );
        let before = self
            .find_one_and_update(
                doc! {
                    "taskId": task_id.as_str(),
                    "userId": user_id.as_str(),
                    "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled, TaskStatus::Processing] },
                },
                update,
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
}
