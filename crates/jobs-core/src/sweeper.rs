//! The rescuer (`sweep`): re-sends hand-offs that may have been lost, fails tasks whose worker
//! was lost and tasks nobody picked up even after a re-send, saying what happened and for how
//! long, so their owners can retry them. It asks the store named questions and applies the
//! sweeper's transitions; it builds no filter itself.

use mongodb::bson::DateTime;
use serde::Serialize;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::error::Result;
use crate::store::Store;

/// Tasks handled per call and per kind; the next run takes the rest.
const SWEEP_BATCH: i64 = 500;

/// What one sweep did: the `sweep` reply.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// `processing` tasks failed because their lease expired.
    pub timed_out: u32,
    /// `queued` or `scheduled` tasks failed because nothing claimed them, even after a re-send.
    pub never_picked_up: u32,
    /// Hand-offs sent by this sweep: stale ones re-sent with the same deduplication id, and
    /// due automatic retries handed off.
    pub redispatched: u32,
}

/// One sweep over the whole collection, at most 500 tasks per kind (the next run takes the
/// rest).
pub async fn sweep(store: &Store, dispatcher: &Dispatcher, config: &Config) -> Result<SweepReport> {
    let now = DateTime::now();
    let mut report = SweepReport::default();
    let ago = |by: std::time::Duration| {
        DateTime::from_millis(now.timestamp_millis() - by.as_millis() as i64)
    };

    // Self-invocation cannot wait: due scheduled tasks are handed off now. Through QStash
    // they wait there, and are re-sent only when their delivery seems lost.
    let due_before = match dispatcher.can_wait() {
        true => ago(config.redispatch_after),
        false => now,
    };
    let stale = store
        .stale_handoffs(ago(config.redispatch_after), SWEEP_BATCH)
        .await?;
    let due = store.due_scheduled(due_before, SWEEP_BATCH).await?;
    let mut resend = Vec::new();
    for task in stale.into_iter().chain(due) {
        let Some(handoff) = task.handoff else {
            continue;
        };
        // Only the sweep that marks it re-sends it (claimed, cancelled or re-sent by another
        // sweep meanwhile: skipped).
        if store.mark_redispatched(&task.task_id, &handoff).await? {
            resend.push((task.task_id, handoff));
        }
    }
    report.redispatched = resend.len() as u32;
    // All at once: one QStash batch, or at most 8 self-invocations in flight. A failed re-send
    // is not fatal: the task waits, and the never-picked-up rule fails it.
    dispatcher.dispatch_many(&resend).await;

    for task in store.lost_workers(now, SWEEP_BATCH).await? {
        let Some(lease) = &task.lease else { continue };
        let ran_for = seconds_between(task.started_at.unwrap_or(task.updated_at), now);
        let message = format!(
            "The worker was lost: the task was processing for {ran_for} s and stopped reporting progress (lease of {} s expired).",
            config.lease.as_secs()
        );
        report.timed_out += u32::from(store.fail_lost_worker(&task, lease, &message).await?);
    }

    for task in store
        .never_picked_up(ago(config.queue_timeout), SWEEP_BATCH)
        .await?
    {
        let queued_at = task.handoff.as_ref().map_or(task.updated_at, |h| h.at);
        let waited = seconds_between(queued_at, now);
        let message =
            format!("The task was never picked up: it waited in the queue for {waited} s.");
        report.never_picked_up += u32::from(store.fail_never_picked_up(&task, &message).await?);
    }
    tracing::info!(
        timed_out = report.timed_out,
        never_picked_up = report.never_picked_up,
        redispatched = report.redispatched,
        "sweep finished"
    );
    Ok(report)
}

fn seconds_between(from: DateTime, to: DateTime) -> i64 {
    (to.timestamp_millis() - from.timestamp_millis()).max(0) / 1000
}
