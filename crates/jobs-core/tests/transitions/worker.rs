//! The worker's transitions (`transitions/worker.rs`): the claim of a delivered task, its
//! progress and heartbeat, and how the attempt ends (completed, failed, or scheduled for an
//! automatic retry); every write after the claim fenced on the lease.

use std::sync::Arc;

use jobs_core::task::{EventKind as E, TaskStatus};
use jobs_core::testing::{self, assert_legal, task};
use mongodb::bson::DateTime;

use crate::op::{Fence, Op};
use crate::support::{
    ATTEMPT_3, ATTEMPT_CAUSE, BOOM, BOOM_CAUSE, LEASE, LOST, assert_events_appended, policy,
    scheduled_in_ms,
};
use crate::table::{
    After, HandoffAfter, LeaseAfter, NextAttemptAfter, Now, Unchanged, after, row, run,
};

use TaskStatus::{Cancelled, Completed, Failed, Processing, Scheduled};

#[tokio::test]
async fn claim() {
    let claimed_from_scheduled = || After {
        attempts: 2,
        lease: LeaseAfter::Renewed,
        last_error: Some("Simulated failure on attempt 1"),
        history_len: 1,
        auto_retries: 1,
        events: &[(E::Claimed, "qstash")],
        ..after(Processing)
    };
    run(vec![
        row(
            "a fresh queued task is claimed: new lease, first attempt",
            task(),
            Op::Claim("self"),
            true,
            Now(After {
                attempts: 1,
                lease: LeaseAfter::Renewed,
                events: &[(E::Claimed, "self")],
                ..after(Processing)
            }),
        ),
        row(
            "a retried task is claimed: attempts counts on, history kept",
            task().retry_count(2).attempts(2),
            Op::Claim("self"),
            true,
            Now(After {
                retry_count: 2,
                attempts: 3,
                lease: LeaseAfter::Renewed,
                history_len: 2,
                events: &[(E::Claimed, "self")],
                ..after(Processing)
            }),
        ),
        row(
            "a scheduled task past due is claimed: nextAttemptAt cleared, its failure kept",
            scheduled_in_ms(-5_000),
            Op::Claim("qstash"),
            true,
            Now(claimed_from_scheduled()),
        ),
        row(
            "a scheduled task due within the 1 s of allowed clock skew is claimed",
            scheduled_in_ms(500),
            Op::Claim("qstash"),
            true,
            Now(claimed_from_scheduled()),
        ),
        row(
            "a full timeline keeps the newest 50: the oldest event dropped",
            task().events_len(50),
            Op::Claim("self"),
            true,
            Now(After {
                attempts: 1,
                lease: LeaseAfter::Renewed,
                events: &[(E::Claimed, "self")],
                ..after(Processing)
            }),
        ),
        row(
            "not claimable: scheduled and not due for 5 s (an early delivery)",
            scheduled_in_ms(5_000),
            Op::Claim("qstash"),
            false,
            Unchanged,
        ),
        row(
            "a redelivery finds it already processing",
            task().status(Processing).progress(40),
            Op::Claim("qstash"),
            false,
            Unchanged,
        ),
        row(
            "not claimable: completed",
            task().status(Completed),
            Op::Claim("self"),
            false,
            Unchanged,
        ),
        row(
            "not claimable: failed",
            task().status(Failed),
            Op::Claim("self"),
            false,
            Unchanged,
        ),
        row(
            "not claimable: cancelled",
            task().status(Cancelled),
            Op::Claim("self"),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn report_progress() {
    let running = || task().status(Processing).progress(10);
    run(vec![
        row(
            "the lease holder's progress is written and its lease renewed; no event",
            running(),
            Op::ReportProgress(Fence::Own, 40),
            true,
            Now(After {
                attempts: 1,
                progress: 40,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "above 100 is clamped",
            running(),
            Op::ReportProgress(Fence::Own, 150),
            true,
            Now(After {
                attempts: 1,
                progress: 100,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "below 0 is clamped",
            running(),
            Op::ReportProgress(Fence::Own, -5),
            true,
            Now(After {
                attempts: 1,
                progress: 0,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "an expired lease not swept yet is renewed by its holder",
            running().lease_expired_secs_ago(5),
            Op::ReportProgress(Fence::Own, 60),
            true,
            Now(After {
                attempts: 1,
                progress: 60,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "fence: a stale lease id writes nothing",
            running(),
            Op::ReportProgress(Fence::Stale, 90),
            false,
            Unchanged,
        ),
        row(
            "fence: a cancelled task takes no progress",
            task().status(Cancelled).attempts(1),
            Op::ReportProgress(Fence::Stale, 90),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn renew_lease() {
    let running = || task().status(Processing).progress(10);
    run(vec![
        row(
            "the lease holder's heartbeat renews its lease, nothing else; no event",
            running(),
            Op::RenewLease(Fence::Own),
            true,
            Now(After {
                attempts: 1,
                progress: 10,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "an expired lease not swept yet is renewed by its holder",
            running().lease_expired_secs_ago(5),
            Op::RenewLease(Fence::Own),
            true,
            Now(After {
                attempts: 1,
                progress: 10,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "fence: a stale lease id renews nothing",
            running(),
            Op::RenewLease(Fence::Stale),
            false,
            Unchanged,
        ),
        row(
            "fence: a swept task stays failed",
            task().status(Failed).last_error(LOST),
            Op::RenewLease(Fence::Stale),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn complete() {
    let completed = |attempts| After {
        attempts,
        progress: 100,
        events: &[(E::Completed, "self")],
        ..after(Completed)
    };
    run(vec![
        row(
            "the lease holder completes: progress 100, lease released",
            task().status(Processing).progress(70),
            Op::Complete(Fence::Own),
            true,
            Now(completed(1)),
        ),
        row(
            "a retried task completes; its history stays",
            task().status(Processing).retry_count(1),
            Op::Complete(Fence::Own),
            true,
            Now(After {
                retry_count: 1,
                history_len: 1,
                ..completed(2)
            }),
        ),
        row(
            "an expired lease not swept yet still completes",
            task().status(Processing).lease_expired_secs_ago(5),
            Op::Complete(Fence::Own),
            true,
            Now(completed(1)),
        ),
        row(
            "an automatic retry completes: its automatic retries stay counted",
            task().status(Processing).auto_retry(policy(3), 2),
            Op::Complete(Fence::Own),
            true,
            Now(After {
                auto_retries: 2,
                ..completed(1)
            }),
        ),
        row(
            "a full timeline keeps the newest 50: the oldest event dropped",
            task().status(Processing).events_len(50),
            Op::Complete(Fence::Own),
            true,
            Now(completed(1)),
        ),
        row(
            "fence: a stale lease id completes nothing",
            task().status(Processing).progress(70),
            Op::Complete(Fence::Stale),
            false,
            Unchanged,
        ),
        row(
            "fence: a swept task stays failed",
            task().status(Failed).last_error(LOST),
            Op::Complete(Fence::Stale),
            false,
            Unchanged,
        ),
        row(
            "fence: a cancelled task stays cancelled",
            task().status(Cancelled).attempts(1),
            Op::Complete(Fence::Stale),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn fail() {
    let failed = |attempts| After {
        attempts,
        last_error: Some(BOOM),
        history_len: 1,
        newest_failure: Some((attempts, BOOM)),
        cause: Some(BOOM_CAUSE),
        events: &[(E::Failed, "self")],
        ..after(Failed)
    };
    run(vec![
        row(
            "the lease holder fails: lastError, errorHistory, cause, lease released",
            task().status(Processing).progress(50),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                progress: 50,
                ..failed(1)
            }),
        ),
        row(
            "a retried task fails again: history grows",
            task().status(Processing).retry_count(2),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                retry_count: 2,
                history_len: 3,
                ..failed(3)
            }),
        ),
        row(
            "a full history keeps the newest 20",
            task().status(Processing).attempts(25).error_history_len(20),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                history_len: 20,
                ..failed(25)
            }),
        ),
        row(
            "the attempt's number is not part of the cause",
            task().status(Processing).retry_count(2),
            Op::FailWith {
                message: ATTEMPT_3,
                permanent: false,
            },
            true,
            Now(After {
                retry_count: 2,
                last_error: Some(ATTEMPT_3),
                history_len: 3,
                newest_failure: Some((3, ATTEMPT_3)),
                cause: Some(ATTEMPT_CAUSE),
                events: &[(E::Failed, "qstash")],
                ..failed(3)
            }),
        ),
        row(
            "a permanent failure is failed with automatic retries left, and says so",
            task().status(Processing).auto_retry(policy(3), 1),
            Op::FailWith {
                message: BOOM,
                permanent: true,
            },
            true,
            Now(After {
                permanent: true,
                auto_retries: 1,
                events: &[(E::Failed, "qstash")],
                ..failed(1)
            }),
        ),
        row(
            "no automatic retries left: failed, its automatic retries stay counted",
            task().status(Processing).auto_retry(policy(2), 2),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                auto_retries: 2,
                ..failed(1)
            }),
        ),
        row(
            "a full timeline keeps the newest 50: the oldest event dropped",
            task().status(Processing).events_len(50),
            Op::Fail(Fence::Own),
            true,
            Now(failed(1)),
        ),
        row(
            "fence: a stale lease id fails nothing",
            task().status(Processing).progress(50),
            Op::Fail(Fence::Stale),
            false,
            Unchanged,
        ),
        row(
            "fence: a cancelled task stays cancelled",
            task().status(Cancelled).attempts(1),
            Op::Fail(Fence::Stale),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn schedule_retry() {
    let running = || {
        task()
            .status(Processing)
            .progress(40)
            .auto_retry(policy(3), 0)
    };
    let scheduled = |attempts, message, cause| After {
        attempts,
        progress: 40,
        last_error: Some(message),
        history_len: 1,
        newest_failure: Some((attempts, message)),
        cause: Some(cause),
        auto_retries: 1,
        next_attempt: NextAttemptAfter::Sent,
        handoff: HandoffAfter::Sent,
        events: &[(E::Failed, "qstash"), (E::Scheduled, "auto")],
        ..after(Scheduled)
    };
    run(vec![
        row(
            "a failed attempt with automatic retries left waits for its hand-off's time",
            running(),
            Op::ScheduleRetry(Fence::Own, BOOM),
            true,
            Now(scheduled(1, BOOM, BOOM_CAUSE)),
        ),
        row(
            "a retried task's second automatic retry; the attempt's number is not the cause",
            task()
                .status(Processing)
                .retry_count(2)
                .auto_retry(policy(3), 1),
            Op::ScheduleRetry(Fence::Own, ATTEMPT_3),
            true,
            Now(After {
                retry_count: 2,
                progress: 0,
                history_len: 3,
                auto_retries: 2,
                ..scheduled(3, ATTEMPT_3, ATTEMPT_CAUSE)
            }),
        ),
        row(
            "an expired lease not swept yet still schedules",
            running().lease_expired_secs_ago(5),
            Op::ScheduleRetry(Fence::Own, BOOM),
            true,
            Now(scheduled(1, BOOM, BOOM_CAUSE)),
        ),
        row(
            "a full timeline: two events in, the two oldest out",
            running().events_len(50),
            Op::ScheduleRetry(Fence::Own, BOOM),
            true,
            Now(scheduled(1, BOOM, BOOM_CAUSE)),
        ),
        row(
            "fence: a stale lease id schedules nothing",
            running(),
            Op::ScheduleRetry(Fence::Stale, BOOM),
            false,
            Unchanged,
        ),
        row(
            "guard: not processing: swept meanwhile (failed)",
            task()
                .status(Failed)
                .last_error(LOST)
                .auto_retry(policy(3), 0),
            Op::ScheduleRetry(Fence::Stale, BOOM),
            false,
            Unchanged,
        ),
        row(
            "guard: not processing: cancelled meanwhile",
            task()
                .status(Cancelled)
                .attempts(1)
                .auto_retry(policy(3), 0),
            Op::ScheduleRetry(Fence::Stale, BOOM),
            false,
            Unchanged,
        ),
        row(
            "guard: not processing: scheduled already (the final write repeated)",
            scheduled_in_ms(30_000),
            Op::ScheduleRetry(Fence::Own, BOOM),
            false,
            Unchanged,
        ),
    ])
    .await;
}

/// Exactly one of 20 concurrent deliveries of one task claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_task_one_wins() {
    let store = Arc::new(testing::fresh_store());
    let seeded = task().insert(&store).await;
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (store, id) = (store.clone(), seeded.task_id.clone());
            tokio::spawn(async move {
                store
                    .claim(&id, LEASE, "self", DateTime::now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap().is_some());
    }
    assert_eq!(winners, 1, "exactly one delivery claims");
    let stored = store.find(&seeded.task_id).await.unwrap().unwrap();
    assert_legal(&stored);
    assert_eq!((stored.status, stored.attempts), (Processing, 1));
    assert_events_appended("20 claims", &seeded, &stored, &[(E::Claimed, "self")]);
}

/// The claim's filter and `Task::is_due` are one rule: at the edges of the clock skew, a
/// scheduled task is claimed exactly when `is_due` says so, and `until_due` is what is left.
#[tokio::test]
async fn the_claim_takes_a_scheduled_task_exactly_when_it_is_due() {
    let store = testing::fresh_store();
    for in_ms in [-1, 0, 999, 1_000, 1_001, 1_500, 60_000] {
        let seeded = scheduled_in_ms(in_ms).insert(&store).await;
        let next = seeded.next_attempt_at.expect("scheduled");
        // Judged at a `now` exactly `in_ms` before the next attempt, whatever the wall clock.
        let now = DateTime::from_millis(next.timestamp_millis() - in_ms);
        let claimed = store
            .claim(&seeded.task_id, LEASE, "qstash", now)
            .await
            .unwrap();
        assert_eq!(claimed.is_some(), seeded.is_due(now), "{in_ms} ms early");
        let waits = seeded.until_due(now).map(|d| d.as_millis() as i64);
        assert_eq!(waits, (in_ms > 1_000).then_some(in_ms), "{in_ms} ms early");
    }
}
