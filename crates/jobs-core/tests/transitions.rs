//! Every transition of `transitions.rs` against the real database (SecantusDB), from tables in
//! the manner of River's `riverdrivertest`: each row seeds a task in some state with the
//! factory (`jobs_core::testing`), applies one transition, and states whether its guard
//! matched and what the task looks like afterwards, the events it appended to the timeline
//! and the cause (`errorTemplate`, `errorGroup`) it recorded included. A row whose guard does
//! not match must leave the task exactly as it was. `assert_legal` checks every seed and every
//! result. The bulk transitions (`requeue_many`, `restore_many`) and `error_groups` have tables
//! of their own at the end, with the races between single and bulk retries.
//!
//! Needs `JOBS_TEST_MONGODB_URI` (`scripts/test` sets it); without it every test fails.

use std::sync::Arc;
use std::time::Duration;

use jobs_core::error_groups::Cause;
use jobs_core::store::{Store, count_commands};
use jobs_core::task::{
    AutoRetry, Backoff, EVENTS_LEN, EventKind as E, Handoff, Lease, Task, TaskId, TaskStatus,
    UserId,
};
use jobs_core::testing::{self, TaskFixture, assert_legal, task};
use jobs_core::transitions::{ENQUEUE_FAILED_MESSAGE, REQUEUE_FAILED_MESSAGE};
use mongodb::bson::DateTime;

use TaskStatus::{Cancelled, Completed, Failed, Processing, Queued, Scheduled};

/// The lease a claim or a heartbeat takes in these tests.
const LEASE: Duration = Duration::from_secs(30);
/// How far ahead `schedule_retry`'s hand-off (and so `nextAttemptAt`) is dated in these tests.
const RETRY_IN: Duration = Duration::from_secs(30);
const BOOM: &str = "Simulated failure: boom";
const ATTEMPT_3: &str = "Simulated failure on attempt 3";
/// As `sweep` words them (`sweeper.rs`), numbers included.
const LOST: &str = "The worker was lost: the task was processing for 660 s and stopped reporting progress (lease of 30 s expired).";
const NEVER: &str = "The task was never picked up: it waited in the queue for 1000 s.";
const UNDELIVERED: &str = "Delivery failed after 4 attempts (HTTP 500).";

/// A failure's cause as it must be stored: `(errorTemplate, errorGroup)`, the group being the
/// first 12 hex digits of the template's SHA-256 (computed independently, with `sha256sum`).
type CauseOf = (&'static str, &'static str);
const BOOM_CAUSE: CauseOf = ("Simulated failure: boom", "98c35906b672");
const ATTEMPT_CAUSE: CauseOf = ("Simulated failure on attempt <n>", "9ffc12975338");
const LOST_CAUSE: CauseOf = (
    "The worker was lost: the task was processing for <n> s and stopped reporting progress (lease of <n> s expired).",
    "7d698d8374ca",
);
const NEVER_CAUSE: CauseOf = (
    "The task was never picked up: it waited in the queue for <n> s.",
    "6e697410603d",
);
const UNDELIVERED_CAUSE: CauseOf = (
    "Delivery failed after <n> attempts (HTTP <n>).",
    "58d88298c05c",
);
const ENQUEUE_CAUSE: CauseOf = (ENQUEUE_FAILED_MESSAGE, "35ca0df5bf07");

/// One timeline event a transition appends: `(kind, by)`.
type Ev = (E, &'static str);

/// An automatic-retry policy with `attempts` automatic retries.
fn policy(attempts: i32) -> AutoRetry {
    AutoRetry {
        attempts,
        delay_seconds: 10,
        backoff: Backoff::Fixed,
        max_delay_seconds: 60,
    }
}

/// A task waiting for its first automatic retry (of three), due in `in_ms` milliseconds.
fn scheduled_in_ms(in_ms: i64) -> TaskFixture {
    task()
        .status(Scheduled)
        .auto_retry(policy(3), 1)
        .next_attempt_in_millis(in_ms)
}

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
    /// `claim`, delivered by `by` (`self` or `qstash`).
    Claim(&'static str),
    ReportProgress(Fence, i32),
    RenewLease(Fence),
    Complete(Fence),
    /// `fail` with [`BOOM`], not permanent, delivered by `self`.
    Fail(Fence),
    /// `fail` of the lease holder with this message and `permanent` flag, delivered by
    /// `qstash`, for the seed's last attempt.
    FailWith {
        message: &'static str,
        permanent: bool,
    },
    /// `schedule_retry` with this message, for the seed's last attempt, delivered by `qstash`,
    /// with a new hand-off dated [`RETRY_IN`] from now.
    ScheduleRetry(Fence, &'static str),
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
    /// The one the transition was given (`requeue_for_retry`'s, `schedule_retry`'s).
    Sent,
    /// The seed's, marked re-sent just now.
    Redispatched,
    /// A newer one than the seed's, recorded by what happened meanwhile.
    Newer,
}

/// `nextAttemptAt` after the transition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NextAttemptAfter {
    Absent,
    /// The seed's, as it was.
    Seed,
    /// The `at` of the hand-off the transition was given (`schedule_retry`'s).
    Sent,
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
    /// The newest `errorHistory` entry, `(attempt, message)`, written by this transition; the
    /// failure event it appended carries the same attempt and message.
    newest_failure: Option<(i32, &'static str)>,
    /// Whether that entry says `permanent: true`.
    permanent: bool,
    /// `(errorTemplate, errorGroup)` written by this transition; `None`: the seed's, kept.
    cause: Option<CauseOf>,
    auto_retries: i32,
    next_attempt: NextAttemptAfter,
    /// The events appended to the timeline since the seed (by the transition, and by what
    /// happened meanwhile), oldest first; the last is the newest event of the task. The
    /// seed's events are kept before them, the oldest dropped beyond [`EVENTS_LEN`].
    events: &'static [Ev],
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
        permanent: false,
        cause: None,
        auto_retries: 0,
        next_attempt: NextAttemptAfter::Absent,
        events: &[],
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

fn in_future(by: Duration) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + by.as_millis() as i64)
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
        Op::Claim(by) => {
            let claimed = store.claim(id, LEASE, by).await.unwrap();
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
        Op::FailWith { message, permanent } => {
            let lease = lease_of(seeded, Fence::Own);
            let ok = store
                .fail(id, &lease, seeded.attempts, message, permanent, "qstash")
                .await;
            Applied::matched(ok.unwrap())
        }
        Op::ScheduleRetry(fence, message) => {
            let sent = Handoff::new(id, in_future(RETRY_IN), false);
            let lease = lease_of(seeded, fence);
            let ok = store
                .schedule_retry(id, &lease, seeded.attempts, message, &sent, "qstash")
                .await;
            Applied {
                sent: Some(sent),
                ..Applied::matched(ok.unwrap())
            }
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
            if requeued {
                store
                    .requeue_for_retry(id, &seeded.user_id, &sent)
                    .await
                    .unwrap()
                    .expect("the retry re-queues the task");
            }
            happen(store, seeded, meanwhile).await;
            let ok = store
                .restore_after_failed_requeue(id, &seeded.user_id, &sent)
                .await;
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

/// The `(kind, by)` of events.
fn kinds(events: &[jobs_core::task::Event]) -> Vec<(E, &str)> {
    events.iter().map(|e| (e.kind, e.by.as_str())).collect()
}

/// The seed's events kept, then exactly `appended` (oldest first), at most [`EVENTS_LEN`] in
/// all, the oldest dropped; the appended ones written just now.
fn assert_events_appended(name: &str, seeded: &Task, stored: &Task, appended: &[Ev]) {
    let cap = EVENTS_LEN as usize;
    let len = (seeded.events.len() + appended.len()).min(cap);
    assert_eq!(
        stored.events.len(),
        len,
        "{name}: events = seed's + appended, at most {cap}: {:?}",
        kinds(&stored.events)
    );
    let kept = len - appended.len();
    assert_eq!(
        stored.events[..kept],
        seeded.events[seeded.events.len() - kept..],
        "{name}: the seed's newest {kept} events kept in order, the oldest dropped"
    );
    let new = &stored.events[kept..];
    assert_eq!(
        kinds(new),
        appended.to_vec(),
        "{name}: (kind, by) of the events appended"
    );
    let now = DateTime::now().timestamp_millis();
    for event in new {
        let at = event.at.timestamp_millis();
        assert!(
            (now - 10_000..=now).contains(&at),
            "{name}: event {event:?} written just now"
        );
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
        (stored.max_retries, stored.created_at, stored.auto_retry),
        (seeded.max_retries, seeded.created_at, seeded.auto_retry),
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
        stored.auto_retries,
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
            want.auto_retries,
        ),
        "{name}: (status, retryCount, attempts, progress, lastError, errorHistory length, autoRetries)"
    );
    assert_events_appended(name, &seeded, &stored, want.events);
    if let Some((attempt, message)) = want.newest_failure {
        let newest = stored.error_history.last().expect("a newest failure");
        assert_eq!(
            (newest.attempt, newest.message.as_str(), newest.permanent),
            (attempt, message, want.permanent),
            "{name}: newest errorHistory entry (attempt, message, permanent)"
        );
        assert_eq!(
            newest.at, stored.updated_at,
            "{name}: recorded by this update"
        );
        let failure = stored
            .events
            .iter()
            .rev()
            .find(|e| matches!(e.kind, E::Failed | E::Swept | E::DeliveryFailed))
            .expect("a failure event");
        assert_eq!(
            (failure.attempt, failure.message.as_deref()),
            (Some(attempt), Some(message)),
            "{name}: the failure event names the attempt and the message"
        );
        if let Some(scheduled) = stored.events.last().filter(|e| e.kind == E::Scheduled) {
            assert_eq!(
                (scheduled.attempt, scheduled.message.as_deref()),
                (Some(attempt + 1), None),
                "{name}: the scheduled event names the next attempt"
            );
        }
    } else {
        assert!(
            stored.error_history.starts_with(&seeded.error_history),
            "{name}: errorHistory only grows"
        );
    }
    assert!(
        !want.permanent || want.newest_failure.is_some(),
        "{name}: a permanent failure is a new failure"
    );
    let cause = (
        stored.error_template.as_deref(),
        stored.error_group.as_deref(),
    );
    match want.cause {
        Some((template, group)) => {
            assert_eq!(
                cause,
                (Some(template), Some(group)),
                "{name}: (errorTemplate, errorGroup) of this failure"
            );
            // The cause is the newest failure's (a task retried since keeps it).
            let newest = stored.error_history.last().expect("a failure");
            let of = Cause::of(&newest.message);
            assert_eq!(
                (of.template.as_str(), of.group.as_str()),
                (template, group),
                "{name}: the cause of the newest failure's message"
            );
        }
        None => assert_eq!(
            cause,
            (
                seeded.error_template.as_deref(),
                seeded.error_group.as_deref()
            ),
            "{name}: cause kept"
        ),
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

    let next = match want.next_attempt {
        NextAttemptAfter::Absent => None,
        NextAttemptAfter::Seed => seeded.next_attempt_at,
        NextAttemptAfter::Sent => applied.sent.as_ref().map(|h| h.at),
    };
    assert_eq!(stored.next_attempt_at, next, "{name}: nextAttemptAt");

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
    assert_events_appended(
        "20 retries",
        &seeded,
        &stored,
        &[(E::Retried, "user:alice")],
    );
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
    assert_events_appended("20 claims", &seeded, &stored, &[(E::Claimed, "self")]);
}

/// One candidate of a bulk retry by `alice`: whether `requeue_many` moves it (exactly
/// `requeue_for_retry`'s guard), and whether it is claimed before the undo (`restore_many`).
struct Candidate {
    name: &'static str,
    seed: TaskFixture,
    moves: bool,
    claimed_before_undo: bool,
}

fn candidate(name: &'static str, seed: TaskFixture, moves: bool) -> Candidate {
    Candidate {
        name,
        seed,
        moves,
        claimed_before_undo: false,
    }
}

/// `requeue_many` over a mix moves exactly the retryable tasks, each with its own hand-off, in
/// ONE command; `requeued_with` names exactly those (ONE command); `restore_many` (ONE
/// command) puts back exactly as they were the ones given, except one claimed meanwhile.
#[tokio::test]
async fn requeue_many_then_restore_many() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let failed = || task().status(Failed).progress(50);
    let candidates = [
        candidate("retryable", failed(), true),
        candidate(
            "retryable: retried once, its automatic retries used up",
            failed().retry_count(1).auto_retry(policy(2), 2),
            true,
        ),
        candidate(
            "retryable: stored before hand-offs were recorded",
            failed().without_handoff(),
            true,
        ),
        candidate(
            "retryable: with a full timeline",
            failed().events_len(50),
            true,
        ),
        Candidate {
            claimed_before_undo: true,
            ..candidate("retryable, then claimed before the undo", failed(), true)
        },
        candidate("not failed: completed", task().status(Completed), false),
        candidate("not failed: queued", task(), false),
        candidate("not failed: scheduled", scheduled_in_ms(60_000), false),
        candidate(
            "out of retries",
            failed().retry_count(3).max_retries(3),
            false,
        ),
        candidate("another user's", failed().owner("mallory"), false),
    ];
    let mut seeded = Vec::new();
    for candidate in &candidates {
        let task = candidate.seed.insert(&store).await;
        assert_legal(&task);
        seeded.push(task);
    }
    let now = DateTime::now();
    let handoffs: Vec<(TaskId, Handoff)> = seeded
        .iter()
        .map(|t| (t.task_id.clone(), Handoff::new(&t.task_id, now, true)))
        .collect();

    let (requeued, commands) = count_commands(store.requeue_many(&alice, &handoffs)).await;
    requeued.unwrap();
    assert_eq!(commands, 1, "requeue_many is ONE command");
    for ((candidate, seed), (_, handoff)) in candidates.iter().zip(&seeded).zip(&handoffs) {
        let name = candidate.name;
        let stored = store.find(&seed.task_id).await.unwrap().unwrap();
        assert_legal(&stored);
        if !candidate.moves {
            assert_eq!(&stored, seed, "{name}: not moved, unchanged");
            continue;
        }
        assert_eq!(
            (
                stored.status,
                stored.progress,
                stored.last_error.as_deref(),
                stored.retry_count,
                stored.auto_retries,
                stored.next_attempt_at,
                stored.finished_at,
                stored.result.as_ref(),
            ),
            (Queued, 0, None, seed.retry_count + 1, 0, None, None, None),
            "{name}: re-queued as requeue_for_retry does"
        );
        assert_eq!(stored.handoff.as_ref(), Some(handoff), "{name}: its own");
        assert_eq!(
            (
                stored.attempts,
                &stored.error_history,
                &stored.error_group,
                stored.updated_at
            ),
            (seed.attempts, &seed.error_history, &seed.error_group, now),
            "{name}: attempts, history and cause kept; updatedAt = the hand-off's"
        );
        assert_events_appended(name, seed, &stored, &[(E::Retried, "bulk:alice")]);
    }

    let (moved, commands) = count_commands(store.requeued_with(&handoffs)).await;
    assert_eq!(commands, 1, "requeued_with is ONE command");
    let mut moved: Vec<String> = moved.unwrap().iter().map(|id| id.to_string()).collect();
    moved.sort();
    let mut movers: Vec<String> = candidates
        .iter()
        .zip(&seeded)
        .filter(|(c, _)| c.moves)
        .map(|(_, t)| t.task_id.to_string())
        .collect();
    movers.sort();
    assert_eq!(moved, movers, "requeued_with names exactly the moved tasks");

    // Every hand-off failed; one task was claimed before the undo (the hand-off arrived
    // after all).
    for (candidate, seed) in candidates.iter().zip(&seeded) {
        if candidate.claimed_before_undo {
            store
                .claim(&seed.task_id, LEASE, "qstash")
                .await
                .unwrap()
                .expect("claimed");
        }
    }
    let restores: Vec<(TaskId, Handoff)> = candidates
        .iter()
        .zip(&handoffs)
        .filter(|(c, _)| c.moves)
        .map(|(_, sent)| sent.clone())
        .collect();
    let (restored, commands) = count_commands(store.restore_many(&alice, &restores)).await;
    restored.unwrap();
    assert_eq!(commands, 1, "restore_many is ONE command");
    for ((candidate, seed), (_, handoff)) in candidates.iter().zip(&seeded).zip(&handoffs) {
        let name = candidate.name;
        let stored = store.find(&seed.task_id).await.unwrap().unwrap();
        assert_legal(&stored);
        if !candidate.moves {
            assert_eq!(&stored, seed, "{name}: not moved, unchanged");
        } else if candidate.claimed_before_undo {
            assert_eq!(
                (stored.status, stored.retry_count, stored.handoff.as_ref()),
                (Processing, seed.retry_count + 1, Some(handoff)),
                "{name}: left alone, running"
            );
            assert_events_appended(
                name,
                seed,
                &stored,
                &[(E::Retried, "bulk:alice"), (E::Claimed, "qstash")],
            );
        } else {
            // Failed again with the re-queue error and its retry given back (`$inc`); the
            // rest as the re-queue left it (progress 0, a fresh automatic budget, the unsent
            // hand-off), a new finishedAt and updatedAt, and the two events.
            let expected = Task {
                last_error: Some(REQUEUE_FAILED_MESSAGE.to_owned()),
                progress: 0,
                auto_retries: 0,
                handoff: Some(handoff.clone()),
                finished_at: stored.finished_at,
                updated_at: stored.updated_at,
                events: stored.events.clone(),
                ..seed.clone()
            };
            assert_eq!(stored, expected, "{name}: restored");
            assert!(stored.finished_at >= Some(now), "{name}: failed again now");
            assert!(stored.updated_at >= now, "{name}: updatedAt moves on");
            assert_events_appended(
                name,
                seed,
                &stored,
                &[(E::Retried, "bulk:alice"), (E::RetryUndone, "bulk:alice")],
            );
        }
    }
}

/// Ten single retries and one bulk retry of the same ten tasks, all at once: each task is
/// re-queued exactly once, by whoever won it. Five rounds, for different interleavings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_and_bulk_retries_move_each_task_once() {
    let store = Arc::new(testing::fresh_store());
    let mut bulk_wins = Vec::new();
    for _ in 0..5 {
        bulk_wins.push(race_single_and_bulk_retries(&store).await);
    }
    eprintln!("race: of 10 tasks per round, the bulk retry won {bulk_wins:?}");
}

/// One round of the race; returns how many tasks the bulk retry won.
async fn race_single_and_bulk_retries(store: &Arc<Store>) -> usize {
    let mut seeded = Vec::new();
    for _ in 0..10 {
        seeded.push(task().status(Failed).insert(store).await);
    }
    let now = DateTime::now();
    let bulk: Vec<(TaskId, Handoff)> = seeded
        .iter()
        .map(|t| (t.task_id.clone(), Handoff::new(&t.task_id, now, true)))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(seeded.len() + 1));
    let singles: Vec<_> = seeded
        .iter()
        .map(|t| {
            let (store, start, id) = (store.clone(), start.clone(), t.task_id.clone());
            tokio::spawn(async move {
                let handoff = Handoff::new(&id, DateTime::now(), true);
                start.wait().await;
                let won = store.requeue_for_retry(&id, &user("alice"), &handoff).await;
                (handoff, won.unwrap().is_some())
            })
        })
        .collect();
    let many = {
        let (store, start, bulk) = (store.clone(), start.clone(), bulk.clone());
        tokio::spawn(async move {
            start.wait().await;
            store.requeue_many(&user("alice"), &bulk).await.unwrap();
        })
    };
    let mut single_results = Vec::new();
    for single in singles {
        single_results.push(single.await.unwrap());
    }
    many.await.unwrap();

    let by_bulk = store.requeued_with(&bulk).await.unwrap();
    let mut bulk_wins = 0;
    for ((seed, (single_handoff, single_won)), (_, bulk_handoff)) in
        seeded.iter().zip(&single_results).zip(&bulk)
    {
        let stored = store.find(&seed.task_id).await.unwrap().unwrap();
        assert_legal(&stored);
        let bulk_won = by_bulk.contains(&seed.task_id);
        assert!(
            bulk_won != *single_won,
            "{}: exactly one retry moved it (bulk {bulk_won}, single {single_won})",
            seed.task_id
        );
        assert_eq!(
            (stored.status, stored.retry_count),
            (Queued, 1),
            "moved exactly once"
        );
        let (winner, by) = match bulk_won {
            true => (bulk_handoff, "bulk:alice"),
            false => (single_handoff, "user:alice"),
        };
        assert_eq!(
            stored.handoff.as_ref(),
            Some(winner),
            "the winner's hand-off"
        );
        assert_events_appended("race", seed, &stored, &[(E::Retried, by)]);
        bulk_wins += usize::from(bulk_won);
    }
    bulk_wins
}

/// `error_groups`: one aggregation; a user's tasks of one status grouped by cause, with the
/// template, the count, the latest failure and an example (the latest), largest first (then
/// latest first); other users' tasks, other statuses and tasks without a cause left out.
#[tokio::test]
async fn error_groups() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let failed = |message: &str, secs_ago| {
        task()
            .status(Failed)
            .last_error(message)
            .updated_secs_ago(secs_ago)
    };
    let attempt_1 = failed("Simulated failure on attempt 1", 30)
        .insert(&store)
        .await;
    let attempt_2 = failed("Simulated failure on attempt 2", 10)
        .retry_count(1)
        .insert(&store)
        .await;
    let attempt_3 = failed(ATTEMPT_3, 20).retry_count(2).insert(&store).await;
    let http_503 = failed("webhook answered HTTP 503", 5).insert(&store).await;
    let http_500 = failed("webhook answered HTTP 500", 40).insert(&store).await;
    let boom = failed(BOOM, 1).insert(&store).await;
    let unqueued = failed(ENQUEUE_FAILED_MESSAGE, 50)
        .attempts(0)
        .insert(&store)
        .await;
    // Left out: another user's, other statuses, no cause recorded.
    failed("Simulated failure on attempt 1", 0)
        .owner("mallory")
        .insert(&store)
        .await;
    let scheduled = scheduled_in_ms(60_000).insert(&store).await;
    task().status(Completed).insert(&store).await;
    task().status(Cancelled).insert(&store).await;
    failed("Simulated failure on attempt 1", 0)
        .without_error_group()
        .insert(&store)
        .await;
    let retried = failed("Simulated failure on attempt 1", 0)
        .insert(&store)
        .await;
    let handoff = Handoff::new(&retried.task_id, DateTime::now(), true);
    store
        .requeue_for_retry(&retried.task_id, &alice, &handoff)
        .await
        .unwrap()
        .expect("retried: queued, its cause kept");
    let seeded = [
        &attempt_1, &attempt_2, &attempt_3, &http_503, &http_500, &boom, &unqueued, &scheduled,
    ];
    seeded.iter().for_each(|t| assert_legal(t));

    type Group = (String, String, i64, DateTime, String);
    let groups = |status| {
        let store = &store;
        let alice = &alice;
        async move {
            let (groups, commands) = count_commands(store.error_groups(alice, status)).await;
            assert_eq!(commands, 1, "error_groups is ONE command");
            groups
                .unwrap()
                .into_iter()
                .map(|g| {
                    let count = match g.get("count") {
                        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
                        Some(mongodb::bson::Bson::Int64(n)) => *n,
                        other => panic!("count {other:?} in {g}"),
                    };
                    (
                        g.get_str("_id").unwrap().to_owned(),
                        g.get_str("template").unwrap().to_owned(),
                        count,
                        *g.get_datetime("lastAt").unwrap(),
                        g.get_str("exampleTaskId").unwrap().to_owned(),
                    )
                })
                .collect::<Vec<Group>>()
        }
    };
    let group = |(template, group): CauseOf, count, latest: &Task| -> Group {
        (
            group.to_owned(),
            template.to_owned(),
            count,
            latest.updated_at,
            latest.task_id.to_string(),
        )
    };
    const HTTP_CAUSE: CauseOf = ("webhook answered HTTP <n>", "fb2941b260ea");
    assert_eq!(
        groups(Failed).await,
        vec![
            group(ATTEMPT_CAUSE, 3, &attempt_2),
            group(HTTP_CAUSE, 2, &http_503),
            group(BOOM_CAUSE, 1, &boom),
            group(ENQUEUE_CAUSE, 1, &unqueued),
        ],
        "alice's failed tasks by cause: (errorGroup, template, count, lastAt, exampleTaskId)"
    );
    assert_eq!(
        groups(Scheduled).await,
        vec![group(ATTEMPT_CAUSE, 1, &scheduled)],
        "alice's scheduled tasks by cause"
    );
}

/// A bulk retry reads its candidates before it re-queues them; a single retry, a run and a
/// failure can happen in between. Undoing the bulk retry must give back ITS retry only
/// (`$inc`), not write back the count it read (which would give back the other retry too).
#[tokio::test]
async fn restore_many_gives_back_one_retry_whatever_happened_since_the_read() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let seed = task().status(Failed).retry_count(1).insert(&store).await;
    let id = &seed.task_id;
    // Between the bulk retry's read and its update: a single retry, claimed, failed again.
    let single = Handoff::new(id, DateTime::now(), true);
    store
        .requeue_for_retry(id, &alice, &single)
        .await
        .unwrap()
        .unwrap();
    let claimed = store.claim(id, LEASE, "self").await.unwrap().unwrap();
    let lease = claimed.lease.unwrap();
    assert!(
        store
            .fail(id, &lease, claimed.attempts, "boom", false, "self")
            .await
            .unwrap()
    );
    // The bulk retry re-queues it (retryCount 3), its hand-off fails, it is undone.
    let bulk = vec![(id.clone(), Handoff::new(id, DateTime::now(), true))];
    store.requeue_many(&alice, &bulk).await.unwrap();
    assert_eq!(store.find(id).await.unwrap().unwrap().retry_count, 3);
    store.restore_many(&alice, &bulk).await.unwrap();
    let stored = store.find(id).await.unwrap().unwrap();
    assert_legal(&stored);
    assert_eq!(
        (stored.status, stored.retry_count),
        (Failed, 2),
        "the single retry stays counted"
    );
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
