//! The owner's transitions (`transitions/owner.rs`): retry a failed task, undo a retry whose
//! hand-off failed, fail a task `create` could not hand off, and cancel.

use std::sync::Arc;

use jobs_core::error::REQUEUE_FAILED_MESSAGE;
use jobs_core::steps::Resume;
use jobs_core::task::{EventKind as E, Handoff, TaskStatus};
use jobs_core::testing::{self, assert_legal, task};
use jobs_core::transitions::ENQUEUE_FAILED_MESSAGE;
use mongodb::bson::DateTime;

use crate::op::{Meanwhile, Op};
use crate::support::{
    BOOM_CAUSE, ENQUEUE_CAUSE, assert_events_appended, policy, run_and_fail, scheduled_in_ms, user,
};
use crate::table::{After, HandoffAfter, LeaseAfter, Now, Unchanged, after, row, run};

use TaskStatus::{Cancelled, Completed, Failed, Processing, Queued};

#[tokio::test]
async fn requeue_for_retry() {
    let failed = || task().status(Failed).progress(50);
    let alice = Op::Requeue { user: "alice" };
    let queued = |retry_count, attempts| After {
        retry_count,
        attempts,
        history_len: attempts.max(1) as usize,
        handoff: HandoffAfter::Sent,
        events: &[(E::Retried, "user:alice")],
        ..after(Queued)
    };
    run(vec![
        row(
            "the owner's failed task: queued, progress 0, no error, one retry used",
            failed(),
            alice,
            true,
            Now(queued(1, 1)),
        ),
        row(
            "the last retry left",
            failed().retry_count(2).max_retries(3),
            alice,
            true,
            Now(queued(3, 3)),
        ),
        row(
            "a task that failed before its first run",
            failed().attempts(0).last_error(ENQUEUE_FAILED_MESSAGE),
            alice,
            true,
            Now(queued(1, 0)),
        ),
        row(
            "a task stored before hand-offs were recorded gets one",
            failed().without_handoff(),
            alice,
            true,
            Now(queued(1, 1)),
        ),
        row(
            "automatic retries ran out: a fresh automatic budget, no next attempt",
            failed().auto_retry(policy(2), 2),
            alice,
            true,
            Now(queued(1, 1)),
        ),
        row(
            "a full timeline keeps the newest 50: the oldest event dropped",
            failed().events_len(50),
            alice,
            true,
            Now(queued(1, 1)),
        ),
        row(
            "a task an earlier version stored without retriesLeft: stored from the counts",
            failed().retry_count(1).stored_retries_left(None),
            alice,
            true,
            Now(queued(2, 2)),
        ),
        row(
            "guard: retryCount == maxRetries",
            failed().retry_count(3).max_retries(3),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: maxRetries 0",
            failed().max_retries(0),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: another user's task",
            failed(),
            Op::Requeue { user: "mallory" },
            false,
            Unchanged,
        ),
        row("guard: queued", task(), alice, false, Unchanged),
        row(
            "guard: scheduled (an automatic retry is on its way)",
            scheduled_in_ms(60_000),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: processing",
            task().status(Processing),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: completed",
            task().status(Completed),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: cancelled",
            task().status(Cancelled),
            alice,
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn restore_after_failed_requeue() {
    let failed = || task().status(Failed).retry_count(1).progress(50);
    let restore = |meanwhile| Op::Restore {
        requeued: true,
        meanwhile,
    };
    // Failed again with the re-queue error and the retry given back (`$inc`); the rest as the
    // retry left it: progress 0, a fresh automatic budget, the unsent hand-off.
    let restored = After {
        retry_count: 1,
        attempts: 2,
        last_error: Some(REQUEUE_FAILED_MESSAGE),
        handoff: HandoffAfter::Sent,
        history_len: 2,
        events: &[(E::Retried, "user:alice"), (E::RetryUndone, "user:alice")],
        ..after(Failed)
    };
    run(vec![
        row(
            "the retry is given back, with the re-queue error",
            failed(),
            restore(Meanwhile::Nothing),
            true,
            Now(restored.clone()),
        ),
        row(
            "a task stored before hand-offs were recorded",
            failed().without_handoff(),
            restore(Meanwhile::Nothing),
            true,
            Now(restored.clone()),
        ),
        row(
            "the automatic budget stays fresh, as the retry made it",
            failed().auto_retry(policy(2), 2),
            restore(Meanwhile::Nothing),
            true,
            Now(restored.clone()),
        ),
        row(
            "guard: claimed meanwhile, it is running",
            failed(),
            restore(Meanwhile::Claimed),
            false,
            Now(After {
                retry_count: 2,
                attempts: 3,
                lease: LeaseAfter::Renewed,
                handoff: HandoffAfter::Sent,
                history_len: 2,
                events: &[(E::Retried, "user:alice"), (E::Claimed, "self")],
                ..after(Processing)
            }),
        ),
        row(
            "guard: cancelled meanwhile",
            failed(),
            restore(Meanwhile::Cancelled),
            false,
            Now(After {
                retry_count: 2,
                attempts: 2,
                handoff: HandoffAfter::Sent,
                history_len: 2,
                events: &[(E::Retried, "user:alice"), (E::Cancelled, "user:alice")],
                ..after(Cancelled)
            }),
        ),
        row(
            "guard: claimed, failed and retried again meanwhile (a newer hand-off)",
            failed(),
            restore(Meanwhile::RetriedAgain),
            false,
            Now(After {
                retry_count: 3,
                attempts: 3,
                handoff: HandoffAfter::Newer,
                history_len: 3,
                cause: Some(BOOM_CAUSE),
                events: &[
                    (E::Retried, "user:alice"),
                    (E::Claimed, "self"),
                    (E::Failed, "self"),
                    (E::Retried, "user:alice"),
                ],
                ..after(Queued)
            }),
        ),
        row(
            "guard: never re-queued",
            failed(),
            Op::Restore {
                requeued: false,
                meanwhile: Meanwhile::Nothing,
            },
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn fail_unqueued() {
    run(vec![
        row(
            "a task create could not hand off fails before its first run",
            task(),
            Op::FailUnqueued(Meanwhile::Nothing),
            true,
            Now(After {
                last_error: Some(ENQUEUE_FAILED_MESSAGE),
                history_len: 1,
                newest_failure: Some((0, ENQUEUE_FAILED_MESSAGE)),
                cause: Some(ENQUEUE_CAUSE),
                events: &[(E::Failed, "user:alice")],
                ..after(Failed)
            }),
        ),
        row(
            "guard: claimed meanwhile (the hand-off arrived after all)",
            task(),
            Op::FailUnqueued(Meanwhile::Claimed),
            false,
            Now(After {
                attempts: 1,
                lease: LeaseAfter::Renewed,
                events: &[(E::Claimed, "self")],
                ..after(Processing)
            }),
        ),
        row(
            "guard: cancelled meanwhile",
            task(),
            Op::FailUnqueued(Meanwhile::Cancelled),
            false,
            Now(After {
                events: &[(E::Cancelled, "user:alice")],
                ..after(Cancelled)
            }),
        ),
        row(
            "guard: ran, failed and was retried meanwhile",
            task(),
            Op::FailUnqueued(Meanwhile::RetriedAgain),
            false,
            Now(After {
                retry_count: 1,
                attempts: 1,
                history_len: 1,
                handoff: HandoffAfter::Newer,
                cause: Some(BOOM_CAUSE),
                events: &[
                    (E::Claimed, "self"),
                    (E::Failed, "self"),
                    (E::Retried, "user:alice"),
                ],
                ..after(Queued)
            }),
        ),
    ])
    .await;
}

#[tokio::test]
async fn cancel() {
    let alice = Op::Cancel { user: "alice" };
    let cancelled = After {
        events: &[(E::Cancelled, "user:alice")],
        ..after(Cancelled)
    };
    run(vec![
        row(
            "the owner cancels a queued task",
            task(),
            alice,
            true,
            Now(cancelled.clone()),
        ),
        row(
            "the owner cancels a running task: its lease is taken",
            task().status(Processing).progress(30),
            alice,
            true,
            Now(After {
                attempts: 1,
                progress: 30,
                ..cancelled.clone()
            }),
        ),
        row(
            "the owner cancels a scheduled task: nextAttemptAt cleared",
            scheduled_in_ms(60_000),
            alice,
            true,
            Now(After {
                attempts: 1,
                last_error: Some("Simulated failure on attempt 1"),
                history_len: 1,
                auto_retries: 1,
                ..cancelled.clone()
            }),
        ),
        row(
            "guard: another user's task",
            task(),
            Op::Cancel { user: "mallory" },
            false,
            Unchanged,
        ),
        row(
            "guard: another user's scheduled task",
            scheduled_in_ms(60_000),
            Op::Cancel { user: "mallory" },
            false,
            Unchanged,
        ),
        row(
            "guard: completed",
            task().status(Completed),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: failed",
            task().status(Failed),
            alice,
            false,
            Unchanged,
        ),
        row(
            "guard: already cancelled",
            task().status(Cancelled),
            alice,
            false,
            Unchanged,
        ),
    ])
    .await;
}

/// Exactly one of 20 concurrent retries of one task wins (SPEC section 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_task_one_wins() {
    let store = Arc::new(testing::fresh_store());
    let seeded = task().status(Failed).retry_count(1).insert(&store).await;
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (store, id, user) = (
                store.clone(),
                seeded.task_id.clone(),
                seeded.user_id.clone(),
            );
            tokio::spawn(async move {
                let handoff = Handoff::new(&id, DateTime::now(), true);
                jobs_core::testing::requeue_as_read(&store, &id, &user, &handoff)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if let Some(before) = racer.await.unwrap() {
            assert_eq!(before, seeded);
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one retry wins");
    let stored = store.find(&seeded.task_id).await.unwrap().unwrap();
    assert_legal(&stored);
    assert_eq!((stored.status, stored.retry_count), (Queued, 2));
    assert_events_appended(
        "20 retries",
        &seeded,
        &stored,
        &[(E::Retried, "user:alice")],
    );
}

/// `requeue_for_retry` is pinned on the task as read: a read made stale by another retry that
/// ran and failed again (still `failed`, one retry more) re-queues nothing; a fresh read does.
#[tokio::test]
async fn a_stale_read_requeues_nothing() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let stale = task().status(Failed).insert(&store).await;
    let id = &stale.task_id;
    let other = Handoff::new(id, DateTime::now(), true);
    assert!(
        store
            .requeue_for_retry(&stale, &alice, &other, Resume::FailedStep)
            .await
            .unwrap()
    );
    run_and_fail(&store, id, "qstash").await;

    let ours = Handoff::new(id, DateTime::now(), true);
    assert!(
        !store
            .requeue_for_retry(&stale, &alice, &ours, Resume::FailedStep)
            .await
            .unwrap(),
        "stale"
    );
    let fresh = store.find(id).await.unwrap().unwrap();
    assert_eq!((fresh.status, fresh.retry_count), (Failed, 1));
    assert!(
        store
            .requeue_for_retry(&fresh, &alice, &ours, Resume::FailedStep)
            .await
            .unwrap(),
        "fresh"
    );
    let now = store.find(id).await.unwrap().unwrap();
    assert_legal(&now);
    assert_eq!(
        (now.status, now.retry_count, now.stored_retries_left),
        (Queued, 2, Some(1))
    );
}
