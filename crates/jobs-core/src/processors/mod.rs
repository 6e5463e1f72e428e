//! Processors: the work a task type does. A processor is a Rust type registered under a name;
//! it receives the task's payload, reports progress, runs its work as memoised steps, and
//! returns a result or a message.
//!
//! ```
//! use jobs_core::{Job, Processor, ProcessorFuture, Processors};
//!
//! struct Thumbnail;
//!
//! impl Processor for Thumbnail {
//!     fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
//!         Box::pin(async move {
//!             // Stored on the task: a later attempt gets `size` back without running it.
//!             let size: u64 = job.step("measure", async { Ok(1024) }).await?;
//!             job.progress(50).await?; // `?` stops quietly when the task was cancelled
//!             Ok(serde_json::json!({ "done": true, "size": size }))
//!         })
//!     }
//! }
//!
//! let processors = Processors::default().register("thumbnail", Thumbnail);
//! assert!(processors.get("thumbnail").is_some());
//! ```

mod demo;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use demo::Demo;
pub use webhook::Webhook;

use crate::config::Config;
use crate::steps::{Memo, Plan, StepRecord, StepStart};

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

impl ProcessorError {
    /// The message the user sees; `None` for `Stopped`.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Failed(message) | Self::Permanent(message) => Some(message),
            Self::Stopped => None,
        }
    }
}

impl<T: Into<String>> From<T> for ProcessorError {
    fn from(message: T) -> Self {
        Self::Failed(message.into())
    }
}

/// What [`Processor::run`] returns: the value stored as the task's `result`, or why it stopped.
pub type ProcessorFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Value, ProcessorError>> + Send + 'a>>;

/// What a run writes on its task besides its outcome: progress and steps. Implemented by the
/// worker, which fences every write on the task's lease.
pub trait Recorder: Send + Sync {
    /// Records `percent` and renews the lease; `Err(Stopped)` when the task is no longer this
    /// worker's.
    fn report(
        &self,
        percent: i32,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProcessorError>> + Send + '_>>;

    /// Stores `step` as entry `index` of the task's `steps` (dropping any after it), with its
    /// event and, when `resumed`, the `resumed` event; renews the lease. `Err(Stopped)` when
    /// the task is no longer this worker's; `Err(Failed)` when the write could not be made.
    fn record_step(
        &self,
        index: usize,
        step: StepRecord,
        resumed: bool,
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
    pub(crate) recorder: &'a dyn Recorder,
    pub(crate) steps: &'a Mutex<Memo>,
    pub(crate) running_step: &'a tokio::sync::Mutex<()>,
    pub(crate) cancel: &'a CancellationToken,
}

impl Job<'_> {
    /// Records progress; an `Err(Stopped)` means the task was cancelled: return it with `?`.
    pub async fn progress(&self, percent: i32) -> Result<(), ProcessorError> {
        self.recorder.report(percent).await
    }

    /// Runs `work` as the step `name`, memoised on the task (docs/spec.md §16): its output is
    /// stored in one write fenced on the lease, and a later attempt (a retry from the failed
    /// step, an automatic retry, a redelivery) gets the stored output back without polling
    /// `work`. A step that fails is stored as failed and its error returned; the next attempt
    /// runs it again. Steps run one at a time, under unique names, in the same order on every
    /// attempt, and none after one that did not complete: a step started while another runs,
    /// a repeated name, a changed order, a 101st step, an output that is not JSON, above 64 KiB
    /// or above 1 MiB for the task, fail the attempt with [`ProcessorError::Permanent`] saying
    /// which.
    pub async fn step<T, F>(&self, name: &str, work: F) -> Result<T, ProcessorError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, ProcessorError>>,
    {
        // Held until the step's record is written: steps that overlap (joined or nested) would
        // pick their places in `steps` before either is written.
        let Ok(_one_at_a_time) = self.running_step.try_lock() else {
            return Err(ProcessorError::Permanent(format!(
                "Step \"{name}\" started while another step runs: steps run one at a time"
            )));
        };
        let plan = self.memo().next(name).map_err(ProcessorError::Permanent)?;
        let (index, resumed) = match plan {
            Plan::Replay(output) => {
                return serde_json::from_value(output).map_err(|error| {
                    ProcessorError::Permanent(format!(
                        "Step \"{name}\" has a stored output its type no longer reads \
                         ({error}); retry from the start"
                    ))
                });
            }
            Plan::Run { index, resumed } => (index, resumed),
        };
        let start = StepStart::now(self.attempt);
        let (record, outcome) = match work.await {
            Ok(value) => match serde_json::to_string(&value) {
                Ok(text) => {
                    let record = self.memo().completed(name, text, start);
                    match record.error.clone() {
                        None => (record, Ok(value)),
                        Some(refused) => (record, Err(ProcessorError::Permanent(refused))),
                    }
                }
                Err(error) => {
                    let message = format!("Step \"{name}\" output is not JSON: {error}");
                    self.memo().stop(name);
                    let record = StepRecord::failed(name, &message, start);
                    (record, Err(ProcessorError::Permanent(message)))
                }
            },
            Err(error) => {
                self.memo().stop(name);
                // Stopped: this run no longer owns the task, nothing is recorded.
                let Some(message) = error.message() else {
                    return Err(error);
                };
                (StepRecord::failed(name, message, start), Err(error))
            }
        };
        match self.recorder.record_step(index, record, resumed).await {
            Ok(()) => outcome,
            Err(ProcessorError::Stopped) => Err(ProcessorError::Stopped),
            // Not recorded: no later step may be stored after it. The step's own failure, if
            // it failed, is what the attempt reports.
            Err(unrecorded) => {
                self.memo().stop(name);
                outcome.and(Err(unrecorded))
            }
        }
    }

    /// The steps earlier attempts completed that this run replays, in order, with their
    /// outputs: what a processor whose work happens elsewhere (`webhook`) hands over so that
    /// the work resumes there.
    pub fn stored_steps(&self) -> Vec<(String, Value)> {
        self.memo().replayable()
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        // A panic while the lock is held cannot leave the memo half-changed: recover it.
        self.steps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
/// (caught: the task fails) or be stopped; a retry runs it again, from its failed step when its
/// work is in [`Job::step`]s (completed ones are not run again), else from the start.
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

/// A payload patch (RFC 6902, `payloadHistory`) as the API shows it: each value it sets
/// redacted as [`redact_payload`] redacts the field it lands in (for `webhook`, a header value
/// or the URL's credentials); other types' patches are unchanged.
pub fn redact_patch(kind: &str, mut patch: Value) -> Value {
    if kind != "webhook" {
        return patch;
    }
    for op in patch.as_array_mut().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or_default().to_owned();
        let Some(value) = op.get_mut("value") else {
            continue;
        };
        let shown = match path.as_str() {
            "" => webhook::redact(value.take()),
            "/url" => webhook::redact(serde_json::json!({ "url": value.take() }))["url"].take(),
            "/headers" => {
                webhook::redact(serde_json::json!({ "headers": value.take() }))["headers"].take()
            }
            header if header.starts_with("/headers/") => Value::String(webhook::REDACTED.into()),
            _ => continue,
        };
        *value = shown;
    }
    patch
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
