//! The rescuer's transitions (`sweep`, and QStash's failure callback): lost workers,
//! hand-offs re-sent, tasks never picked up, deliveries QStash gave up on.

use super::*;

impl Store {
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
            Ran::last_of(task),
            message,
            Event::new(EventKind::Swept, "sweep"),
        );
        self.fail_where(
            filter,
            update,
            (&task.task_id, &task.user_id),
            "processing",
            "fail_lost_worker",
        )
        .await
    }

    /// queued (or scheduled) -> unchanged: marks a hand-off as re-sent by `sweep`, once (or,
    /// for a re-send that could not be sent, takes back its `resend` flag, keeping the time of
    /// the first). `true` means this caller won and must send it again (with the same
    /// deduplication id).
    pub async fn mark_redispatched(&self, task_id: &TaskId, handoff: &Handoff) -> Result<bool> {
        let mut filter = doc! {
            "taskId": task_id.as_str(),
            "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
            "handoff.dedupId": handoff.dedup_id.as_str(),
        };
        let update = match handoff.resend {
            true => {
                filter.insert("handoff.resend", true);
                doc! { "$unset": { "handoff.resend": "" } }
            }
            false => {
                filter.insert("handoff.redispatched", doc! { "$exists": false });
                let mut update = doc! { "$set": { "handoff.redispatched": DateTime::now() } };
                push_events(&mut update, &[Event::new(EventKind::Redispatched, "sweep")]);
                update
            }
        };
        let marked = self.update_one(filter, update).await?;
        if marked {
            tracing::info!(task_id = %task_id, transition = "mark_redispatched", "hand-off re-sent by sweep");
        }
        Ok(marked)
    }

    /// scheduled -> scheduled with `fresh` as its hand-off (same due time, new dedup id), when
    /// QStash gave up on hand-off `dedup_id` because every delivery came early (425): QStash
    /// keeps a dedup id it has seen, so the next publish needs a new one. Fenced on the old
    /// hand-off.
    pub async fn renew_handoff(
        &self,
        task_id: &TaskId,
        dedup_id: &str,
        fresh: &Handoff,
    ) -> Result<bool> {
        let filter = doc! {
            "taskId": task_id.as_str(),
            "status": TaskStatus::Scheduled,
            "handoff.dedupId": dedup_id,
        };
        let mut update = doc! { "$set": { "handoff": fresh.to_bson() } };
        push_events(
            &mut update,
            &[Event::new(EventKind::Redispatched, "qstash")],
        );
        let renewed = self.update_one(filter, update).await?;
        if renewed {
            tracing::info!(task_id = %task_id, transition = "renew_handoff", "early deliveries: hand-off published again");
        }
        Ok(renewed)
    }

    /// queued (or scheduled) -> unchanged: a re-send that could not be sent is flagged
    /// `resend`, so the next sweep sends it again; the time of the first re-send is kept, so
    /// the never-picked-up rule still ends a long outage. Fenced on the hand-off, so a task that
    /// moved on since is left alone.
    pub async fn unmark_redispatched(&self, task_id: &TaskId, handoff: &Handoff) -> Result<bool> {
        let filter = doc! {
            "taskId": task_id.as_str(),
            "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
            "handoff.dedupId": handoff.dedup_id.as_str(),
            "handoff.redispatched": { "$exists": true },
        };
        let cleared = self
            .update_one(filter, doc! { "$set": { "handoff.resend": true } })
            .await?;
        if cleared {
            tracing::info!(task_id = %task_id, transition = "unmark_redispatched", "re-send failed; left for the next sweep");
        }
        Ok(cleared)
    }

    /// queued/scheduled, re-sent and still unclaimed -> failed: the rescuer's half for tasks nobody
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
                let mut filter = doc! {
                    "taskId": task.task_id.as_str(),
                    "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
                    "handoff.dedupId": handoff.dedup_id.as_str(),
                };
                if handoff.retry {
                    give_back_retry(&mut filter, &mut update, task);
                }
                filter
            }
            None => doc! {
                "taskId": task.task_id.as_str(), "status": TaskStatus::Queued,
                "handoff": { "$exists": false }, "updatedAt": task.updated_at,
            },
        };
        self.fail_where(
            filter,
            update,
            (&task.task_id, &task.user_id),
            task.status.as_str(),
            "fail_never_picked_up",
        )
        .await
    }

    /// queued/scheduled -> failed when QStash gave up delivering hand-off `dedup_id` (its failure
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
        // A scheduled automatic retry whose delivery QStash gave up on fails too.
        let mut filter = doc! {
            "taskId": task.task_id.as_str(),
            "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] },
            "handoff.dedupId": dedup_id,
        };
        let current = task.handoff.as_ref().filter(|h| h.dedup_id == dedup_id);
        if current.is_some_and(|h| h.retry) {
            give_back_retry(&mut filter, &mut update, task);
        }
        self.fail_where(
            filter,
            update,
            (&task.task_id, &task.user_id),
            task.status.as_str(),
            "fail_undelivered",
        )
        .await
    }
}
