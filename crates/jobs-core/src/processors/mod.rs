//! Processors: the work a task type does. A processor is a Rust type registered under a name;
//! it receives the task's payload and a progress reporter and returns a result or a message.
//!
//! ```
//! use jobs_core::{Job, Processor, ProcessorFuture, Processors};
//!
//! struct Thumbnail;
//!
//! impl Processor for Thumbnail {
//!     fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
//!         Box::pin(async move {
//!             job.progress(50).await?; // `?` stops quietly when the task was cancelled
//!             Ok(serde_json::json!({ "done": true }))
//!         })
//!     }
//! }
//!
//! let processors = Processors::default().register("thumbnail", Thumbnail);
//! assert!(processors.get("thumbnail").is_some());
//! ```

mod demo;
mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use demo::Demo;
pub use webhook::Webhook;

use crate::config::Config;

/// Why a processor stopped without a result. `Failed` carries the message the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorError {
    /// The attempt failed: the message becomes `lastError` and an `errorHistory` entry, and the
    /// task is `scheduled` for an automatic retry if its policy has one left, else `failed`.
    Failed(String),
    /// The attempt failed in a way another attempt cannot fix (bad input, a refusal): the task
    /// is `failed` at once, without automatic retries, and the `errorHistory` entry says
    /// `permanent: true`. A user may still retry it.
    Permanent(String),
    /// The task was cancelled or its lease taken away: stop quietly, write nothing.
    Stopped,
}

impl<T: Into<String>> From<T> for ProcessorError {
    fn from(message: T) -> Self {
        Self::Failed(message.into())
    }
}

/// What [`Processor::run`] returns: the value stored as the task's `result`, or why it stopped.
pub type ProcessorFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Value, ProcessorError>> + Send + 'a>>;

/// Reports progress for the running task (0..=100). Implemented by the worker, which fences
/// the write on the task's lease.
pub trait ProgressSink: Send + Sync {
    /// Records `percent` and renews the lease; `Err(Stopped)` when the task is no longer this
    /// worker's.
    fn report(
        &self,
        percent: i32,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProcessorError>> + Send + '_>>;
}

/// What a processor sees of its task.
pub struct Job<'a> {
    /// The task's id, e.g. for logs or an idempotency key.
    pub task_id: &'a str,
    /// The task's `attempts` with this run: 1 for the first run, 2 for the next, whether that is
    /// a retry or a redelivery.
    pub attempt: i32,
    /// The payload given at `create`, already accepted by [`Processor::validate`].
    pub payload: &'a Value,
    pub(crate) progress: &'a dyn ProgressSink,
    pub(crate) cancel: &'a CancellationToken,
}

impl Job<'_> {
    /// Records progress; an `Err(Stopped)` means the task was cancelled: return it with `?`.
    pub async fn progress(&self, percent: i32) -> Result<(), ProcessorError> {
        self.progress.report(percent).await
    }

    /// Resolves when this run must stop: the task was cancelled or swept, or the worker could
    /// not renew its lease for 2/3 of it (docs/spec.md §11), so another run may soon start.
    /// Race long awaits against it (`tokio::select!`) and return [`ProcessorError::Stopped`];
    /// a run still going a moment later is aborted.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether [`Job::cancelled`] has resolved.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The work of one task type, registered under its name in [`Processors`]. A run may fail, panic
/// (caught: the task fails) or be stopped; a retry runs it again from the start.
pub trait Processor: Send + Sync + 'static {
    /// Rejects a payload at `create` time, so bad input never becomes a failed task.
    fn validate(&self, _payload: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Runs one attempt: report progress through `job`, then return the result or a
    /// [`ProcessorError`].
    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a>;

    /// The automatic-retry policy of tasks of this type created without one (docs/spec.md
    /// §12). None by default: automatic retries are opt-in.
    fn default_auto_retry(&self) -> Option<crate::task::AutoRetry> {
        None
    }
}

/// A task's payload as the API shows it (`get`, `list`): secrets a built-in processor keeps in
/// its payload are hidden. For `webhook`, every header value becomes `"[redacted]"` and
/// credentials in the URL `redacted`; other types' payloads are unchanged.
/// The stored payload keeps the real values, so a retry sends them again.
pub fn redact_payload(kind: &str, payload: Value) -> Value {
    match kind {
        "webhook" => webhook::redact(payload),
        _ => payload,
    }
}

/// Processors by task type.
#[derive(Clone, Default)]
pub struct Processors {
    by_type: HashMap<String, Arc<dyn Processor>>,
}

impl Processors {
    /// `demo` and `webhook` (docs/spec.md §8), configured from `config`: the work budget
    /// (`JOBS_WORK_BUDGET_SECONDS`), the webhook allow-list and whether webhooks may call private
    /// networks. `_http`, the process's shared client, is not used: a webhook call builds a
    /// client of its own, pinned to the addresses it checked.
    pub fn builtin(config: &Config, _http: reqwest::Client) -> Self {
        Self::default()
            .register("demo", Demo::new(config.work_budget))
            .register(
                "webhook",
                Webhook::new(
                    &config.webhook_allowed_hosts,
                    config.webhook_allow_private_networks,
                ),
            )
    }

    /// Adds the processor of `task_type`, replacing any earlier one; chainable.
    pub fn register(mut self, task_type: &str, processor: impl Processor) -> Self {
        self.by_type
            .insert(task_type.to_owned(), Arc::new(processor));
        self
    }

    /// The processor of `task_type`, if one is registered.
    pub fn get(&self, task_type: &str) -> Option<Arc<dyn Processor>> {
        self.by_type.get(task_type).cloned()
    }

    /// The registered task types, sorted (as `health` lists them).
    pub fn types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.by_type.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }
}
