//! A transition's table, in the manner of River's `riverdrivertest`: each row seeds a task
//! with the factory, makes one call ([`Op`]) and states whether its guard matched and what the
//! task looks like afterwards ([`Expect`]); [`run`] makes and checks every row.

use jobs_core::error_groups::Cause;
use jobs_core::store::Store;
use jobs_core::task::{EventKind as E, Handoff, Task, TaskStatus};
use jobs_core::testing::{self, TaskFixture, assert_legal};
use mongodb::bson::DateTime;

use crate::op::{Op, Returned, apply};
use crate::support::{CauseOf, Ev, LEASE, assert_events_appended};

/// The lease after the transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LeaseAfter {
    Absent,
    /// Expires `LEASE` from now: a new claim's, or the seed's renewed by a heartbeat.
    Renewed,
}

/// The hand-off after the transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HandoffAfter {
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
pub enum NextAttemptAfter {
    Absent,
    /// The seed's, as it was.
    Seed,
    /// The `at` of the hand-off the transition was given (`schedule_retry`'s).
    Sent,
}

/// The fields a transition moves, as they must be afterwards.
#[derive(Debug, Clone)]
pub struct After {
    pub status: TaskStatus,
    pub retry_count: i32,
    pub attempts: i32,
    pub progress: i32,
    pub last_error: Option<&'static str>,
    pub lease: LeaseAfter,
    pub handoff: HandoffAfter,
    pub history_len: usize,
    /// The newest `errorHistory` entry, `(attempt, message)`, written by this transition; the
    /// failure event it appended carries the same attempt and message.
    pub newest_failure: Option<(i32, &'static str)>,
    /// Whether that entry says `permanent: true`.
    pub permanent: bool,
    /// `(errorTemplate, errorGroup)` written by this transition; `None`: the seed's, kept.
    pub cause: Option<CauseOf>,
    pub auto_retries: i32,
    pub next_attempt: NextAttemptAfter,
    /// The events appended to the timeline since the seed (by the transition, and by what
    /// happened meanwhile), oldest first; the last is the newest event of the task. The
    /// seed's events are kept before them, the oldest dropped beyond
    /// [`EVENTS_LEN`](jobs_core::task::EVENTS_LEN).
    pub events: &'static [Ev],
}

pub fn after(status: TaskStatus) -> After {
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

pub enum Expect {
    /// The guard did not hold: the stored task is exactly the seed.
    Unchanged,
    /// The task afterwards.
    Now(After),
}
pub use Expect::{Now, Unchanged};

pub struct Row {
    name: &'static str,
    seed: TaskFixture,
    op: Op,
    matched: bool,
    expect: Expect,
}

pub fn row(name: &'static str, seed: TaskFixture, op: Op, matched: bool, expect: Expect) -> Row {
    Row {
        name,
        seed,
        op,
        matched,
        expect,
    }
}

/// Runs every row on one fresh database, each on its own task.
pub async fn run(rows: Vec<Row>) {
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
    // `assert_legal` checks `retriesLeft` where it is stored; these, that it is not dropped,
    // and that a transition that moves `retryCount` stores it (on a task an earlier version
    // stored without it too).
    if seeded.stored_retries_left.is_some() {
        assert!(
            stored.stored_retries_left.is_some(),
            "{name}: retriesLeft dropped"
        );
    }
    // `retriesTotal` (docs/spec.md §3): one more with each retry started (a `retried` or
    // `scheduled` event), and never fewer, a retry given back included.
    let total = |t: &Task| t.retries_total.unwrap_or(t.retry_count + t.auto_retries);
    let started = |t: &Task| {
        let retries = |e: &&jobs_core::task::Event| matches!(e.kind, E::Retried | E::Scheduled);
        t.events.iter().filter(retries).count() as i32
    };
    assert_eq!(
        total(&stored),
        total(&seeded) + started(&stored) - started(&seeded),
        "{name}: retriesTotal"
    );
    if stored.retry_count != seeded.retry_count {
        assert!(
            stored.stored_retries_left.is_some(),
            "{name}: retryCount moved without retriesLeft"
        );
    }
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
        assert_eq!(
            failure.error_group, stored.error_group,
            "{name}: the failure event keeps the cause's group the task records"
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
