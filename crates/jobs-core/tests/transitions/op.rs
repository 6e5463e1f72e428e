//! One call of a table's row ([`Op`]) and how it is made: the arguments a caller would have
//! read come from the seeded task, as it is stored or as a stale reader saw it, with what
//! concurrent callers did meanwhile.

use std::time::Duration;

use jobs_core::store::Store;
use jobs_core::task::{Handoff, Lease, Task};
use mongodb::bson::DateTime;

use crate::support::{BOOM, LEASE, LOST, NEVER, UNDELIVERED, user};

/// How far ahead `schedule_retry`'s hand-off (and so `nextAttemptAt`) is dated in these tests.
const RETRY_IN: Duration = Duration::from_secs(30);

/// Which lease a worker's write is fenced on.
#[derive(Debug, Clone, Copy)]
pub enum Fence {
    /// The seeded task's own lease: the worker that holds it.
    Own,
    /// Another lease id: a worker whose lease was taken away and given to another claim.
    Stale,
}

/// How the caller read the task it passes to a transition.
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// As it is stored.
    Current,
    /// Before its last change: an older hand-off (another dedup id) or, for a task without a
    /// hand-off, an older `updatedAt`.
    Stale,
}

/// What happened between the moment a caller read (or re-queued) the task and its call.
#[derive(Debug, Clone, Copy)]
pub enum Meanwhile {
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
pub enum Op {
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

/// What the transition returned besides matching.
pub enum Returned {
    Nothing,
    /// The task as it was before the update (`requeue_for_retry`, `cancel`).
    Before(Option<Task>),
    /// The task as it is after the update (`claim`).
    After(Option<Task>),
}

pub struct Applied {
    pub matched: bool,
    pub returned: Returned,
    /// The hand-off the transition was given, if any.
    pub sent: Option<Handoff>,
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
                .claim(id, LEASE, "self", DateTime::now())
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
                .claim(id, LEASE, "self", DateTime::now())
                .await
                .unwrap()
                .expect("claim");
            let lease = claimed.lease.unwrap();
            assert!(
                store
                    .fail(
                        (id, &seeded.user_id),
                        &lease,
                        claimed.attempts,
                        BOOM,
                        false,
                        "self"
                    )
                    .await
                    .unwrap()
            );
            let again = Handoff::new(id, DateTime::now(), true);
            jobs_core::testing::requeue_as_read(store, id, &seeded.user_id, &again)
                .await
                .unwrap()
                .expect("second retry");
        }
    }
}

/// Makes the call `op` on the seeded task.
pub async fn apply(store: &Store, op: Op, seeded: &Task) -> Applied {
    let id = &seeded.task_id;
    match op {
        Op::Claim(by) => {
            let claimed = store.claim(id, LEASE, by, DateTime::now()).await.unwrap();
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
                .fail(
                    (id, &seeded.user_id),
                    &lease,
                    seeded.attempts,
                    BOOM,
                    false,
                    "self",
                )
                .await;
            Applied::matched(ok.unwrap())
        }
        Op::FailWith { message, permanent } => {
            let lease = lease_of(seeded, Fence::Own);
            let ok = store
                .fail(
                    (id, &seeded.user_id),
                    &lease,
                    seeded.attempts,
                    message,
                    permanent,
                    "qstash",
                )
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
            let before = jobs_core::testing::requeue_as_read(store, id, &user(name), &sent).await;
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
                jobs_core::testing::requeue_as_read(store, id, &seeded.user_id, &sent)
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
