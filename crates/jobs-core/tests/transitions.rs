//! Every transition of `transitions.rs` against the real database (SecantusDB), from tables in
//! the manner of River's `riverdrivertest`: each row seeds a task in some state with the
//! factory (`jobs_core::testing`), applies one transition, and states whether its guard
//! matched and what the task looks like afterwards. A row whose guard does not match must
//! leave the task exactly as it was. `assert_legal` checks every seed and every result.
//!
//! Needs `JOBS_TEST_MONGODB_URI` (`scripts/test` sets it); without it every test fails.

use std::sync::Arc;
use std::time::Duration;

use jobs_core::store::Store;
use jobs_core::task::{Handoff, Lease, Task, TaskStatus, UserId};
use jobs_core::testing::{self, TaskFixture, assert_legal, task};
use jobs_core::transitions::{ENQUEUE_FAILED_MESSAGE, REQUEUE_FAILED_MESSAGE};
use mongodb::bson::DateTime;

use TaskStatus::{Cancelled, Completed, Failed, Processing, Queued};

/// The lease a claim or a heartbeat takes in these tests.
const LEASE: Duration = Duration::from_secs(30);
const BOOM: &str = "Simulated failure: boom";
const LOST: &str = "The worker was lost: test";
const NEVER: &str = "The task was never picked up: test";
const UNDELIVERED: &str = "Delivery failed after 4 attempts (HTTP 500).";

/// Which lease a worker's write is fenced on.
#[derive(Debug, Clone, Copy)]
enum Fence {
    /// The seeded task's own lease: the worker that holds it.
    Own,
    /// Another lease id: a worker whose lease was taken away and given to another claim.
    Stale,
}

/// How the caller read the task it passes to a transition.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// As it is stored.
    Current,
    /// Before its last change: an older hand-off (another dedup id) or, for a task without a
    /// hand-off, an older `updatedAt`.
    Stale,
}

/// What happened between the moment a caller read (or re-queued) the task and its call.
#[derive(Debug, Clone, Copy)]
enum Meanwhile {
    Nothing,
    /// A worker claimed it (the hand-off did arrive after all).
    Claimed,
    /// The owner cancelled it.
    Cancelled,
    /// It was claimed, failed and retried: a newer hand-off is in flight.
    RetriedAgain,
}

/// One transition call. The arguments a caller would have read come from the seeded task.
#[derive(Debug, Clone, Copy)]
enum Op {
    Claim,
    ReportProgress(Fence, i32),
    RenewLease(Fence),
    Complete(Fence),
    Fail(Fence),
    Requeue {
        user: &'static str,
    },
    /// `restore_after_failed_requeue` of the `before` that `requeue_for_retry` returned, with
    /// the retry's hand-off, after `Meanwhile`; with no re-queue at all when `requeued` is false.
    Restore {
        requeued: bool,
        meanwhile: Meanwhile,
    },
    /// `fail_unqueued` of the task as `create` inserted it, with its hand-off, after `Meanwhile`.
    FailUnqueued(Meanwhile),
    Cancel {
        user: &'static str,
    },
    FailLostWorker(Fence),
    MarkRedispatched(Read),
    FailNeverPickedUp(Read),
    FailUndelivered(Read),
}

/// The lease after the transition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LeaseAfter {
    Absent,
    /// Expires `LEASE` from now: a new claim's, or the seed's renewed by a heartbeat.
    Renewed,
}

/// The hand-off after the transition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HandoffAfter {
    /// The seed's, as it was (absent if the seed had none).
    Seed,
    /// The one the transition was given (`requeue_for_retry`'s).
    Sent,
    /// The seed's, marked re-sent just now.
    Redispatched,
    /// A newer one than the seed's, recorded by what happened meanwhile.
    Newer,
}

/// The fields a transition moves, as they must be afterwards.
#[derive(Debug, Clone)]
struct After {
    status: TaskStatus,
    retry_count: i32,
    attempts: i32,
    progress: i32,
    last_error: Option<&'static str>,
    lease: LeaseAfter,
    handoff: HandoffAfter,
    history_len: usize,
    /// The newest `errorHistory` entry, `(attempt, message)`, written by this transition.
    newest_failure: Option<(i32, &'static str)>,
}

fn after(status: TaskStatus) -> After {
    After {
        status,
        retry_count: 0,
        attempts: 0,
        progress: 0,
        last_error: None,
        lease: LeaseAfter::Absent,
        handoff: HandoffAfter::Seed,
        history_len: 0,
        newest_failure: None,
    }
}

enum Expect {
    /// The guard did not hold: the stored task is exactly the seed.
    Unchanged,
    /// The task afterwards.
    Now(After),
}
use Expect::{Now, Unchanged};

struct Row {
    name: &'static str,
    seed: TaskFixture,
    op: Op,
    matched: bool,
    expect: Expect,
}

fn row(name: &'static str, seed: TaskFixture, op: Op, matched: bool, expect: Expect) -> Row {
    Row {
        name,
        seed,
        op,
        matched,
        expect,
    }
}

/// What the transition returned besides matching.
enum Returned {
    Nothing,
    /// The task as it was before the update (`requeue_for_retry`, `cancel`).
    Before(Option<Task>),
    /// The task as it is after the update (`claim`).
    After(Option<Task>),
}

struct Applied {
    matched: bool,
    returned: Returned,
    /// The hand-off the transition was given, if any.
    sent: Option<Handoff>,
}

impl Applied {
    fn matched(matched: bool) -> Self {
        Self {
            matched,
            returned: Returned::Nothing,
            sent: None,
        }
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn lease_of(seeded: &Task, fence: Fence) -> Lease {
    match (fence, &seeded.lease) {
        (Fence::Own, Some(lease)) => lease.clone(),
        _ => Lease {
            id: uuid::Uuid::new_v4().to_string(),
            expires_at: DateTime::now(),
        },
    }
}

/// The task as the caller read it.
fn as_read(seeded: &Task, read: Read) -> Task {
    let mut task = seeded.clone();
    match (read, &mut task.handoff) {
        (Read::Current, _) => {}
        (Read::Stale, Some(handoff)) => handoff.dedup_id = format!("{}-older", handoff.dedup_id),
        (Read::Stale, None) => {
            task.updated_at = DateTime::from_millis(task.updated_at.timestamp_millis() - 1000)
        }
    }
    task
}

/// The hand-off of the task as the caller read it (a made-up one if it has none).
fn handoff_of(seeded: &Task, read: Read) -> Handoff {
    as_read(seeded, read)
        .handoff
        .unwrap_or_else(|| Handoff::new(&seeded.task_id, DateTime::now(), false))
}

/// Moves the task on by `meanwhile`, as concurrent callers would.
async fn happen(store: &Store, seeded: &Task, meanwhile: Meanwhile) {
    let id = &seeded.task_id;
    match meanwhile {
        Meanwhile::Nothing => {}
        Meanwhile::Claimed => {
            store
                .claim(id, LEASE, "self")
                .await
                .unwrap()
                .expect("claim");
        }
        Meanwhile::Cancelled => {
            store
                .cancel(id, &seeded.user_id)
                .await
                .unwrap()
                .expect("cancel");
        }
        Meanwhile::RetriedAgain => {
            let claimed = store
                .claim(id, LEASE, "self")
                .await
                .unwrap()
                .expect("claim");
            let lease = claimed.lease.unwrap();
            assert!(
                store
                    .fail(id, &lease, claimed.attempts, BOOM, false, "self")
                    .await
                    .unwrap()
            );
            let again = Handoff::new(id, DateTime::now(), true);
            store
                .requeue_for_retry(id, &seeded.user_id, &again)
                .await
                .unwrap()
                .expect("second retry");
        }
    }
}

async fn apply(store: &Store, op: Op, seeded: &Task) -> Applied {
    let id = &seeded.task_id;
    match op {
        Op::Claim => {
            let claimed = store.claim(id, LEASE, "self").await.unwrap();
            Applied {
                matched: claimed.is_some(),
                returned: Returned::After(claimed),
                sent: None,
            }
        }
        Op::ReportProgress(fence, progress) => {
            let lease = lease_of(seeded, fence);
            let ok = store.report_progress(id, &lease, progress, LEASE).await;
            Applied::matched(ok.unwrap())
        }
        Op::RenewLease(fence) => {
            let ok = store.renew_lease(id, &lease_of(seeded, fence), LEASE).await;
            Applied::matched(ok.unwrap())
        }
        Op::Complete(fence) => {
            let result = mongodb::bson::doc! { "answer": 42 };
            let ok = store
                .complete(id, &lease_of(seeded, fence), result, "self")
                .await;
            Applied::matched(ok.unwrap())
        }
        Op::Fail(fence) => {
            let lease = lease_of(seeded, fence);
            let ok = store
                .fail(id, &lease, seeded.attempts, BOOM, false, "self")
                .await;
            Applied::matched(ok.unwrap())
        }
        Op::Requeue { user: name } => {
            let sent = Handoff::new(id, DateTime::now(), true);
            let before = store.requeue_for_retry(id, &user(name), &sent).await;
            let before = before.unwrap();
            Applied {
                matched: before.is_some(),
                returned: Returned::Before(before),
                sent: Some(sent),
            }
        }
        Op::Restore {
            requeued,
            meanwhile,
        } => {
            let sent = Handoff::new(id, DateTime::now(), true);
            let before = if requeued {
                store
                    .requeue_for_retry(id, &seeded.user_id, &sent)
                    .await
                    .unwrap()
                    .expect("the retry re-queues the task")
            } else {
                seeded.clone()
            };
            happen(store, seeded, meanwhile).await;
            let ok = store.restore_after_failed_requeue(&before, &sent).await;
            Applied {
                sent: Some(sent),
                ..Applied::matched(ok.unwrap())
            }
        }
        Op::FailUnqueued(meanwhile) => {
            happen(store, seeded, meanwhile).await;
            let handoff = handoff_of(seeded, Read::Current);
            let ok = store.fail_unqueued(seeded, &handoff).await;
            Applied::matched(ok.unwrap())
        }
        Op::Cancel { user: name } => {
            let before = store.cancel(id, &user(name)).await.unwrap();
            Applied {
                matched: before.is_some(),
                returned: Returned::Before(before),
                sent: None,
            }
        }
        Op::FailLostWorker(fence) => {
            let lease = lease_of(seeded, fence);
            let ok = store.fail_lost_worker(seeded, &lease, LOST).await;
            Applied::matched(ok.unwrap())
        }
        Op::MarkRedispatched(read) => {
            let ok = store.mark_redispatched(id, &handoff_of(seeded, read)).await;
            Applied::matched(ok.unwrap())
        }
        Op::FailNeverPickedUp(read) => {
            let ok = store
                .fail_never_picked_up(&as_read(seeded, read), NEVER)
                .await;
            Applied::matched(ok.unwrap())
        }
        Op::FailUndelivered(read) => {
            let dedup_id = handoff_of(seeded, read).dedup_id;
            let ok = store.fail_undelivered(seeded, &dedup_id, UNDELIVERED).await;
            Applied::matched(ok.unwrap())
        }
    }
}

/// Runs every row on one fresh database, each on its own task.
async fn run(rows: Vec<Row>) {
    let store = testing::fresh_store();
    for row in rows {
        check_row(&store, row).await;
    }
}

async fn check_row(store: &Store, row: Row) {
    let name = row.name;
    let seeded = row.seed.insert(store).await;
    assert_legal(&seeded);
    let applied = apply(store, row.op, &seeded).await;
    let stored = store
        .find(&seeded.task_id)
        .await
        .unwrap()
        .expect("the task is still stored");
    eprintln!("row {name:?}: {:?} -> {stored:?}", row.op);
    assert_legal(&stored);
    assert_eq!(applied.matched, row.matched, "{name}: did the guard match?");

    match applied.returned {
        Returned::Nothing => {}
        Returned::Before(before) => {
            assert_eq!(before.is_some(), row.matched, "{name}");
            if let Some(before) = before {
                assert_eq!(before, seeded, "{name}: returns the task as it was");
            }
        }
        Returned::After(after) => {
            assert_eq!(after.is_some(), row.matched, "{name}");
            if let Some(after) = after {
                assert_eq!(after, stored, "{name}: returns the task as it is now");
            }
        }
    }

    // What no transition ever changes.
    assert_eq!(
        (
            &stored.task_id,
            &stored.user_id,
            &stored.kind,
            &stored.payload
        ),
        (
            &seeded.task_id,
            &seeded.user_id,
            &seeded.kind,
            &seeded.payload
        ),
        "{name}"
    );
    assert_eq!(
        (stored.max_retries, stored.created_at),
        (seeded.max_retries, seeded.created_at),
        "{name}"
    );
    assert!(stored.updated_at >= seeded.updated_at, "{name}");

    let want = match row.expect {
        Unchanged => {
            assert_eq!(stored, seeded, "{name}: a guard that fails changes nothing");
            return;
        }
        Now(want) => want,
    };
    let got = (
        stored.status,
        stored.retry_count,
        stored.attempts,
        stored.progress,
        stored.last_error.as_deref(),
        stored.error_history.len(),
    );
    assert_eq!(
        got,
        (
            want.status,
            want.retry_count,
            want.attempts,
            want.progress,
            want.last_error,
            want.history_len,
        ),
        "{name}: (status, retryCount, attempts, progress, lastError, errorHistory length)"
    );
    if let Some((attempt, message)) = want.newest_failure {
        let newest = stored.error_history.last().expect("a newest failure");
        assert_eq!(
            (newest.attempt, newest.message.as_str()),
            (attempt, message),
            "{name}: newest errorHistory entry"
        );
        assert_eq!(
            newest.at, stored.updated_at,
            "{name}: recorded by this update"
        );
    } else {
        assert!(
            stored.error_history.starts_with(&seeded.error_history),
            "{name}: errorHistory only grows"
        );
    }

    let now = DateTime::now().timestamp_millis();
    match (want.lease, &stored.lease) {
        (LeaseAfter::Absent, None) => {}
        (LeaseAfter::Renewed, Some(lease)) => {
            let expires_in = lease.expires_at.timestamp_millis() - now;
            let lease_ms = LEASE.as_millis() as i64;
            assert!(
                (lease_ms - 10_000..=lease_ms).contains(&expires_in),
                "{name}: lease renewed for {LEASE:?}, expires in {expires_in} ms"
            );
            if let Some(seed) = &seeded.lease {
                assert_eq!(lease.id, seed.id, "{name}: the same lease, renewed");
            }
        }
        (want, got) => panic!("{name}: lease should be {want:?}, is {got:?}"),
    }

    let (stored_handoff, seed_handoff) = (stored.handoff.as_ref(), seeded.handoff.as_ref());
    match want.handoff {
        HandoffAfter::Seed => assert_eq!(stored_handoff, seed_handoff, "{name}: hand-off kept"),
        HandoffAfter::Sent => assert_eq!(
            stored_handoff,
            applied.sent.as_ref(),
            "{name}: the transition's hand-off recorded"
        ),
        HandoffAfter::Redispatched => {
            let stored = stored_handoff.expect("a hand-off");
            let at = stored
                .redispatched
                .expect("marked re-sent")
                .timestamp_millis();
            assert!(
                (now - 10_000..=now).contains(&at),
                "{name}: re-sent just now"
            );
            let unmarked = Handoff {
                redispatched: None,
                ..stored.clone()
            };
            assert_eq!(Some(&unmarked), seed_handoff, "{name}: the same hand-off");
        }
        HandoffAfter::Newer => {
            let (stored, seed) = (stored_handoff.expect("a hand-off"), seed_handoff.unwrap());
            assert!(
                stored.dedup_id != seed.dedup_id && stored.at >= seed.at,
                "{name}: a newer hand-off"
            );
        }
    }
}

#[tokio::test]
async fn claim() {
    run(vec![
        row(
            "a fresh queued task is claimed: new lease, first attempt",
            task(),
            Op::Claim,
            true,
            Now(After {
                attempts: 1,
                lease: LeaseAfter::Renewed,
                ..after(Processing)
            }),
        ),
        row(
            "a retried task is claimed: attempts counts on, history kept",
            task().retry_count(2).attempts(2),
            Op::Claim,
            true,
            Now(After {
                retry_count: 2,
                attempts: 3,
                lease: LeaseAfter::Renewed,
                history_len: 2,
                ..after(Processing)
            }),
        ),
        row(
            "a redelivery finds it already processing",
            task().status(Processing).progress(40),
            Op::Claim,
            false,
            Unchanged,
        ),
        row(
            "not claimable: completed",
            task().status(Completed),
            Op::Claim,
            false,
            Unchanged,
        ),
        row(
            "not claimable: failed",
            task().status(Failed),
            Op::Claim,
            false,
            Unchanged,
        ),
        row(
            "not claimable: cancelled",
            task().status(Cancelled),
            Op::Claim,
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
            "the lease holder's progress is written and its lease renewed",
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
            "the lease holder's heartbeat renews its lease, nothing else",
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
    run(vec![
        row(
            "the lease holder completes: progress 100, lease released",
            task().status(Processing).progress(70),
            Op::Complete(Fence::Own),
            true,
            Now(After {
                attempts: 1,
                progress: 100,
                ..after(Completed)
            }),
        ),
        row(
            "a retried task completes; its history stays",
            task().status(Processing).retry_count(1),
            Op::Complete(Fence::Own),
            true,
            Now(After {
                retry_count: 1,
                attempts: 2,
                progress: 100,
                history_len: 1,
                ..after(Completed)
            }),
        ),
        row(
            "an expired lease not swept yet still completes",
            task().status(Processing).lease_expired_secs_ago(5),
            Op::Complete(Fence::Own),
            true,
            Now(After {
                attempts: 1,
                progress: 100,
                ..after(Completed)
            }),
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
    run(vec![
        row(
            "the lease holder fails: lastError, errorHistory, lease released",
            task().status(Processing).progress(50),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                attempts: 1,
                progress: 50,
                last_error: Some(BOOM),
                history_len: 1,
                newest_failure: Some((1, BOOM)),
                ..after(Failed)
            }),
        ),
        row(
            "a retried task fails again: history grows",
            task().status(Processing).retry_count(2),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                retry_count: 2,
                attempts: 3,
                last_error: Some(BOOM),
                history_len: 3,
                newest_failure: Some((3, BOOM)),
                ..after(Failed)
            }),
        ),
        row(
            "a full history keeps the newest 20",
            task().status(Processing).attempts(25).error_history_len(20),
            Op::Fail(Fence::Own),
            true,
            Now(After {
                attempts: 25,
                last_error: Some(BOOM),
                history_len: 20,
                newest_failure: Some((25, BOOM)),
                ..after(Failed)
            }),
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
async fn requeue_for_retry() {
    let failed = || task().status(Failed).progress(50);
    let alice = Op::Requeue { user: "alice" };
    run(vec![
        row(
            "the owner's failed task: queued, progress 0, no error, one retry used",
            failed(),
            alice,
            true,
            Now(After {
                retry_count: 1,
                attempts: 1,
                history_len: 1,
                handoff: HandoffAfter::Sent,
                ..after(Queued)
            }),
        ),
        row(
            "the last retry left",
            failed().retry_count(2).max_retries(3),
            alice,
            true,
            Now(After {
                retry_count: 3,
                attempts: 3,
                history_len: 3,
                handoff: HandoffAfter::Sent,
                ..after(Queued)
            }),
        ),
        row(
            "a task that failed before its first run",
            failed().attempts(0).last_error(ENQUEUE_FAILED_MESSAGE),
            alice,
            true,
            Now(After {
                retry_count: 1,
                history_len: 1,
                handoff: HandoffAfter::Sent,
                ..after(Queued)
            }),
        ),
        row(
            "a task stored before hand-offs were recorded gets one",
            failed().without_handoff(),
            alice,
            true,
            Now(After {
                retry_count: 1,
                attempts: 1,
                history_len: 1,
                handoff: HandoffAfter::Sent,
                ..after(Queued)
            }),
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
    run(vec![
        row(
            "the retry is given back; the task is as before, with the re-queue error",
            failed(),
            restore(Meanwhile::Nothing),
            true,
            Now(After {
                retry_count: 1,
                attempts: 2,
                progress: 50,
                last_error: Some(REQUEUE_FAILED_MESSAGE),
                history_len: 2,
                newest_failure: None,
                ..after(Failed)
            }),
        ),
        row(
            "a task stored before hand-offs were recorded is restored without one",
            failed().without_handoff(),
            restore(Meanwhile::Nothing),
            true,
            Now(After {
                retry_count: 1,
                attempts: 2,
                progress: 50,
                last_error: Some(REQUEUE_FAILED_MESSAGE),
                history_len: 2,
                ..after(Failed)
            }),
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
                ..after(Processing)
            }),
        ),
        row(
            "guard: cancelled meanwhile",
            task(),
            Op::FailUnqueued(Meanwhile::Cancelled),
            false,
            Now(after(Cancelled)),
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
                ..after(Queued)
            }),
        ),
    ])
    .await;
}

#[tokio::test]
async fn cancel() {
    let alice = Op::Cancel { user: "alice" };
    run(vec![
        row(
            "the owner cancels a queued task",
            task(),
            alice,
            true,
            Now(after(Cancelled)),
        ),
        row(
            "the owner cancels a running task: its lease is taken",
            task().status(Processing).progress(30),
            alice,
            true,
            Now(After {
                attempts: 1,
                progress: 30,
                ..after(Cancelled)
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

#[tokio::test]
async fn fail_lost_worker() {
    let lost = || {
        task()
            .status(Processing)
            .progress(40)
            .lease_expired_secs_ago(600)
            .started_secs_ago(660)
    };
    run(vec![
        row(
            "an expired lease: failed with the sweeper's message",
            lost(),
            Op::FailLostWorker(Fence::Own),
            true,
            Now(After {
                attempts: 1,
                progress: 40,
                last_error: Some(LOST),
                history_len: 1,
                newest_failure: Some((1, LOST)),
                ..after(Failed)
            }),
        ),
        row(
            "a retried task's lost attempt is recorded with its number",
            lost().retry_count(2),
            Op::FailLostWorker(Fence::Own),
            true,
            Now(After {
                retry_count: 2,
                attempts: 3,
                progress: 40,
                last_error: Some(LOST),
                history_len: 3,
                newest_failure: Some((3, LOST)),
                ..after(Failed)
            }),
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
    run(vec![
        row(
            "a stale hand-off is marked re-sent; nothing else changes",
            stale(),
            Op::MarkRedispatched(Read::Current),
            true,
            Now(After {
                handoff: HandoffAfter::Redispatched,
                ..after(Queued)
            }),
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
                handoff: HandoffAfter::Redispatched,
                ..after(Queued)
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
    run(vec![
        row(
            "re-sent and still waiting: failed, attempt 0",
            resent(),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(After {
                last_error: Some(NEVER),
                history_len: 1,
                newest_failure: Some((0, NEVER)),
                ..after(Failed)
            }),
        ),
        row(
            "a retry that never ran is given back",
            resent().retry_count(2),
            Op::FailNeverPickedUp(Read::Current),
            true,
            Now(After {
                retry_count: 1,
                attempts: 2,
                last_error: Some(NEVER),
                history_len: 3,
                newest_failure: Some((2, NEVER)),
                ..after(Failed)
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
                attempts: 1,
                last_error: Some(NEVER),
                history_len: 2,
                newest_failure: Some((1, NEVER)),
                ..after(Failed)
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
    run(vec![
        row(
            "QStash gave up on the current hand-off: failed at once",
            task(),
            Op::FailUndelivered(Read::Current),
            true,
            Now(After {
                last_error: Some(UNDELIVERED),
                history_len: 1,
                newest_failure: Some((0, UNDELIVERED)),
                ..after(Failed)
            }),
        ),
        row(
            // As with fail_never_picked_up, the retry that never ran is given back.
            "a retry's hand-off undelivered",
            task().retry_count(1),
            Op::FailUndelivered(Read::Current),
            true,
            Now(After {
                retry_count: 0,
                attempts: 1,
                last_error: Some(UNDELIVERED),
                history_len: 2,
                newest_failure: Some((1, UNDELIVERED)),
                ..after(Failed)
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
                store.requeue_for_retry(&id, &user, &handoff).await.unwrap()
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
}

/// Exactly one of 20 concurrent deliveries of one task claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_task_one_wins() {
    let store = Arc::new(testing::fresh_store());
    let seeded = task().insert(&store).await;
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (store, id) = (store.clone(), seeded.task_id.clone());
            tokio::spawn(async move { store.claim(&id, LEASE, "self").await.unwrap() })
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
}
