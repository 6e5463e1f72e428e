//! Runs one claimed task to its end: the processor runs on its own tokio task (so a panic is
//! caught and becomes a failure), and every write it causes is fenced on the claim's lease.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{self, Document};
use serde_json::Value;

use crate::processors::{Job, ProcessorError, Processors, ProgressSink};
use crate::store::Store;
use crate::task::{Lease, Task, TaskId, document_to_json};

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
/// (a failover, a restart): about 45 s in all, well within the lease. The write is fenced on
/// the lease, so repeating it is safe.
const FINAL_WRITE_BACKOFF: [Duration; 8] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
    Duration::from_secs(15),
];

/// Runs `task`, which `claim` just returned (so it holds a lease), and records the outcome.
pub async fn run(store: Arc<Store>, processors: Processors, task: Task, lease_for: Duration) {
    let Some(lease) = task.lease.clone() else {
        tracing::error!(task_id = %task.task_id, "claimed task has no lease");
        return;
    };
    let started = Instant::now();
    let task_id = task.task_id.clone();
    let attempt = task.attempts;

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
                store.complete(&task_id, &lease, result.clone())
            })
            .await
        }
        Err(ProcessorError::Failed(message)) => {
            with_backoff(&task_id, || store.fail(&task_id, &lease, attempt, &message)).await
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
