//! The rescuer (`sweep`): re-sends hand-offs that may have been lost, fails tasks whose worker
//! was lost and tasks nobody picked up even after a re-send, saying what happened and for how
//! long, so their owners can retry them. It asks the store named questions and applies the
//! sweeper's transitions; it builds no filter itself.

use std::time::{Duration, Instant};

use mongodb::bson::DateTime;
use serde::Serialize;

use crate::config::Config;
use crate::dispatch::{Dispatcher, QSTASH_BATCH, SELF_INVOCATIONS_IN_FLIGHT};
use crate::error::Result;
use crate::failpoints::{At, hit};
use crate::store::{MIGRATION_SWEEP_BUDGET, Store};
use crate::task::due_everywhere_by;

/// Tasks handled per call and per kind; the next run takes the rest.
const SWEEP_BATCH: i64 = 500;
/// Database errors while marking or flagging hand-offs after which a sweep stops re-sending
/// (the database is likely down; every further write would wait for its timeout).
const MAX_MARK_ERRORS: u32 = 3;
/// A sweep stops starting new work after this long, well within the function's
/// `maxDuration` (300 s in `vercel.json`), and answers `more: true`.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(60);

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
    /// Hand-offs this sweep marked but could not send; they are flagged `resend`, so the next
    /// sweep sends them again.
    pub not_sent: u32,
    /// The sweep stopped at its time budget or batch size with work left: call it again.
    pub more: bool,
}

/// One sweep over the whole collection, at most 500 tasks per kind and [`SWEEP_BUDGET`] of
/// time (the next run takes the rest).
pub async fn sweep(store: &Store, dispatcher: &Dispatcher, config: &Config) -> Result<SweepReport> {
    let started = Instant::now();
    let out_of_time = || started.elapsed() >= SWEEP_BUDGET;
    let now = DateTime::now();
    let mut report = SweepReport::default();
    let ago = |by: Duration| DateTime::from_millis(now.timestamp_millis() - by.as_millis() as i64);

    // Self-invocation cannot wait: due scheduled tasks are handed off now. Through QStash
    // they wait there, and are re-sent only when their delivery seems lost.
    let due_before = match dispatcher.can_wait() {
        true => ago(config.redispatch_after),
        false => due_everywhere_by(now),
    };
    let stale = store
        .stale_handoffs(ago(config.redispatch_after), SWEEP_BATCH)
        .await?;
    let due = store.due_scheduled(due_before, SWEEP_BATCH).await?;
    report.more |= stale.len() as i64 == SWEEP_BATCH || due.len() as i64 == SWEEP_BATCH;
    // A re-send that kept failing past the queue timeout is failed by this call below, not
    // sent once more first.
    let given_up = ago(config.queue_timeout);
    let pending: Vec<_> = stale
        .into_iter()
        .chain(due)
        .filter_map(|task| Some((task.task_id, task.handoff?)))
        .filter(|(_, h)| !(h.resend && h.redispatched.is_some_and(|at| at < given_up)))
        .collect();
    let chunk = match dispatcher.can_wait() {
        true => QSTASH_BATCH,
        false => SELF_INVOCATIONS_IN_FLIGHT,
    };
    // Marked and sent a chunk at a time, so a sweep that dies mid-way leaves at most one chunk
    // marked but unsent, and a chunk's hand-offs that could not be sent are flagged for the
    // next sweep.
    let mut errors = 0;
    let stop = |errors: u32| out_of_time() || errors >= MAX_MARK_ERRORS;
    for chunk in pending.chunks(chunk) {
        let mut marked = Vec::new();
        for (task_id, handoff) in chunk {
            if stop(errors) {
                report.more = true;
                break;
            }
            // Only the sweep that marks it re-sends it (claimed, cancelled or re-sent by
            // another sweep meanwhile: skipped).
            match store
                .mark_redispatched(task_id, handoff)
                .await
                .at("sweep.marked")
            {
                Ok(true) => marked.push((task_id.clone(), handoff.clone())),
                Ok(false) => {}
                // The mark may have applied without answering: send it anyway (the same dedup
                // id; a task claimed meanwhile claims nothing twice).
                Err(error) if error.may_have_applied() => {
                    marked.push((task_id.clone(), handoff.clone()))
                }
                // This one waits for the next sweep; the others go on.
                Err(error) => {
                    tracing::warn!(task_id = %task_id, %error, "hand-off not marked; left for the next sweep");
                    errors += 1;
                    report.more = true;
                }
            }
        }
        let mut sent = dispatcher.dispatch_many(&marked).await;
        if hit("sweep.handed_off").is_some() {
            sent.fill(false); // sent, but the answers lost
        }
        for ((task_id, handoff), sent) in marked.iter().zip(sent) {
            if sent {
                report.redispatched += 1;
                continue;
            }
            report.not_sent += 1;
            // Left marked, it is failed as never picked up after JOBS_QUEUE_TIMEOUT_SECONDS.
            if let Err(error) = store.unmark_redispatched(task_id, handoff).await {
                tracing::warn!(task_id = %task_id, %error, "failed re-send not flagged");
                errors += 1;
            }
        }
        if stop(errors) {
            report.more = true;
            break;
        }
    }

    let lost = match out_of_time() {
        true => Vec::new(),
        false => store.lost_workers(now, SWEEP_BATCH).await?,
    };
    report.more |= lost.len() as i64 == SWEEP_BATCH;
    for task in lost {
        if out_of_time() {
            report.more = true;
            break;
        }
        let Some(lease) = &task.lease else { continue };
        let ran_for = seconds_between(task.started_at.unwrap_or(task.updated_at), now);
        let message = format!(
            "The worker was lost: the task was processing for {ran_for} s and stopped reporting progress (lease of {} s expired).",
            config.lease.as_secs()
        );
        let failed = store.fail_lost_worker(&task, lease, &message).await;
        report.timed_out += u32::from(failed.at("sweep.failed_lost")?);
    }

    let unclaimed = match out_of_time() {
        true => Vec::new(),
        false => {
            store
                .never_picked_up(ago(config.queue_timeout), SWEEP_BATCH)
                .await?
        }
    };
    report.more |= unclaimed.len() as i64 == SWEEP_BATCH;
    for task in unclaimed {
        if out_of_time() {
            report.more = true;
            break;
        }
        let queued_at = task.handoff.as_ref().map_or(task.updated_at, |h| h.at);
        let waited = seconds_between(queued_at, now);
        let message =
            format!("The task was never picked up: it waited in the queue for {waited} s.");
        let failed = store.fail_never_picked_up(&task, &message).await;
        report.never_picked_up += u32::from(failed.at("sweep.failed_lost")?);
    }
    // Upkeep: tasks stored before `retriesLeft` existed get it, bounded passes at a time,
    // until the migration is done (then it costs nothing). A failure is the next sweep's.
    if !out_of_time() {
        let turn = store.migrate_retries_left(MIGRATION_SWEEP_BUDGET);
        match tokio::time::timeout(MIGRATION_SWEEP_BUDGET, turn).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "migration of retriesLeft stopped; the next sweep carries on");
            }
        }
    }
    tracing::info!(
        timed_out = report.timed_out,
        never_picked_up = report.never_picked_up,
        redispatched = report.redispatched,
        not_sent = report.not_sent,
        more = report.more,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sweep finished"
    );
    Ok(report)
}

fn seconds_between(from: DateTime, to: DateTime) -> i64 {
    (to.timestamp_millis() - from.timestamp_millis()).max(0) / 1000
}
