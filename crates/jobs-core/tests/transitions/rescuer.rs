//! The rescuer's transitions (`transitions/rescue.rs`: `sweep`'s, and QStash's failure
//! callback's): lost workers, hand-offs re-sent once, tasks never picked up, deliveries QStash
//! gave up on.

use jobs_core::task::{EventKind as E, Task, TaskStatus};
use jobs_core::testing::{self, assert_legal, task};
use mongodb::bson::DateTime;

use crate::op::{Fence, Op, Read};
use crate::support::{
    LOST, LOST_CAUSE, NEVER, NEVER_CAUSE, UNDELIVERED, UNDELIVERED_CAUSE, scheduled_in_ms,
};
use crate::table::{After, HandoffAfter, NextAttemptAfter, Now, Unchanged, after, row, run};

use TaskStatus::{Cancelled, Completed, Failed, Processing, Queued, Scheduled};

#[tokio::test]
async fn fail_lost_worker() {
    let lost = || {
        task()
            .status(Processing)
            .progress(40)
            .lease_expired_secs_ago(600)
            .started_secs_ago(660)
    };
    let swept = |attempts| After {
        attempts,
        progress: 40,
        last_error: Some(LOST),
        history_len: 1,
        newest_failure: Some((attempts, LOST)),
        cause: Some(LOST_CAUSE),
        events: &[(E::Swept, "sweep")],
        ..after(Failed)
    };
    run(vec![
        row(
            "an expired lease: failed with the sweeper's message and its cause",
            lost(),
            Op::FailLostWorker(Fence::Own),
            true,
            Now(swept(1)),
        ),
        row(
            "a retried task's lost attempt is recorded with its number",
            lost().retry_count(2),
            Op::FailLostWorker(Fence::Own),
            true,
            Now(After {
                retry_count: 2,
                history_len: 3,
                ..swept(3)
            }),
        ),
        row(
            "a full timeline keeps the newest 50: the oldest event dropped",
            lost().events_len(50),
            Op::FailLostWorker(Fence::Own),
            true,
            Now(swept(1)),
        ),
        row(
            "guard: the lease is still live",
            task().status(Processing).lease_expires_in_secs(20),
            Op::FailLostWorker(Fence::Own),
            false,
            Unchanged,
        ),
        row(
            "guard: reclaimed since it was read (another lease)",
            lost(),
            Op::FailLostWorker(Fence::Stale),
            false,
            Unchanged,
        ),
        row(
            "guard: finished since it was read",
            task().status(Completed),
            Op::FailLostWorker(Fence::Stale),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn mark_redispatched() {
    let stale = || task().updated_secs_ago(300);
    let redispatched = After {
        handoff: HandoffAfter::Redispatched,
        events: &[(E::Redispatched, "sweep")],
        ..after(Queued)
    };
    run(vec![
        row(
            "a stale hand-off is marked re-sent; nothing else changes",
            stale(),
            Op::MarkRedispatched(Read::Current),
            true,
            Now(redispatched.clone()),
        ),
        row(
            "a retry's stale hand-off",
            stale().retry_count(1),
            Op::MarkRedispatched(Read::Current),
            true,
            Now(After {
                retry_count: 1,
                attempts: 1,
                history_len: 1,
                ..redispatched.clone()
            }),
        ),
        row(
            "a due scheduled task's hand-off (sweep sends it); still scheduled",
            scheduled_in_ms(-5_000),
            Op::MarkRedispatched(Read::Current),
            true,
            Now(After {
                status: Scheduled,
                attempts: 1,
                last_error: Some("Simulated failure on attempt 1"),
                history_len: 1,
                auto_retries: 1,
                next_attempt: NextAttemptAfter::Seed,
                ..redispatched.clone()
            }),
        ),
        row(
            "guard: re-sent once already",
            stale().redispatched_secs_ago(100),
            Op::MarkRedispatched(Read::Current),
            false,
            Unchanged,
        ),
        row(
            "guard: a newer hand-off since it was read",
            stale(),
            Op::MarkRedispatched(Read::Stale),
            false,
            Unchanged,
        ),
        row(
            "guard: claimed since it was read",
            task().status(Processing),
            Op::MarkRedispatched(Read::Current),
            false,
            Unchanged,
        ),
        row(
            "guard: cancelled since it was read",
            task().status(Cancelled),
            Op::MarkRedispatched(Read::Current),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn fail_never_picked_up() {
    let resent = || task().updated_secs_ago(1000).redispatched_secs_ago(880);
    let swept = |attempts| After {
        attempts,
        last_error: Some(NEVER),
        history_len: 1,
        newest_failure: Some((attempts, NEVER)),
        cause: Some(NEVER_CAUSE),
        events: &[(E::Swept, "sweep")],
        ..after(Failed)
    };
    run(vec![
        row(
            "re-sent and still waiting: failed, attempt 0",
            resent(),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(swept(0)),
        ),
        row(
            "a retry that never ran is given back",
            resent().retry_count(2),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(After {
                retry_count: 1,
                history_len: 3,
                ..swept(2)
            }),
        ),
        row(
            "a retry an earlier version queued, without retriesLeft: given back, stored from the counts",
            resent().retry_count(2).stored_retries_left(None),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(After {
                retry_count: 1,
                history_len: 3,
                ..swept(2)
            }),
        ),
        row(
            "a task stored before hand-offs were recorded: fenced on updatedAt, retry kept",
            task()
                .without_handoff()
                .updated_secs_ago(1000)
                .retry_count(1),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(After {
                retry_count: 1,
                history_len: 2,
                ..swept(1)
            }),
        ),
        row(
            "a scheduled task re-sent and never picked up: failed, nextAttemptAt cleared",
            scheduled_in_ms(-1_000_000)
                .updated_secs_ago(1000)
                .redispatched_secs_ago(880),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(After {
                history_len: 2,
                auto_retries: 1,
                ..swept(1)
            }),
        ),
        row(
            "guard: retried since it was read (a newer hand-off)",
            resent(),
            Op::FailNeverPickedUp(Read::Stale),
            false,
            Unchanged,
        ),
        row(
            "guard: without a hand-off, updated since it was read",
            task().without_handoff().updated_secs_ago(1000),
            Op::FailNeverPickedUp(Read::Stale),
            false,
            Unchanged,
        ),
        row(
            "guard: claimed since it was read",
            task().status(Processing),
            Op::FailNeverPickedUp(Read::Current),
            false,
            Unchanged,
        ),
        row(
            "guard: cancelled since it was read",
            task().status(Cancelled),
            Op::FailNeverPickedUp(Read::Current),
            false,
            Unchanged,
        ),
    ])
    .await;
}

#[tokio::test]
async fn fail_undelivered() {
    let undelivered = |attempts| After {
        attempts,
        last_error: Some(UNDELIVERED),
        history_len: 1,
        newest_failure: Some((attempts, UNDELIVERED)),
        cause: Some(UNDELIVERED_CAUSE),
        events: &[(E::DeliveryFailed, "qstash")],
        ..after(Failed)
    };
    run(vec![
        row(
            "QStash gave up on the current hand-off: failed at once",
            task(),
            Op::FailUndelivered(Read::Current),
            true,
            Now(undelivered(0)),
        ),
        row(
            // As with fail_never_picked_up, the retry that never ran is given back.
            "a retry's hand-off undelivered",
            task().retry_count(1),
            Op::FailUndelivered(Read::Current),
            true,
            Now(After {
                retry_count: 0,
                history_len: 2,
                ..undelivered(1)
            }),
        ),
        row(
            "a retry an earlier version queued, without retriesLeft: given back, stored from the counts",
            task().retry_count(1).stored_retries_left(None),
            Op::FailUndelivered(Read::Current),
            true,
            Now(After {
                retry_count: 0,
                history_len: 2,
                ..undelivered(1)
            }),
        ),
        row(
            "guard: an older hand-off's callback",
            task(),
            Op::FailUndelivered(Read::Stale),
            false,
            Unchanged,
        ),
        row(
            "guard: claimed (another delivery arrived)",
            task().status(Processing),
            Op::FailUndelivered(Read::Current),
            false,
            Unchanged,
        ),
        row(
            "guard: cancelled",
            task().status(Cancelled),
            Op::FailUndelivered(Read::Current),
            false,
            Unchanged,
        ),
    ])
    .await;
}

/// A re-send that could not be sent: flagged `resend`, found again by the next sweep's
/// question, marked again without a new time or event; the never-picked-up clock runs from the
/// first re-send.
#[tokio::test]
async fn a_failed_resend_is_sent_again_and_keeps_its_first_time() {
    let store = testing::fresh_store();
    let seed = task().updated_secs_ago(60).insert(&store).await;
    let id = &seed.task_id;
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.task_id).collect::<Vec<_>>();
    let stale = || store.stale_handoffs(DateTime::now(), 10);
    let handoff = seed.handoff.clone().unwrap();
    assert!(store.mark_redispatched(id, &handoff).await.unwrap());
    let first = store.find(id).await.unwrap().unwrap();
    let marked_at = first.handoff.as_ref().unwrap().redispatched;
    assert!(ids(stale().await.unwrap()).is_empty(), "marked: not stale");

    assert!(store.unmark_redispatched(id, &handoff).await.unwrap());
    let flagged = stale().await.unwrap();
    assert_eq!(
        ids(flagged.clone()),
        vec![id.clone()],
        "flagged: found again"
    );
    let read = flagged[0].handoff.clone().unwrap();
    assert!(read.resend);
    assert!(store.mark_redispatched(id, &read).await.unwrap());
    assert!(
        !store.mark_redispatched(id, &read).await.unwrap(),
        "once per failure"
    );
    let again = store.find(id).await.unwrap().unwrap();
    assert_legal(&again);
    let now = again.handoff.as_ref().unwrap();
    assert_eq!((now.redispatched, now.resend), (marked_at, false));
    assert_eq!(again.events, first.events, "no second redispatched event");
    // The never-picked-up clock: from the first re-send.
    let after_first = DateTime::from_millis(marked_at.unwrap().timestamp_millis() + 1);
    assert_eq!(
        ids(store.never_picked_up(after_first, 10).await.unwrap()),
        vec![id.clone()]
    );
}
