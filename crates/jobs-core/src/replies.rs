//! The success bodies of SPEC section 5, one `Serialize` type per reply, each built here and
//! nowhere else. The edge only encodes them; errors have their own shape (`error::JobsError`).

use serde::Serialize;
use serde_json::Value;

use crate::task::{
    BrandId, ErrorEntry, Task, TaskId, TaskStatus, UserId, document_to_json, rfc3339,
};

/// `create`: 201 `{success, taskId, status}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub success: bool,
    pub task_id: TaskId,
    pub status: TaskStatus,
}

impl Created {
    pub fn new(task_id: TaskId, status: TaskStatus) -> Self {
        Self {
            success: true,
            task_id,
            status,
        }
    }
}

/// `retry` and `cancel`: 200 `{success: true, taskId}` (the plan's reply).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    pub success: bool,
    pub task_id: TaskId,
}

impl Done {
    pub fn new(task_id: TaskId) -> Self {
        Self {
            success: true,
            task_id,
        }
    }
}

/// `get`: 200 `{task}`.
#[derive(Debug, Serialize)]
pub struct TaskReply {
    pub task: TaskView,
}

/// `list`: 200 `{tasks, nextCursor}`, newest first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Pass it back as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `process`: 202 `{success, taskId, claimed: true}` when claimed, 200 `{success, claimed:
/// false}` when there was nothing to claim.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Processed {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    pub claimed: bool,
}

impl Processed {
    pub fn claimed(task_id: TaskId) -> Self {
        Self {
            success: true,
            task_id: Some(task_id),
            claimed: true,
        }
    }

    pub fn not_claimed() -> Self {
        Self {
            success: true,
            task_id: None,
            claimed: false,
        }
    }
}

/// `health`: 200 when everything is in order, 503 with `code` and `error` when not.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub ok: bool,
    pub store: &'static str,
    /// `qstash`, `self`, or `unconfigured`.
    pub dispatch: &'static str,
    pub processors: Vec<String>,
    /// Where `process` is reached, when dispatch is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Why dispatch is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch_error: Option<String>,
    /// Deployed settings that are missing, by variable name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

/// A task as a client sees it: camelCase fields, RFC 3339 times, the payload and result as
/// plain JSON, and no lease internals.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub task_id: TaskId,
    pub user_id: UserId,
    pub brand_id: Option<BrandId>,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Value,
    pub status: TaskStatus,
    pub progress: i32,
    pub retry_count: i32,
    pub max_retries: i32,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub error_history: Vec<ErrorView>,
    pub result: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One `errorHistory` entry as a client sees it.
#[derive(Debug, Serialize)]
pub struct ErrorView {
    pub attempt: i32,
    pub message: String,
    pub at: String,
}

impl From<ErrorEntry> for ErrorView {
    fn from(entry: ErrorEntry) -> Self {
        Self {
            attempt: entry.attempt,
            message: entry.message,
            at: rfc3339(entry.at),
        }
    }
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        Self {
            task_id: task.task_id,
            user_id: task.user_id,
            brand_id: task.brand_id,
            kind: task.kind,
            payload: document_to_json(task.payload),
            status: task.status,
            progress: task.progress,
            retry_count: task.retry_count,
            max_retries: task.max_retries,
            attempts: task.attempts,
            last_error: task.last_error,
            error_history: task
                .error_history
                .into_iter()
                .map(ErrorView::from)
                .collect(),
            result: task.result.map(document_to_json),
            created_at: rfc3339(task.created_at),
            updated_at: rfc3339(task.updated_at),
            started_at: task.started_at.map(rfc3339),
            finished_at: task.finished_at.map(rfc3339),
        }
    }
}
