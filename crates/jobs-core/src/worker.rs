//! Runs one claimed task to its end: the processor runs on its own tokio task (so a panic is
//! caught and becomes a failure), and every write it causes is fenced on the claim's lease.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::{self, Document};
use serde_json::Value;

use mongodb::bson::DateTime;

use tokio_util::sync::CancellationToken;

use crate::alerts::{Alerts, Failure};
use crate::dispatch::Dispatcher;
use crate::failpoints::{At, hit};
use crate::processors::{Job, ProcessorError, Processors, Recorder};
use crate::steps::{Memo, StepRecord};
use crate::store::Store;
use crate::task::{
    AutoRetry, EventKind, Handoff, Lease, Task, TaskId, TaskStatus, document_to_json,
};
use crate::transitions::Ran;

/// A run's progress and steps, written on its task fenced on its lease.
struct FencedRecorder {
    store: Arc<Store>,
    task_id: TaskId,
    lease: Lease,
    lease_for: Duration,
    by: &'static str,
}

impl Recorder for FencedRecorder {
    fn report(
        &self,
        percent: i32,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProcessorError>> + Send + '_>> {
        Box::pin(async move {
            match self
                .store
                .report_progress(&self.task_id, &self.lease, percent, self.lease_for)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(ProcessorError::Stopped),
                // A missed progress write is not worth failing the task; the final write decides.
                Err(error) => {
                    tracing::warn!(task_id = %self.task_id, %error, "progress not recorded");
                    Ok(())
                }
            }
        })
    }

    fn record_step(
        &self,
        index: usize,
        step: StepRecord,
        resumed: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProcessorError>> + Send + '_>> {
        Box::pin(async move {
            let write = || {
                self.store.record_step(
                    (&self.task_id, &self.lease),
                    (index, &step),
                    resumed,
                    (self.lease_for, self.by),
                )
            };
            // A write that failed, or applied without answering, is made again after the final
            // write's pauses (a database blip must not fail the attempt; the heartbeat keeps
            // the lease meanwhile), unless the task shows it applied (its events would be
            // added twice).
            let mut written = write().await;
            for pause in FINAL_WRITE_BACKOFF {
                let Err(error) = &written else {
                    break;
                };
                tracing::warn!(task_id = %self.task_id, step = %step.name, %error, retry_in_ms = pause.as_millis() as u64, "step record failed; retrying");
                tokio::time::sleep(pause).await;
                let stored = self.store.find(&self.task_id).await.ok().flatten();
                let applied = stored.is_some_and(|task| {
                    task.lease.is_some_and(|l| l.id == self.lease.id)
                        && task.steps.get(index) == Some(&step)
                });
                written = match applied {
                    true => Ok(true),
                    false => write().await,
                };
            }
            match written {
                Ok(true) => Ok(()),
                Ok(false) => Err(ProcessorError::Stopped),
                // A step whose record is not stored must not let later ones be stored after
                // it (what is stored is a prefix of one run): the attempt fails, and the next
                // one runs it again.
                Err(error) => Err(ProcessorError::Failed(format!(
                    "Step \"{}\" could not be recorded: {error}",
                    step.name
                ))),
            }
        })
    }
}

/// Processor output as a document: objects as they are, anything else under `value`.
fn result_document(value: Value) -> Document {
    match bson::to_bson(&value) {
        Ok(bson::Bson::Document(doc)) => doc,
        Ok(other) => bson::doc! { "value": other },
        Err(_) => Document::new(),
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .map_or_else(
                || "Processor panicked".into(),
                |m| format!("Processor panicked: {m}"),
            ),
        Err(_) => "Processor was aborted".into(),
    }
}

/// Pauses between attempts of the final write when the database is briefly unavailable
/// (a failover, a restart): about 16 s of pauses, plus up to `JOBS_DB_TIMEOUT_MS` per attempt.
/// The heartbeat keeps renewing the lease meanwhile. The write is fenced on the lease, so
/// repeating it is safe even past the lease: once `sweep` has failed the task as lost, it
/// changes nothing.
const FINAL_WRITE_BACKOFF: [Duration; 6] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// What a worker needs besides its task: where to write, how to hand off an automatic retry,
/// the processors, the lease length, and who delivered the attempt (for the timeline).
pub struct Worker {
    /// The store every write goes through.
    pub store: Arc<Store>,
    /// Hands off a scheduled automatic retry.
    pub dispatcher: Arc<Dispatcher>,
    /// The registered processors.
    pub processors: Processors,
    /// `JOBS_LEASE_SECONDS`.
    pub lease_for: Duration,
    /// `qstash` or `self`.
    pub by: &'static str,
    /// Alerts on failures (docs/spec.md §21).
    pub alerts: Arc<Alerts>,
}

/// Runs `task`, which `claim` just returned (so it holds a lease), and records the outcome.
/// The lease is renewed for the whole run, the final write's retries included; when it can no
/// longer be renewed, the processor is told to stop (docs/spec.md §11).
pub async fn run(worker: Worker, task: Task) {
    let Some(lease) = task.lease.clone() else {
        tracing::error!(task_id = %task.task_id, "claimed task has no lease");
        return;
    };
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let heartbeat = Heartbeat {
        store: &worker.store,
        task_id: &task.task_id,
        lease: &lease,
        lease_for: worker.lease_for,
    };
    let work = async {
        attempt(&worker, task.clone(), &lease, &stop).await;
        done.cancel();
    };
    tokio::join!(heartbeat.keep(&stop, &done), work);
}

/// One attempt of `task` under `lease`: the processor, then its outcome recorded.
async fn attempt(worker: &Worker, task: Task, lease: &Lease, stop: &CancellationToken) {
    let Worker {
        store,
        dispatcher,
        processors,
        lease_for,
        by,
        alerts,
    } = worker;
    let (lease_for, by) = (*lease_for, *by);
    let started = Instant::now();
    let task_id = task.task_id.clone();
    let attempt = task.attempts;
    // The version this attempt runs: edits happen only while the task is failed.
    let ran = Ran {
        attempt,
        payload_version: Some(task.payload_version),
    };
    let policy = task.auto_retry.filter(|p| task.auto_retries < p.attempts);
    let auto_retries = task.auto_retries;
    let user = task.user_id.clone();
    let (kind, budget_spent) = (task.kind.clone(), task.retry_count >= task.max_retries);

    let outcome = match processors.get(&task.kind) {
        None => Err(ProcessorError::Failed(format!(
            "Unknown task type: {}",
            task.kind
        ))),
        Some(processor) => {
            let recorder = FencedRecorder {
                store: store.clone(),
                task_id: task_id.clone(),
                lease: lease.clone(),
                lease_for,
                by,
            };
            let steps = Mutex::new(Memo::new(task.steps));
            let running_step = tokio::sync::Mutex::new(());
            let payload = document_to_json(task.payload);
            let id = task_id.to_string();
            let cancel = stop.clone();
            let running = tokio::spawn(async move {
                let job = Job {
                    task_id: &id,
                    attempt,
                    payload: &payload,
                    recorder: &recorder,
                    steps: &steps,
                    running_step: &running_step,
                    cancel: &cancel,
                };
                processor.run(job).await
            });
            supervise(&task_id, lease_for, running, stop).await
        }
    };
    if hit("worker.ran").is_some() {
        return; // the outcome lost, as if the process died: the lease expires, `sweep` rescues
    }

    let succeeded = outcome.is_ok();
    // What alerts see of a failure (docs/spec.md §21): its message, and whether it leaves the
    // task with no retry (none scheduled, and the manual budget spent).
    let failure = match &outcome {
        Err(ProcessorError::Failed(message)) => {
            Some((message.clone(), policy.is_none() && budget_spent))
        }
        Err(ProcessorError::Permanent(message)) => Some((message.clone(), budget_spent)),
        _ => None,
    };
    // A failure's write retried after an error may find its own earlier write applied (the
    // fence gone with it): the task then holds this attempt's `failed` event.
    let fail = async |message: &str, permanent: bool| {
        let written = with_backoff(&task_id, || async {
            store
                .fail((&task_id, &user), lease, ran, message, permanent, by)
                .await
                .at("worker.recorded")
        })
        .await;
        match written {
            Ok(false) => store
                .find(&task_id)
                .await
                .map(|task| task.is_some_and(|task| failed_in(&task, attempt))),
            other => other,
        }
    };
    let recorded = match outcome {
        Ok(value) => {
            let result = result_document(value);
            with_backoff(&task_id, || async {
                store
                    .complete(&task_id, lease, result.clone(), by)
                    .await
                    .at("worker.recorded")
            })
            .await
        }
        Err(ProcessorError::Failed(message)) => match policy {
            Some(policy) => {
                let retry = AutomaticRetry::after(&task_id, &policy, auto_retries + 1);
                let scheduled = with_backoff(&task_id, || async {
                    store
                        .schedule_retry(&task_id, lease, ran, &message, &retry.handoff, by)
                        .await
                        .at("worker.recorded")
                })
                .await;
                // A write retried after an error may find its own earlier write applied (the
                // fence gone with it): the task then carries this hand-off.
                let scheduled = match scheduled {
                    Ok(false) => store
                        .find(&task_id)
                        .await
                        .map(|t| t.and_then(|t| t.handoff) == Some(retry.handoff.clone())),
                    other => other,
                };
                if let Ok(true) = scheduled
                    && hit("worker.scheduled").is_none()
                {
                    retry.hand_off(dispatcher, &task_id).await;
                }
                scheduled
            }
            None => fail(&message, false).await,
        },
        Err(ProcessorError::Permanent(message)) => fail(&message, true).await,
        Err(ProcessorError::Stopped) => Ok(false),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let wrote = matches!(recorded, Ok(true));
    match recorded {
        Ok(true) => {
            tracing::info!(task_id = %task_id, attempt, elapsed_ms, ok = succeeded, "task finished")
        }
        Ok(false) => {
            tracing::info!(task_id = %task_id, attempt, elapsed_ms, "task was cancelled or its lease taken; outcome dropped")
        }
        Err(error) => {
            tracing::error!(task_id = %task_id, attempt, %error, "task outcome not recorded; the sweeper will fail it when the lease expires")
        }
    }
    // After the write, never before it: an alert can neither delay nor fail the transition.
    if let (true, Some((message, exhausted))) = (wrote, failure) {
        alerts
            .failed(Failure {
                task_id: &task_id,
                user: &user,
                kind: &kind,
                message: &message,
                exhausted,
            })
            .await;
    }
}

/// Whether `task` is `failed` by `attempt`: its last `failed` event is that attempt's.
fn failed_in(task: &Task, attempt: i32) -> bool {
    let last_failure = task
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Failed);
    task.status == TaskStatus::Failed && last_failure.is_some_and(|e| e.attempt == Some(attempt))
}

/// The next automatic retry of a task: when, and the hand-off that will start it.
struct AutomaticRetry {
    delay: Duration,
    handoff: Handoff,
}

impl AutomaticRetry {
    /// The `k`-th automatic retry under `policy`, with a random jitter factor in [0.8, 1.2].
    fn after(task_id: &TaskId, policy: &AutoRetry, k: i32) -> Self {
        let random = (uuid::Uuid::new_v4().as_u128() % 10_001) as f64 / 10_000.0;
        let delay = policy.delay(k, 0.8 + 0.4 * random);
        let at =
            DateTime::from_millis(DateTime::now().timestamp_millis() + delay.as_millis() as i64);
        Self {
            delay,
            handoff: Handoff::new(task_id, at, false),
        }
    }

    /// Through QStash the hand-off is sent now and waits there (`Upstash-Not-Before`);
    /// self-invocation cannot wait, so `sweep` (or the local ticker) hands it off when due. A
    /// failed hand-off leaves the task scheduled: `sweep` picks it up.
    async fn hand_off(&self, dispatcher: &Dispatcher, task_id: &TaskId) {
        tracing::info!(task_id = %task_id, delay_ms = self.delay.as_millis() as u64, "automatic retry scheduled");
        if dispatcher.can_wait() {
            let _ = dispatcher.dispatch(task_id, &self.handoff).await;
        }
    }
}

/// The worker's lease, renewed every sixth of its length for as long as the attempt runs.
struct Heartbeat<'a> {
    store: &'a Store,
    task_id: &'a TaskId,
    lease: &'a Lease,
    lease_for: Duration,
}

impl Heartbeat<'_> {
    /// Renews the lease until `done`. Cancels `stop` when the lease was taken (cancelled,
    /// swept) or when its last successful renewal is older than 2/3 of the lease: by then
    /// `sweep` may soon fail the task as lost and a retry start another run, so this one must
    /// have stopped first. A renewal is never awaited past that point.
    async fn keep(&self, stop: &CancellationToken, done: &CancellationToken) {
        let give_up_after = self.lease_for * 2 / 3;
        let mut renewed = Instant::now(); // the claim just set the lease
        // Every sixth: a renewal that fails is tried twice more before 2/3 of the lease.
        let mut tick = tokio::time::interval(self.lease_for / 6);
        tick.tick().await; // the first tick is immediate
        loop {
            let deadline = tokio::time::Instant::from_std(renewed + give_up_after);
            tokio::select! {
                () = done.cancelled() => return,
                () = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {}
            }
            let sent = Instant::now();
            let renewal = self
                .store
                .renew_lease(self.task_id, self.lease, self.lease_for);
            tokio::select! {
                () = done.cancelled() => return,
                answer = tokio::time::timeout_at(deadline, renewal) => match answer {
                    Ok(Ok(true)) => renewed = sent,
                    Ok(Ok(false)) => {
                        tracing::info!(task_id = %self.task_id, "lease lost; stopping the processor");
                        stop.cancel();
                        return;
                    }
                    // A missed heartbeat is retried at the next tick, until the deadline.
                    Ok(Err(error)) => tracing::warn!(task_id = %self.task_id, %error, "lease not renewed"),
                    Err(_) => break,
                },
            }
        }
        tracing::warn!(
            task_id = %self.task_id,
            since_ms = renewed.elapsed().as_millis() as u64,
            "lease not renewed for 2/3 of its length; stopping the processor"
        );
        stop.cancel();
    }
}

/// Waits for the processor; once `stop` is cancelled, gives it a sixth of the lease to return
/// (it sees [`Job::cancelled`]), then aborts it.
async fn supervise(
    task_id: &TaskId,
    lease_for: Duration,
    mut running: tokio::task::JoinHandle<Result<Value, ProcessorError>>,
    stop: &CancellationToken,
) -> Result<Value, ProcessorError> {
    let joined = |finished: Result<_, tokio::task::JoinError>| {
        finished.unwrap_or_else(|e| Err(ProcessorError::Failed(panic_message(e))))
    };
    tokio::select! {
        finished = &mut running => return joined(finished),
        () = stop.cancelled() => {}
    }
    match tokio::time::timeout(lease_for / 6, &mut running).await {
        Ok(finished) => joined(finished),
        Err(_) => {
            tracing::warn!(task_id = %task_id, "processor did not stop when told; aborted");
            running.abort();
            Err(ProcessorError::Stopped)
        }
    }
}

/// The final write, repeated on a database error (never on a lost fence: `Ok(false)`).
async fn with_backoff<F, Fut>(task_id: &TaskId, mut write: F) -> crate::error::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::error::Result<bool>>,
{
    for pause in FINAL_WRITE_BACKOFF {
        match write().await {
            Err(error) => {
                tracing::warn!(task_id = %task_id, %error, retry_in_ms = pause.as_millis() as u64, "final write failed; retrying");
                tokio::time::sleep(pause).await;
            }
            written => return written,
        }
    }
    write().await
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Document;

    use super::failed_in;
    use crate::task::{Event, EventKind, Task, TaskStatus, UserId};

    /// A failure write retried after an error knows its own earlier write applied by the
    /// task's last `failed` event: this attempt's, on a task still `failed`.
    #[test]
    fn a_failure_is_ours_when_the_last_failed_event_is_this_attempts() {
        let with = |status, attempts: &[i32]| {
            let user = UserId::parse("alice".to_owned()).expect("a user id");
            let mut task = Task::new(user, None, "demo".into(), Document::new(), 3);
            task.status = status;
            task.events = attempts
                .iter()
                .map(|&a| Event::new(EventKind::Failed, "self").attempt(a))
                .collect();
            task
        };
        assert!(failed_in(&with(TaskStatus::Failed, &[1, 2]), 2));
        assert!(
            !failed_in(&with(TaskStatus::Failed, &[1, 2]), 1),
            "a later attempt's"
        );
        assert!(
            !failed_in(&with(TaskStatus::Failed, &[]), 1),
            "no failure recorded"
        );
        assert!(
            !failed_in(&with(TaskStatus::Queued, &[2]), 2),
            "retried since"
        );
    }
}
