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
            running
                .await
                .unwrap_or_else(|e| Err(ProcessorError::Failed(panic_message(e))))
        }
    };

    let succeeded = outcome.is_ok();
    let recorded = match outcome {
        Ok(value) => {
            store
                .complete(&task_id, &lease, result_document(value))
                .await
        }
        Err(ProcessorError::Failed(message)) => {
            store.fail(&task_id, &lease, attempt, &message).await
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
