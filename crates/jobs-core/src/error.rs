//! The one error type of the service: every failure a caller can see, with its machine code and
//! public message (SPEC section 5). The HTTP status is chosen at the edge, in `api/jobs.rs`.

use crate::task::{TaskId, TaskStatus};

/// A failure of an action. `Display` is the public message; internal detail never reaches it.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("Missing required fields: {0}")]
    MissingFields(&'static str),
    #[error("Invalid request body: {0}")]
    InvalidBody(String),
    #[error("Invalid query: {0}")]
    InvalidQuery(String),
    #[error("Unknown action: {0}")]
    UnknownAction(String),
    #[error("Method {method} is not allowed for action {action}; use {allow}")]
    MethodNotAllowed {
        method: String,
        action: &'static str,
        allow: &'static str,
    },
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Unknown task type: {0}")]
    UnknownTaskType(String),
    #[error("Invalid payload: {0}")]
    InvalidPayload(String),
    #[error("Task with ID {0} not found")]
    TaskNotFound(TaskId),
    #[error("Unauthorized: You do not own this task")]
    NotOwner,
    #[error("Only failed tasks can be retried.")]
    NotFailed,
    #[error("Max retries ({0}) reached.")]
    MaxRetries(i32),
    #[error("Only queued or processing tasks can be cancelled; this task is {0}.")]
    NotCancellable(TaskStatus),
    #[error("{}", crate::transitions::REQUEUE_FAILED_MESSAGE)]
    RequeueFailed,
    #[error("Task {0} was created but could not be queued; retry it from the Task Manager.")]
    EnqueueFailed(TaskId),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("Forbidden: the userId does not match the signed-in user")]
    UserMismatch,
    /// A setting is missing or contradictory; the message says which and what to do.
    #[error("{0}")]
    Misconfigured(String),
    #[error("Database unavailable")]
    DbUnavailable,
    /// Unexpected failure; the detail is logged, never sent.
    #[error("Internal error")]
    Internal(String),
}

impl JobsError {
    /// The machine-readable code of SPEC section 5.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingFields(_) => "MISSING_FIELDS",
            Self::InvalidBody(_) => "INVALID_BODY",
            Self::InvalidQuery(_) => "INVALID_QUERY",
            Self::UnknownAction(_) => "UNKNOWN_ACTION",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnknownTaskType(_) => "UNKNOWN_TASK_TYPE",
            Self::InvalidPayload(_) => "INVALID_PAYLOAD",
            Self::TaskNotFound(_) => "TASK_NOT_FOUND",
            Self::NotOwner => "NOT_OWNER",
            Self::NotFailed => "NOT_FAILED",
            Self::MaxRetries(_) => "MAX_RETRIES",
            Self::NotCancellable(_) => "NOT_CANCELLABLE",
            Self::RequeueFailed => "REQUEUE_FAILED",
            Self::EnqueueFailed(_) => "ENQUEUE_FAILED",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::UserMismatch => "USER_MISMATCH",
            Self::Misconfigured(_) => "MISCONFIGURED",
            Self::DbUnavailable => "DB_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The task an error is about, when the client needs it to act (e.g. to retry it).
    pub fn task_id(&self) -> Option<&TaskId> {
        match self {
            Self::EnqueueFailed(id) => Some(id),
            _ => None,
        }
    }

    /// `Misconfigured` for a variable that is not set.
    pub fn missing_setting(name: &str) -> Self {
        Self::Misconfigured(format!("The service is misconfigured: {name} is not set"))
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

impl From<mongodb::error::Error> for JobsError {
    fn from(error: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *error.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => {
                tracing::warn!(error = %error, "database unavailable");
                Self::DbUnavailable
            }
            _ => Self::Internal(format!("database: {error}")),
        }
    }
}

pub type Result<T, E = JobsError> = std::result::Result<T, E>;
