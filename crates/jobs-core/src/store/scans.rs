//! What the sweep looks for: tasks that a lost worker, a lost hand-off or a due retry left
//! waiting. Each scan is bounded by `limit`; the sweep takes the rest next time.

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};

use super::Store;
use crate::error::Result;
use crate::task::{Task, TaskStatus};

/// A hand-off `sweep` has not re-sent yet, or whose re-send could not be sent.
fn not_resent() -> Vec<Document> {
    vec![
        doc! { "handoff.redispatched": { "$exists": false } },
        doc! { "handoff.resend": true },
    ]
}

impl Store {
    /// `processing` tasks whose lease expired before `now`: their worker is gone.
    pub async fn lost_workers(&self, now: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Processing, "lease.expiresAt": { "$lt": now } },
            limit,
        )
        .await
    }

    /// `queued` tasks handed off before `before` and not re-sent yet: their hand-off may
    /// have been lost (the function was killed before it, or the queue dropped it).
    pub async fn stale_handoffs(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Queued, "handoff.at": { "$lt": before },
            "$or": not_resent() },
            limit,
        )
        .await
    }

    /// `scheduled` tasks whose next attempt was due before `before` and not yet handed off
    /// by `sweep`: self-invocation cannot wait, so `sweep` sends them when due (and, through
    /// QStash, re-sends one whose delivery seems lost).
    pub async fn due_scheduled(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Scheduled, "handoff.at": { "$lt": before },
            "$or": not_resent() },
            limit,
        )
        .await
    }

    /// `queued` (or `scheduled`) tasks whose hand-off was re-sent before `before` and that are
    /// still unclaimed (and tasks queued before hand-offs were recorded, untouched since
    /// `before`): the re-send had its full chance too.
    pub async fn never_picked_up(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] }, "$or": [
                { "handoff.redispatched": { "$lt": before } },
                { "handoff": { "$exists": false }, "updatedAt": { "$lt": before } },
            ] },
            limit,
        )
        .await
    }

    /// Up to `limit` tasks matching `filter`, in no particular order, without what can be
    /// large and what none of their readers (the rescuer, bulk retry by ids) looks at: the
    /// payload and its versions, the timeline, the steps.
    pub(super) async fn scan(&self, filter: Document, limit: i64) -> Result<Vec<Task>> {
        let tasks = self.tasks().await?;
        let find = tasks
            .find(filter)
            .projection(doc! { "payload": 0, "payloadHistory": 0, "payloadBase": 0,
            "events": 0, "steps": 0 })
            .limit(limit)
            .batch_size(limit as u32);
        self.run(async { find.await?.try_collect().await }).await
    }
}
