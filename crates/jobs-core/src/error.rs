//! The one error type of the service: every failure a caller can see, with its machine code and
//! public message and HTTP status (docs/spec.md §5, whose table `tests/spec_tables.rs` checks).

use std::time::Duration;

use crate::task::{TaskId, TaskStatus};

/// The plan's message when a retry could not be handed off: the answer of [`JobsError::RequeueFailed`]
/// and the `lastError` of the task it leaves `failed`.
pub const REQUEUE_FAILED_MESSAGE: &str = "Failed to re-queue task.";

/// A failure of an action. `Display` is the public message; internal detail never reaches it.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A required field is absent or empty; names the fields (`taskId, userId` for `retry`, the
    /// plan's message). 400.
    #[error("Missing required fields: {0}")]
    MissingFields(&'static str),
    /// The body is not the expected JSON: malformed, an unknown or ill-typed field, a bad id or an
    /// out-of-range `maxRetries`. 400.
    #[error("Invalid request body: {0}")]
    InvalidBody(String),
    /// A query parameter is unusable: repeated, a bad id, an unknown `status`, a `limit` outside
    /// 1..=100, or a cursor this service did not issue. 400.
    #[error("Invalid query: {0}")]
    InvalidQuery(String),
    /// `?action=` is missing or names no action. 400.
    #[error("Unknown action: {0}")]
    UnknownAction(String),
    /// The action exists but takes the other method; the reply carries `Allow`. 405.
    #[error("Method {method} is not allowed for action {action}; use {allow}")]
    MethodNotAllowed {
        /// The method used (at most 16 characters of it).
        method: String,
        /// The action called.
        action: &'static str,
        /// The one method it takes: `GET` or `POST`.
        allow: &'static str,
    },
    /// The request body is over [`crate::http::MAX_BODY_BYTES`]. 413.
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// `create` named a `type` no processor is registered for. 400.
    #[error("Unknown task type: {0}")]
    UnknownTaskType(String),
    /// `create`'s payload was refused by its processor's `validate`, or is over 64 KiB as BSON.
    /// 400.
    #[error("Invalid payload: {0}")]
    InvalidPayload(String),
    /// `retry` with a new payload read from a version that is no longer the task's
    /// (`expectedVersion`, or another edit between the read and the update); carries the
    /// current version. 409.
    #[error(
        "The payload was edited meanwhile: it is at version {0} now. Reload the task and edit it again."
    )]
    VersionConflict(i32),
    /// No such task; also `get` of another user's task, so `get` never reveals that it exists. 404.
    #[error("Task with ID {0} not found")]
    TaskNotFound(TaskId),
    /// `retry` or `cancel` of a task that exists but belongs to another user. 403.
    #[error("Unauthorized: You do not own this task")]
    NotOwner,
    /// `retry` of a task that is not `failed`, including one a concurrent retry has just re-queued.
    /// 409.
    #[error("Only failed tasks can be retried.")]
    NotFailed,
    /// A delivery of a `scheduled` task before its next attempt is due (carried: seconds to
    /// wait). 425, so QStash delivers it again later instead of dropping it.
    #[error("The task's next attempt is not due for {0} s.")]
    NotDueYet(u64),
    /// `retry` whose hand-off failed while the owner cancelled the task: it will not run. 409.
    #[error("The task was cancelled while it was being re-queued.")]
    CancelledMeanwhile,
    /// `retry` of a failed task whose `retryCount` has reached its `maxRetries` (carried). 409.
    #[error("Max retries ({0}) reached.")]
    MaxRetries(i32),
    /// `cancel` of a task that has already finished (its status carried). 409.
    #[error("Only queued, scheduled or processing tasks can be cancelled; this task is {0}.")]
    NotCancellable(TaskStatus),
    /// `create` with an idempotency key its user already sent, within 24 h, with another request
    /// (a different type, payload, `brandId`, `maxRetries` or `autoRetry`). 409.
    #[error(
        "This Idempotency-Key was already used with a different request body; use a new key for a new task."
    )]
    IdempotencyKeyReused,
    /// `retry` reset the task but its hand-off failed; the task is back to `failed` and the retry
    /// is not spent. 503.
    #[error("{}", REQUEUE_FAILED_MESSAGE)]
    RequeueFailed,
    /// `create` stored the task but its hand-off failed; the task is left `failed` (never `queued`
    /// with no message on its way) and its id is in the reply, so the user can retry it. 503.
    #[error("Task {0} was created but could not be queued; retry it from the Task Manager.")]
    EnqueueFailed(TaskId),
    /// Missing or bad credentials: no or an invalid or expired bearer token, or a bad QStash
    /// signature, internal secret or cron secret. 401.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// With tokens, the `userId` sent differs from the token's `sub`. 403.
    #[error("Forbidden: the userId does not match the signed-in user")]
    UserMismatch,
    /// A setting is missing or contradictory; the message says which and what to do. 500 from an
    /// action; `health` reports it with 503.
    #[error("{0}")]
    Misconfigured(String),
    /// A setting's value cannot be used (a malformed number or URL, out of range); the message
    /// names each variable and the rule it broke. Every action answers it, before anything is
    /// read or written, until the deployment is fixed. Code `MISCONFIGURED`, 503.
    #[error("The service is misconfigured: {0}")]
    InvalidSettings(String),
    /// MongoDB cannot be reached (server selection, I/O, a cleared pool). 503.
    #[error("Database unavailable")]
    DbUnavailable,
    /// One database operation ran past `JOBS_DB_TIMEOUT_MS` (carried): it may still apply. 503.
    #[error("The database did not answer within {} s", .0.as_secs_f64())]
    DbTimeout(Duration),
    /// `watch` on a database without change streams (a standalone server, a proxy without
    /// them): the page polls `list` instead. 503.
    #[error("Live updates are unavailable here ({0}); poll list instead.")]
    WatchUnavailable(String),
    /// `metrics` while `JOBS_METRICS_TOKEN` is not set. 404.
    #[error("Metrics are off: set JOBS_METRICS_TOKEN to turn them on.")]
    MetricsOff,
    /// Unexpected failure; the detail is logged, never sent. 500.
    #[error("Internal error")]
    Internal(String),
}

/// The HTTP status of `NOT_DUE`: a delivery that came before the task's next attempt is due.
/// QStash redelivers on it, and its failure callback carries it.
pub const NOT_DUE_STATUS: u16 = 425;

impl JobsError {
    /// The HTTP status the edge answers this error with.
    pub fn status(&self) -> u16 {
        use JobsError::*;
        match self {
            MissingFields(_) | InvalidBody(_) | InvalidQuery(_) | UnknownAction(_)
            | UnknownTaskType(_) | InvalidPayload(_) => 400,
            Unauthenticated(_) => 401,
            NotOwner | UserMismatch => 403,
            TaskNotFound(_) | MetricsOff => 404,
            MethodNotAllowed { .. } => 405,
            NotFailed | MaxRetries(_) | NotCancellable(_) | CancelledMeanwhile
            | IdempotencyKeyReused | VersionConflict(_) => 409,
            PayloadTooLarge { .. } => 413,
            NotDueYet(_) => NOT_DUE_STATUS,
            Misconfigured(_) | Internal(_) => 500,
            InvalidSettings(_) | RequeueFailed | EnqueueFailed(_) | DbUnavailable
            | DbTimeout(_) | WatchUnavailable(_) => 503,
        }
    }

    /// The machine-readable code of docs/spec.md §5.
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
            Self::VersionConflict(_) => "VERSION_CONFLICT",
            Self::CancelledMeanwhile => "TASK_CANCELLED",
            Self::NotDueYet(_) => "NOT_DUE",
            Self::MaxRetries(_) => "MAX_RETRIES",
            Self::NotCancellable(_) => "NOT_CANCELLABLE",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::RequeueFailed => "REQUEUE_FAILED",
            Self::EnqueueFailed(_) => "ENQUEUE_FAILED",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::UserMismatch => "USER_MISMATCH",
            Self::Misconfigured(_) | Self::InvalidSettings(_) => "MISCONFIGURED",
            Self::DbUnavailable => "DB_UNAVAILABLE",
            Self::DbTimeout(_) => "DB_TIMEOUT",
            Self::WatchUnavailable(_) => "WATCH_UNAVAILABLE",
            Self::MetricsOff => "METRICS_OFF",
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

    /// The payload version a `VERSION_CONFLICT` found (`currentVersion` in its body).
    pub fn current_version(&self) -> Option<i32> {
        match self {
            Self::VersionConflict(version) => Some(*version),
            _ => None,
        }
    }

    /// `Misconfigured` for a variable that is not set.
    pub fn missing_setting(name: &str) -> Self {
        Self::Misconfigured(format!("The service is misconfigured: {name} is not set"))
    }

    /// `Internal` with `detail`, which is logged, never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// A database error after which the write may have applied all the same (a timeout, a
    /// connection lost after the command was sent): the caller reads back before it answers.
    pub fn may_have_applied(&self) -> bool {
        matches!(self, Self::DbUnavailable | Self::DbTimeout(_))
    }
}

/// A crash point armed to fail its step: as a database write that applied but whose answer was
/// lost.
impl From<crate::failpoints::Injected> for JobsError {
    fn from(injected: crate::failpoints::Injected) -> Self {
        tracing::warn!(failpoint = injected.0, "database answer lost (crash point)");
        Self::DbUnavailable
    }
}

/// Server error codes of a failover or a briefly unavailable node (MongoDB's retryable-read
/// set: NotWritablePrimary, NotPrimaryNoSecondaryOk, InterruptedAtShutdown, HostUnreachable,
/// ...): the request may succeed moments later, so they are 503, not 500.
const TRANSIENT_CODES: [i32; 13] = [
    11600, 11602, 10107, 13435, 13436, 189, 91, 7, 6, 89, 9001, 134, 262,
];

impl From<mongodb::error::Error> for JobsError {
    fn from(error: mongodb::error::Error) -> Self {
        use mongodb::error::{ErrorKind, RETRYABLE_WRITE_ERROR, WriteFailure};
        let code = match &*error.kind {
            ErrorKind::Command(command) => Some(command.code),
            ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => Some(concern.code),
            _ => None,
        };
        let transient = matches!(
            *error.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::DnsResolve { .. }
        ) || code.is_some_and(|c| TRANSIENT_CODES.contains(&c))
            || error.contains_label(RETRYABLE_WRITE_ERROR);
        if transient {
            tracing::warn!(error = %error, "database unavailable");
            Self::DbUnavailable
        } else {
            Self::Internal(format!("database: {error}"))
        }
    }
}

/// The result of every fallible `jobs-core` operation.
pub type Result<T, E = JobsError> = std::result::Result<T, E>;

/// MongoDB's E11000: an insert that broke a unique index (`_id`, or `taskId` of `tasks`).
pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    const DUPLICATE_KEY: i32 = 11000;
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(failure)) => failure.code == DUPLICATE_KEY,
        ErrorKind::Command(failure) => failure.code == DUPLICATE_KEY,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;
    use mongodb::error::{CommandError, ErrorKind};

    fn command_error(code: i32, name: &str) -> mongodb::error::Error {
        let command: CommandError =
            mongodb::bson::from_document(doc! { "code": code, "codeName": name, "errmsg": name })
                .unwrap();
        mongodb::error::Error::from(ErrorKind::Command(command))
    }

    /// Failover and briefly-unavailable errors are 503 (the client may try again); others
    /// are 500 with the detail kept for the log.
    #[test]
    fn database_errors_table() {
        let rows = [
            (command_error(10107, "NotWritablePrimary"), "DB_UNAVAILABLE"),
            (
                command_error(13435, "NotPrimaryNoSecondaryOk"),
                "DB_UNAVAILABLE",
            ),
            (
                command_error(11600, "InterruptedAtShutdown"),
                "DB_UNAVAILABLE",
            ),
            (command_error(91, "ShutdownInProgress"), "DB_UNAVAILABLE"),
            (command_error(6, "HostUnreachable"), "DB_UNAVAILABLE"),
            (command_error(2, "BadValue"), "INTERNAL"),
            (command_error(11000, "DuplicateKey"), "INTERNAL"),
        ];
        for (error, code) in rows {
            let name = error.to_string();
            assert_eq!(JobsError::from(error).code(), code, "{name}");
        }
    }
}
