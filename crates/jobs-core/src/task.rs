//! The task document of SPEC section 3 and the typed ids and statuses that filters are built from.
//! A filter can only be built from these types, which is what keeps `{"$ne": null}` out of queries.

use mongodb::bson::{self, DateTime, Document};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest id or name accepted from a client.
pub const MAX_ID_LEN: usize = 256;
/// Newest failures kept in `errorHistory`.
pub const ERROR_HISTORY_LEN: i32 = 20;
pub const DEFAULT_MAX_RETRIES: i32 = 3;
pub const MAX_MAX_RETRIES: i32 = 20;

/// Checks a client-supplied identifier: 1..=256 characters, no control characters.
fn checked_id(field: &str, value: String) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.chars().count() > MAX_ID_LEN {
        return Err(format!("{field} must be at most {MAX_ID_LEN} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(value)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates a value that came from a client.
            pub fn parse(value: impl Into<String>) -> Result<Self, String> {
                checked_id($field, value.into()).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Server-generated task id (a UUIDv7, so ids sort by creation time).
    TaskId,
    "taskId"
);
id_type!(
    /// The owner of a task.
    UserId,
    "userId"
);
id_type!(
    /// Tenant scope used by the plan's frontend.
    BrandId,
    "brandId"
);

impl TaskId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// The closed set of task states (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        Self::Queued,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TaskStatus> for bson::Bson {
    fn from(status: TaskStatus) -> Self {
        bson::Bson::String(status.as_str().to_owned())
    }
}

/// Held while `processing`; every write by the worker is fenced on `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub id: String,
    pub expires_at: DateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEntry {
    pub attempt: i32,
    pub message: String,
    pub at: DateTime,
}

/// The document stored in the `tasks` collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_id: TaskId,
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_id: Option<BrandId>,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Document,
    pub status: TaskStatus,
    pub progress: i32,
    pub retry_count: i32,
    pub max_retries: i32,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(default)]
    pub error_history: Vec<ErrorEntry>,
    pub result: Option<Document>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(default)]
    pub started_at: Option<DateTime>,
    #[serde(default)]
    pub finished_at: Option<DateTime>,
}

impl Task {
    /// A new task, `queued`, as `create` inserts it.
    pub fn new(
        user_id: UserId,
        brand_id: Option<BrandId>,
        kind: String,
        payload: Document,
        max_retries: i32,
    ) -> Self {
        let now = DateTime::now();
        Self {
            task_id: TaskId::generate(),
            user_id,
            brand_id,
            kind,
            payload,
            status: TaskStatus::Queued,
            progress: 0,
            retry_count: 0,
            max_retries,
            attempts: 0,
            last_error: None,
            error_history: Vec::new(),
            result: None,
            lease: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        }
    }
}

pub fn rfc3339(at: DateTime) -> String {
    at.try_to_rfc3339_string()
        .unwrap_or_else(|_| at.timestamp_millis().to_string())
}

pub fn document_to_json(doc: Document) -> Value {
    bson::Bson::Document(doc).into_relaxed_extjson()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_control_characters() {
        let cases = [
            ("", false),
            ("task-1", true),
            ("a\u{0}b", false),
            ("line\nbreak", false),
            (&"x".repeat(MAX_ID_LEN), true),
            (&"x".repeat(MAX_ID_LEN + 1), false),
            ("ünïcödé", true),
        ];
        for (input, ok) in cases {
            assert_eq!(TaskId::parse(input).is_ok(), ok, "{input:?}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TaskStatus::parse("QUEUED"), None);
    }
}
