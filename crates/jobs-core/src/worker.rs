//! Runs one claimed task to its end: the processor runs on its own tokio task (so a panic is
//! caught and becomes a failure), and every write it causes is fenced on the claim's lease.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{self, Document};
use serde_json::Value;

use mongodb::bson::DateTime;

use crate::dispatch::Dispatcher;
use crate::processors::{Job, ProcessorError, Processors, ProgressSink};
use crate::store::Store;
use crate::task::{AutoRetry, Handoff, Lease, Task, TaskId, document_to_json};

struct FencedProgress {
    store: Arc<Store>,
    task_id: TaskId,
    lease: Lease,
    lease_for: Duration,
}

impl ProgressSink for FencedProgress {
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
/// (a failover, a restart): about 16 s in all, within half of the shortest deployed lease
/// (30 s), so `sweep` does not take a finished task for a lost one. The write is fenced on the
/// lease, so repeating it is safe.
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
}

/// Runs `task`, which `claim` just returned (so it holds a lease), and records the outcome.
pub async fn run(worker: Worker, task: Task) {
    let Worker {
        store,
        dispatcher,
        processors,
        lease_for,
        by,
    } = worker;
    let Some(lease) = task.lease.clone() else {
        tracing::error!(task_id = %task.task_id, "claimed task has no lease");
        return;
    };
    let started = Instant::now();
    let task_id = task.task_id.clone();
    let attempt = task.attempts;
    let policy = task.auto_retry.filter(|p| task.auto_retries < p.attempts);
    let auto_retries = task.auto_retries;

    let outcome = match processors.get(&task.kind) {
        None => Err(ProcessorError::Failed(format!(
            "Unknown task type: {}",
            task.kind
        ))),
        Some(processor) => {
            let sink = FencedProgress {
                store: store.clone(),
                task_id: task_id.clone(),
                lease: lease.clone(),
                lease_for,
            };
            let payload = document_to_json(task.payload);
            let id = task_id.to_string();
            let running = tokio::spawn(async move {
                let job = Job {
                    task_id: &id,
                    attempt,
                    payload: &payload,
                    progress: &sink,
                };
                processor.run(job).await
            });
            supervise(&store, &task_id, &lease, lease_for, running).await
        }
    };

    let succeeded = outcome.is_ok();
    let recorded = match outcome {
        Ok(value) => {
            let result = result_document(value);
            with_backoff(&task_id, || {
                store.complete(&task_id, &lease, result.clone(), by)
            })
            .await
        }
        Err(ProcessorError::Failed(message)) => match policy {
            Some(policy) => {
                let retry = AutomaticRetry::after(&task_id, &policy, auto_retries + 1);
                let scheduled = with_backoff(&task_id, || {
                    store.schedule_retry(&task_id, &lease, attempt, &message, &retry.handoff, by)
                })
                .await;
                if let Ok(true) = scheduled {
                    retry.hand_off(&dispatcher, &task_id).await;
                }
                scheduled
            }
            None => {
                with_backoff(&task_id, || {
                    store.fail(&task_id, &lease, attempt, &message, false, by)
                })
                .await
            }
        },
        Err(ProcessorError::Permanent(message)) => {
            with_backoff(&task_id, || {
                store.fail(&task_id, &lease, attempt, &message, true, by)
            })
            .await
        }
        Err(ProcessorError::Stopped) => Ok(false),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
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

/// Waits for the processor while renewing the lease every third of its length, whatever the
/// processor reports: a step longer than the lease is not mistaken for a lost worker. When
/// the lease was taken (cancelled, swept), the processor is stopped.
async fn supervise(
    store: &Store,
    task_id: &TaskId,
    lease: &Lease,
    lease_for: Duration,
    mut running: tokio::task::JoinHandle<Result<Value, ProcessorError>>,
) -> Result<Value, ProcessorError> {
    let mut heartbeat = tokio::time::interval(lease_for / 3);
    heartbeat.tick().await; // the first tick is immediate; the claim just set the lease
    loop {
        tokio::select! {
            finished = &mut running => {
                return finished.unwrap_or_else(|e| Err(ProcessorError::Failed(panic_message(e))));
            }
            _ = heartbeat.tick() => match store.renew_lease(task_id, lease, lease_for).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(task_id = %task_id, "lease lost; stopping the processor");
                    running.abort();
                    return Err(ProcessorError::Stopped);
                }
                // A missed heartbeat is retried at the next tick; the lease outlasts two.
                Err(error) => tracing::warn!(task_id = %task_id, %error, "lease not renewed"),
            },
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
