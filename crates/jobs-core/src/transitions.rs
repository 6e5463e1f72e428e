//! Every status change of docs/spec.md §4, and nothing else writes `status`. Each transition is
//! ONE atomic conditional update named after what it does; its filter is its guard, so two
//! racing callers cannot both win. Worker writes are fenced on `lease.id`: a worker whose lease
//! was taken away (swept, cancelled) matches nothing and stops. Writes about a hand-off are
//! fenced on `handoff.dedupId`: a later retry's hand-off is never mistaken for an earlier one.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use crate::error::Result;
use crate::error_groups::Cause;
use crate::store::Store;
use crate::task::{
    ERROR_HISTORY_LEN, EVENTS_LEN, Event, EventKind, Handoff, Lease, Task, TaskId, TaskStatus,
    UserId,
};

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

/// Appends `events` to the timeline in `update` (newest [`EVENTS_LEN`] kept), next to any
/// other `$push` it has: the event is written by the same update as the transition.
pub(crate) fn push_events(update: &mut Document, events: &[Event]) {
    let each: Vec<Bson> = events.iter().map(Event::to_bson).collect();
    let push = doc! { "$each": each, "$slice": -EVENTS_LEN };
    match update.get_document_mut("$push") {
        Ok(existing) => _ = existing.insert("events", push),
        Err(_) => _ = update.insert("$push", doc! { "events": push }),
    }
}

/// What any failure records, whatever status it leads to: `lastError`, the `errorHistory`
/// entry, the cause (`errorTemplate`, `errorGroup`), and no lease.
fn failure_update(status: TaskStatus, attempt: i32, message: &str, permanent: bool) -> Document {
    let now = DateTime::now();
    let cause = Cause::of(message);
    let mut entry = doc! { "attempt": attempt, "message": message, "at": now };
    if permanent {
        entry.insert("permanent", true);
    }
    let mut set = doc! {
        "status": status, "lastError": message, "updatedAt": now,
        "errorTemplate": cause.template, "errorGroup": cause.group,
    };
    if status == TaskStatus::Failed {
        set.insert("finishedAt", now);
    }
    doc! {
        "$set": set,
        "$push": { "errorHistory": { "$each": [entry], "$slice": -ERROR_HISTORY_LEN } },
        "$unset": { "lease": "" },
    }
}

/// The `$set`/`$push`/`$unset` of any move to `failed`, with its event.
fn failed_update(attempt: i32, message: &str, event: Event) -> Document {
    let mut update = failure_update(TaskStatus::Failed, attempt, message, false);
    push_events(&mut update, &[event.attempt(attempt).message(message)]);
    update
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

/// The reset of `requeue_for_retry`: queued, progress 0, no error, one retry used, a fresh
/// automatic-retry budget, and the hand-off that is about to be sent recorded in the same
/// update, with its event.
pub fn requeue_update(handoff: &Handoff, by: &str) -> Document {
    let mut update = doc! {
        "$set": { "status": TaskStatus::Queued, "progress": 0, "lastError": Bson::Null,
                  "result": Bson::Null, "finishedAt": Bson::Null, "updatedAt": handoff.at,
                  "handoff": handoff.to_bson(), "autoRetries": 0, "nextAttemptAt": Bson::Null },
        "$inc": { "retryCount": 1 },
    };
    push_events(&mut update, &[Event::new(EventKind::Retried, by)]);
    update
}

fn worker_fence(task_id: &TaskId, lease_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Processing, "lease.id": lease_id }
}

/// A `queued` task whose current hand-off is `dedup_id`.
fn handoff_fence(task_id: &TaskId, dedup_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Queued, "handoff.dedupId": dedup_id }
}

/// Anyone can claim a `queued` task; a `scheduled` one once it is due (1 s of clock skew
/// allowed between the function and whoever scheduled it).
fn claimable(task_id: &TaskId, now: DateTime) -> Document {
    let due = DateTime::from_millis(now.timestamp_millis() + 1000);
    doc! { "taskId": task_id.as_str(), "$or": [
        { "status": TaskStatus::Queued },
        { "status": TaskStatus::Scheduled, "nextAttemptAt": { "$lte": due } },
    ] }
}

/// The update that puts a task back as it was before a retry whose hand-off failed (`set`
/// holds the fields to restore), the hand-off included.
pub(crate) fn restore_update(before: &Task, mut set: Document) -> Document {
    let mut update = doc! {};
    match &before.handoff {
        Some(earlier) => _ = set.insert("handoff", earlier.to_bson()),
        None => _ = update.insert("$unset", doc! { "handoff": "" }),
    }
    set.insert("autoRetries", before.auto_retries);
    update.insert("$set", set);
    update
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

    /// queued (or scheduled and due) -> processing: takes a new lease and counts the attempt.
    /// `None` when there is nothing to claim: a redelivery, a task cancelled or failed
    /// meanwhile, or a scheduled task delivered before it is due. `by` is who delivered it.
    pub async fn claim(
        &self,
        task_id: &TaskId,
        lease_for: Duration,
        by: &str,
    ) -> Result<Option<Task>> {
        let now = DateTime::now();
        let lease = doc! { "id": uuid::Uuid::new_v4().to_string(), "expiresAt": later(lease_for) };
        // The attempt number is only known after `$inc`: the event names the claim, the
        // reply's `attempts` says which one it was.
        let mut update = doc! {
            "$set": { "status": TaskStatus::Processing, "lease": lease, "progress": 0,
                      "startedAt": now, "updatedAt": now, "nextAttemptAt": Bson::Null },
            "$inc": { "attempts": 1 },
        };
        push_events(&mut update, &[Event::new(EventKind::Claimed, by)]);
        let claimed = self
            .find_one_and_update(claimable(task_id, now), update, ReturnDocument::After)
            .await?;
        if claimed.is_some() {
            log(task_id, "queued|scheduled", TaskStatus::Processing, "claim");
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

    /// processing -> completed, fenced on the lease. `by` is who delivered the attempt.
    pub async fn complete(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        result: Document,
        by: &str,
    ) -> Result<bool> {
        let now = DateTime::now();
        let mut update = doc! {
            "$set": { "status": TaskStatus::Completed, "progress": 100, "result": result,
                      "lastError": Bson::Null, "finishedAt": now, "updatedAt": now },
            "$unset": { "lease": "" },
        };
        push_events(&mut update, &[Event::new(EventKind::Completed, by)]);
        let done = self
            .update_one(worker_fence(task_id, &lease.id), update)
            .await?;
        if done {
            log(task_id, "processing", TaskStatus::Completed, "complete");
        }
        Ok(done)
    }

    /// processing -> failed, fenced on the lease. `permanent`: the processor said not to retry
    /// it automatically (recorded on the `errorHistory` entry).
    pub async fn fail(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        attempt: i32,
        message: &str,
        permanent: bool,
        by: &str,
    ) -> Result<bool> {
        let mut update = failure_update(TaskStatus::Failed, attempt, message, permanent);
        let event = Event::new(EventKind::Failed, by)
            .attempt(attempt)
            .message(message);
        push_events(&mut update, &[event]);
        self.fail_where(
            worker_fence(task_id, &lease.id),
            update,
            task_id,
            "processing",
            "fail",
        )
        .await
    }

    /// processing -> scheduled: a failed attempt with automatic retries left waits until
    /// `handoff.at` (its next attempt), one automatic retry used, its hand-off recorded.
    /// Fenced on the lease.
    pub async fn schedule_retry(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        attempt: i32,
        message: &str,
        handoff: &Handoff,
        by: &str,
    ) -> Result<bool> {
        let mut update = failure_update(TaskStatus::Scheduled, attempt, message, false);
        let set = update
            .get_document_mut("$set")
            .expect("a failure sets fields");
        set.insert("nextAttemptAt", handoff.at);
        set.insert("handoff", handoff.to_bson());
        update.insert("$inc", doc! { "autoRetries": 1 });
        let failed = Event::new(EventKind::Failed, by)
            .attempt(attempt)
            .message(message);
        let scheduled = Event::new(EventKind::Scheduled, "auto").attempt(attempt + 1);
        push_events(&mut update, &[failed, scheduled]);
        let scheduled = self
            .update_one(worker_fence(task_id, &lease.id), update)
            .await?;
        if scheduled {
            log(
                task_id,
                "processing",
                TaskStatus::Scheduled,
                "schedule_retry",
            );
        }
        Ok(scheduled)
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
        let by = format!("user:{user_id}");
        let before = self
            .find_one_and_update(
                requeue_filter(task_id, user_id),
                requeue_update(handoff, &by),
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
        let set = doc! {
            "status": TaskStatus::Failed,
            "progress": before.progress,
            "retryCount": before.retry_count,
            "lastError": REQUEUE_FAILED_MESSAGE,
            "result": before.result.clone().map_or(Bson::Null, Bson::Document),
            "finishedAt": before.finished_at.map_or(Bson::Null, Bson::DateTime),
            "updatedAt": DateTime::now(),
        };
        let mut update = restore_update(before, set);
        let by = format!("user:{}", before.user_id);
        push_events(&mut update, &[Event::new(EventKind::RetryUndone, by)]);
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
        let by = format!("user:{}", task.user_id);
        let update = failed_update(
            task.attempts,
            ENQUEUE_FAILED_MESSAGE,
            Event::new(EventKind::Failed, by),
        );
        self.fail_where(
            handoff_fence(&task.task_id, &handoff.dedup_id),
            update,
            &task.task_id,
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

    /// processing (lease expired) -> failed: the rescuer's half for lost workers.
    pub async fn fail_lost_worker(
        &self,
        task: &Task,
        lease: &Lease,
        message: &str,
    ) -> Result<bool> {
        let mut filter = worker_fence(&task.task_id, &lease.id);
        filter.insert("lease.expiresAt", doc! { "$lt": DateTime::now() });
        let update = failed_update(
            task.attempts,
            message,
            Event::new(EventKind::Swept, "sweep"),
        );
        self.fail_where(
            filter,
            update,
            &task.task_id,
            "processing",
            "fail_lost_worker",
        )
        .await
    }

    /// queued (or scheduled) -> unchanged: marks a hand-off as re-sent by `sweep`, once.
    /// `true` means this caller won and must send it again (with the same deduplication id).
    pub async fn mark_redispatched(&self, task_id: &TaskId, handoff: &Handoff) -> Result<bool> {
        let filter = doc! {
            "taskId": task_id.as_str(),
            "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
            "handoff.dedupId": handoff.dedup_id.as_str(),
            "handoff.redispatched": { "$exists": false },
        };
        let mut update = doc! { "$set": { "handoff.redispatched": DateTime::now() } };
        push_events(&mut update, &[Event::new(EventKind::Redispatched, "sweep")]);
        let marked = self.update_one(filter, update).await?;
        if marked {
            tracing::info!(task_id = %task_id, transition = "mark_redispatched", "hand-off re-sent by sweep");
        }
        Ok(marked)
    }

    /// queued, re-sent and still unclaimed -> failed: the rescuer's half for tasks nobody
    /// picked up. A retry that never ran since it was queued is given back in the same
    /// update. Fenced on the hand-off (or, for a task queued before hand-offs were recorded,
    /// on `updatedAt`), so a task retried or claimed since it was read is left alone.
    pub async fn fail_never_picked_up(&self, task: &Task, message: &str) -> Result<bool> {
        let mut update = failed_update(
            task.attempts,
            message,
            Event::new(EventKind::Swept, "sweep"),
        );
        update
            .get_document_mut("$set")
            .expect("a failure sets fields")
            .insert("nextAttemptAt", Bson::Null);
        let filter = match &task.handoff {
            Some(handoff) => {
                if handoff.retry {
                    update.insert("$inc", doc! { "retryCount": -1 });
                }
                doc! {
                    "taskId": task.task_id.as_str(),
                    "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
                    "handoff.dedupId": handoff.dedup_id.as_str(),
                }
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
            task.status.as_str(),
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
        let event = Event::new(EventKind::DeliveryFailed, "qstash");
        let mut update = failed_update(task.attempts, message, event);
        update
            .get_document_mut("$set")
            .expect("a failure sets fields")
            .insert("nextAttemptAt", Bson::Null);
        let current = task.handoff.as_ref().filter(|h| h.dedup_id == dedup_id);
        if current.is_some_and(|h| h.retry) {
            update.insert("$inc", doc! { "retryCount": -1 });
        }
        // A scheduled automatic retry whose delivery QStash gave up on fails too.
        let filter = doc! {
            "taskId": task.task_id.as_str(),
            "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
            "handoff.dedupId": dedup_id,
        };
        self.fail_where(filter, update, &task.task_id, "queued", "fail_undelivered")
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

/// One statement of a multi-statement `update` command.
fn statement(filter: Document, update: Document) -> Document {
    doc! { "q": filter, "u": update, "multi": false }
}

impl Store {
    /// failed -> queued for many tasks of one user at once (bulk retry, docs/spec.md §13): each
    /// with exactly `requeue_for_retry`'s guard and effect and its own hand-off, in ONE
    /// `update` command of many statements. Which tasks it moved is read back by their
    /// hand-offs ([`Store::requeued_with`]): a task raced by another retry matched nothing.
    pub async fn requeue_many(&self, user: &UserId, handoffs: &[(TaskId, Handoff)]) -> Result<()> {
        let by = format!("bulk:{user}");
        let statements = handoffs
            .iter()
            .map(|(task_id, handoff)| {
                statement(requeue_filter(task_id, user), requeue_update(handoff, &by))
            })
            .collect();
        self.update_many_statements(statements).await?;
        for (task_id, _) in handoffs {
            tracing::debug!(task_id = %task_id, transition = "requeue_many", "bulk re-queue sent");
        }
        Ok(())
    }

    /// queued (just retried in bulk) -> failed, as each was before, for the retries whose
    /// hand-off failed: ONE `update` command, each statement fenced on its own hand-off.
    pub async fn restore_many(&self, restores: &[(&Task, &Handoff)]) -> Result<()> {
        let statements = restores
            .iter()
            .map(|(before, handoff)| {
                let set = doc! {
                    "status": TaskStatus::Failed,
                    "progress": before.progress,
                    "retryCount": before.retry_count,
                    "lastError": REQUEUE_FAILED_MESSAGE,
                    "result": before.result.clone().map_or(Bson::Null, Bson::Document),
                    "finishedAt": before.finished_at.map_or(Bson::Null, Bson::DateTime),
                    "updatedAt": DateTime::now(),
                };
                let mut update = restore_update(before, set);
                let by = format!("bulk:{}", before.user_id);
                push_events(&mut update, &[Event::new(EventKind::RetryUndone, by)]);
                statement(handoff_fence(&before.task_id, &handoff.dedup_id), update)
            })
            .collect();
        self.update_many_statements(statements).await
    }
}
