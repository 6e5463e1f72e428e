//! What the tables and the races share: the lease and messages of these tests, the causes
//! their failures must record, the task fixtures, and the check of the events a transition
//! appends to the timeline.

use std::time::Duration;

use jobs_core::store::Store;
use jobs_core::task::{
    AutoRetry, Backoff, EVENTS_LEN, EventKind as E, Task, TaskId, TaskStatus, UserId,
};
use jobs_core::testing::{TaskFixture, task};
use jobs_core::transitions::ENQUEUE_FAILED_MESSAGE;
use mongodb::bson::DateTime;

use TaskStatus::Scheduled;

/// The lease a claim or a heartbeat takes in these tests.
pub const LEASE: Duration = Duration::from_secs(30);
pub const BOOM: &str = "Simulated failure: boom";
pub const ATTEMPT_3: &str = "Simulated failure on attempt 3";
/// As `sweep` words them (`sweeper.rs`), numbers included.
pub const LOST: &str = "The worker was lost: the task was processing for 660 s and stopped reporting progress (lease of 30 s expired).";
pub const NEVER: &str = "The task was never picked up: it waited in the queue for 1000 s.";
pub const UNDELIVERED: &str = "Delivery failed after 4 attempts (HTTP 500).";

/// A failure's cause as it must be stored: `(errorTemplate, errorGroup)`, the group being the
/// first 12 hex digits of the template's SHA-256 (computed independently, with `sha256sum`).
pub type CauseOf = (&'static str, &'static str);
pub const BOOM_CAUSE: CauseOf = ("Simulated failure: boom", "98c35906b672");
pub const ATTEMPT_CAUSE: CauseOf = ("Simulated failure on attempt <n>", "9ffc12975338");
pub const LOST_CAUSE: CauseOf = (
    "The worker was lost: the task was processing for <n> s and stopped reporting progress (lease of <n> s expired).",
    "7d698d8374ca",
);
pub const NEVER_CAUSE: CauseOf = (
    "The task was never picked up: it waited in the queue for <n> s.",
    "6e697410603d",
);
pub const UNDELIVERED_CAUSE: CauseOf = (
    "Delivery failed after <n> attempts (HTTP <n>).",
    "58d88298c05c",
);
pub const ENQUEUE_CAUSE: CauseOf = (ENQUEUE_FAILED_MESSAGE, "35ca0df5bf07");

/// One timeline event a transition appends: `(kind, by)`.
pub type Ev = (E, &'static str);

/// An automatic-retry policy with `attempts` automatic retries.
pub fn policy(attempts: i32) -> AutoRetry {
    AutoRetry {
        attempts,
        delay_seconds: 10,
        backoff: Backoff::Fixed,
        max_delay_seconds: 60,
    }
}

/// A task waiting for its first automatic retry (of three), due in `in_ms` milliseconds.
pub fn scheduled_in_ms(in_ms: i64) -> TaskFixture {
    task()
        .status(Scheduled)
        .auto_retry(policy(3), 1)
        .next_attempt_in_millis(in_ms)
}

pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// The `(kind, by)` of events.
pub fn kinds(events: &[jobs_core::task::Event]) -> Vec<(E, &str)> {
    events.iter().map(|e| (e.kind, e.by.as_str())).collect()
}

/// The seed's events kept, then exactly `appended` (oldest first), at most [`EVENTS_LEN`] in
/// all, the oldest dropped; the appended ones written just now.
pub fn assert_events_appended(name: &str, seeded: &Task, stored: &Task, appended: &[Ev]) {
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

/// The queued task `id` is claimed by `by` and its run fails ("boom"): what a retry that ran
/// and failed again leaves behind. Both steps must take effect.
pub async fn run_and_fail(store: &Store, id: &TaskId, by: &str) {
    let claimed = store
        .claim(id, LEASE, by, DateTime::now())
        .await
        .unwrap()
        .expect("claimed");
    let lease = claimed.lease.unwrap();
    let failed = store.fail(
        (id, &claimed.user_id),
        &lease,
        claimed.attempts,
        "boom",
        false,
        by,
    );
    assert!(failed.await.unwrap(), "the run failed");
}
