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

pub use demo::Demo;
pub use webhook::Webhook;

use crate::config::Config;

/// Why a processor stopped without a result. `Failed` carries the message the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorError {
    Failed(String),
    /// The task was cancelled or its lease taken away: stop quietly, write nothing.
    Stopped,
}

impl<T: Into<String>> From<T> for ProcessorError {
    fn from(message: T) -> Self {
        Self::Failed(message.into())
    }
}

pub type ProcessorFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Value, ProcessorError>> + Send + 'a>>;

/// Reports progress for the running task (0..=100). Implemented by the worker, which fences
/// the write on the task's lease.
pub trait ProgressSink: Send + Sync {
    fn report(
        &self,
        percent: i32,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProcessorError>> + Send + '_>>;
}

/// What a processor sees of its task.
pub struct Job<'a> {
    pub task_id: &'a str,
    /// 1 for the first run, 2 for the second, ...
    pub attempt: i32,
    pub payload: &'a Value,
    pub(crate) progress: &'a dyn ProgressSink,
}

impl Job<'_> {
    /// Records progress; an `Err(Stopped)` means the task was cancelled: return it with `?`.
    pub async fn progress(&self, percent: i32) -> Result<(), ProcessorError> {
        self.progress.report(percent).await
    }
}

pub trait Processor: Send + Sync + 'static {
    /// Rejects a payload at `create` time, so bad input never becomes a failed task.
    fn validate(&self, _payload: &Value) -> Result<(), String> {
        Ok(())
    }

    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a>;
}

/// Processors by task type.
#[derive(Clone, Default)]
pub struct Processors {
    by_type: HashMap<String, Arc<dyn Processor>>,
}

impl Processors {
    /// `demo` and `webhook` (SPEC section 8).
    pub fn builtin(config: &Config, http: reqwest::Client) -> Self {
        Self::default().register("demo", Demo).register(
            "webhook",
            Webhook::new(config.webhook_allowed_hosts.clone(), http),
        )
    }

    pub fn register(mut self, task_type: &str, processor: impl Processor) -> Self {
        self.by_type
            .insert(task_type.to_owned(), Arc::new(processor));
        self
    }

    pub fn get(&self, task_type: &str) -> Option<Arc<dyn Processor>> {
        self.by_type.get(task_type).cloned()
    }

    pub fn types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.by_type.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }
}
