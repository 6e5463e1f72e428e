//! The task document of docs/spec.md §3 and the typed ids and statuses that filters are built from.
//! A filter can only be built from these types, which is what keeps `{"$ne": null}` out of queries.

use std::time::Duration;

use mongodb::bson::{self, DateTime, Document};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest id or name accepted from a client.
pub const MAX_ID_LEN: usize = 256;
/// Newest failures kept in `errorHistory`.
pub const ERROR_HISTORY_LEN: i32 = 20;
/// `maxRetries` of a task created without one.
pub const DEFAULT_MAX_RETRIES: i32 = 3;
/// Largest `maxRetries` a client may set at `create`.
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

            /// The value as text, as stored and sent.
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
    /// A new id for `create`: a UUIDv7, so later tasks sort after earlier ones.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// The closed set of task states (docs/spec.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for a worker, with a hand-off on its way: just created, or reset by a retry.
    Queued,
    /// Claimed: a worker runs it and holds its [`Lease`].
    Processing,
    /// Finished with a result. Final.
    Completed,
    /// Stopped by an error: the processor failed or panicked, the worker was lost, nobody picked it
    /// up, or it could not be queued. A retry can re-queue it.
    Failed,
    /// Stopped by its owner. Final.
    Cancelled,
    /// Waiting for an automatic retry at `next_attempt_at` (docs/spec.md §12).
    Scheduled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 6] = [
        Self::Queued,
        Self::Scheduled,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The lower-case name used in the database, in JSON and in `?status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Scheduled => "scheduled",
        }
    }

    /// The status with exactly this name (lower-case), if any.
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

/// The last hand-off of a task to the queue (docs/spec.md §11), recorded in the same update
/// that queues the task, so a hand-off lost to a killed function is found and re-sent by
/// `sweep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    /// When the task was queued for this hand-off.
    pub at: DateTime,
    /// QStash's `Upstash-Deduplication-Id` for it, and the `handoffId` `process` receives: a
    /// re-send of this hand-off is delivered once, a new hand-off is a new message.
    pub dedup_id: String,
    /// Queued by a user's retry (rather than by `create`): if it is never picked up, the
    /// retry is given back.
    #[serde(default)]
    pub retry: bool,
    /// When `sweep` first re-sent it; the never-picked-up clock runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redispatched: Option<DateTime>,
    /// `sweep`'s re-send could not be sent (the queue or the destination was down): the next
    /// sweep sends it again, `redispatched` kept, so a long outage still ends in the
    /// never-picked-up failure rather than a task queued for ever.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
}

impl Handoff {
    /// A new hand-off of `task_id` at `at`; `retry` when a user's retry queued it.
    pub fn new(task_id: &TaskId, at: DateTime, retry: bool) -> Self {
        Self::in_batch(task_id, &Self::new_batch(), at, retry)
    }

    /// A new batch id: one per hand-off, or one for all the hand-offs of a bulk retry.
    pub fn new_batch() -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }

    /// The hand-off of `task_id` in `batch`: its dedup id is `<taskId>-<batch>`, unique per task
    /// and batch. A bulk re-queue writes the same with `$concat` in ONE update
    /// (`transitions/bulk.rs`).
    pub fn in_batch(task_id: &TaskId, batch: &str, at: DateTime, retry: bool) -> Self {
        Self {
            at,
            dedup_id: format!("{task_id}-{batch}"),
            retry,
            redispatched: None,
            resend: false,
        }
    }

    /// As stored in the task document.
    pub fn to_bson(&self) -> bson::Bson {
        bson::to_bson(self).expect("a hand-off is always representable as BSON")
    }
}

/// Held while `processing`; every write by the worker is fenced on `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Unique to one claim (a UUIDv4); a write fenced on an id that is no longer the task's changes
    /// nothing.
    pub id: String,
    /// When the claim lapses without a heartbeat: now + `JOBS_LEASE_SECONDS` at the claim and at
    /// every progress report. Past it, `sweep` fails the task as a lost worker.
    pub expires_at: DateTime,
}

/// One failure in a task's `errorHistory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEntry {
    /// The attempt the failure belongs to: the last run started, 0 when the task failed before its
    /// first run (e.g. it could not be queued).
    pub attempt: i32,
    /// The message the user saw, as `lastError` held it then.
    pub message: String,
    /// When the failure was recorded.
    pub at: DateTime,
    /// The processor said not to retry it automatically (docs/spec.md §12).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// The payload version the failed attempt ran (docs/spec.md §17), when an attempt ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<i32>,
}

/// How long to wait between automatic retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `delay * 2^(k-1)` before the k-th automatic retry, capped.
    #[default]
    Exponential,
    /// The same delay every time.
    Fixed,
}

/// A task's automatic-retry policy (docs/spec.md §12), opt-in at `create` or a processor's
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoRetry {
    /// Automatic retries allowed after failures, 0..=10.
    pub attempts: i32,
    /// Base delay in seconds, 1..=86400 (default 10).
    pub delay_seconds: i64,
    /// Exponential (default) or fixed.
    pub backoff: Backoff,
    /// No delay is longer, 1..=86400 (default 3600).
    pub max_delay_seconds: i64,
}

impl AutoRetry {
    /// The delay before the `k`-th automatic retry (k >= 1) for a jitter factor in
    /// [0.8, 1.2]: fixed or exponential, then jittered, never above the cap.
    pub fn delay(&self, k: i32, jitter: f64) -> Duration {
        let base = match self.backoff {
            Backoff::Fixed => self.delay_seconds as f64,
            Backoff::Exponential => self.delay_seconds as f64 * 2f64.powi((k - 1).clamp(0, 40)),
        };
        let capped = base.min(self.max_delay_seconds as f64);
        let jittered = (capped * jitter.clamp(0.8, 1.2)).min(self.max_delay_seconds as f64);
        Duration::from_millis((jittered * 1000.0) as u64)
    }
}

/// What happened to a task, for its timeline (docs/spec.md §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// Inserted by `create`.
    Created,
    /// Claimed by `process`: an attempt started.
    Claimed,
    /// The processor finished.
    Completed,
    /// The task failed (the message says why).
    Failed,
    /// An automatic retry was scheduled.
    Scheduled,
    /// A user's retry re-queued it.
    Retried,
    /// A retry's hand-off failed and the retry was undone.
    RetryUndone,
    /// `sweep` re-sent its hand-off.
    Redispatched,
    /// The owner cancelled it.
    Cancelled,
    /// `sweep` failed it (lost worker, never picked up).
    Swept,
    /// QStash gave up delivering it.
    DeliveryFailed,
    /// A step of the processor completed and its output was stored (`step` names it).
    StepCompleted,
    /// An attempt started where an earlier one stopped: its completed steps were replayed, and
    /// `step` is the first one it ran.
    Resumed,
    /// A kind this version does not know (written by a later one, during a rolling deploy or
    /// after a rollback): read, never written, so such a task stays readable.
    #[serde(other)]
    Unknown,
}

/// One entry of a task's timeline: what happened, when, and who did it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When.
    pub at: DateTime,
    /// What.
    pub kind: EventKind,
    /// Who: `user:<id>`, `bulk:<id>`, `auto`, `qstash`, `self` or `sweep`.
    pub by: String,
    /// The attempt it concerns, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// A message (a failure's), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The step it concerns (`stepCompleted`, `resumed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The payload version it concerns: the one a `claimed` attempt runs, the one a `retried`
    /// edit stored (docs/spec.md §17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<i32>,
    /// A failure's cause (`failed`, `swept`, `deliveryFailed`): the group of its whole
    /// message, as the task's `errorGroup` (absent on events written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_group: Option<String>,
}

impl Event {
    /// An event of `kind` by `by`, now.
    pub fn new(kind: EventKind, by: impl Into<String>) -> Self {
        Self {
            at: DateTime::now(),
            kind,
            by: by.into(),
            attempt: None,
            message: None,
            step: None,
            payload_version: None,
            error_group: None,
        }
    }

    /// The same, about attempt `attempt`.
    pub fn attempt(mut self, attempt: i32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// The same, with a message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The same, about payload version `version`.
    pub fn payload_version(mut self, version: i32) -> Self {
        self.payload_version = Some(version);
        self
    }

    /// The same, about the step `name`.
    pub fn step(mut self, name: impl Into<String>) -> Self {
        self.step = Some(name.into());
        self
    }

    /// As stored.
    pub fn to_bson(&self) -> bson::Bson {
        bson::to_bson(self).expect("an event is always representable as BSON")
    }
}

/// How a stored step ended (docs/spec.md §16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Ran to the end; its `output` is returned to later attempts instead of running it again.
    Completed,
    /// The attempt failed in it; a resumed attempt runs it again.
    Failed,
}

/// One entry of a task's `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Unique within the task.
    pub name: String,
    /// How it ended.
    pub status: StepStatus,
    /// What the step returned (`Completed` only), as JSON text: stored as the processor wrote
    /// it, so a replay returns exactly that (no BSON integer range, no extended-JSON reading)
    /// and its size is what the limits count. (Read leniently: any other BSON is taken as its
    /// relaxed extended JSON.)
    #[serde(
        default,
        deserialize_with = "json_text_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<String>,
    /// Why it failed (`Failed` only), at most [`STEP_ERROR_LEN`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime,
    /// When it ended.
    pub finished_at: DateTime,
    /// How long it ran, by the worker's monotonic clock (not `finishedAt - startedAt`, which a
    /// wall-clock step can make negative).
    #[serde(default)]
    pub duration_ms: i64,
    /// The attempt that ran it.
    pub attempt: i32,
}

/// A step's `error` is cut to this many characters.
pub const STEP_ERROR_LEN: usize = 1000;

/// When a step started: the wall clock for `startedAt`, the monotonic one for its duration,
/// and the attempt running it.
#[derive(Debug, Clone, Copy)]
pub struct StepStart {
    /// The wall clock at its start.
    pub at: DateTime,
    /// The monotonic clock at its start.
    pub clock: std::time::Instant,
    /// The attempt running it.
    pub attempt: i32,
}

impl StepStart {
    /// Now, in `attempt`.
    pub fn now(attempt: i32) -> Self {
        Self {
            at: DateTime::now(),
            clock: std::time::Instant::now(),
            attempt,
        }
    }
}

impl StepRecord {
    /// The record of a step that started at `start` and failed with `error` (cut to
    /// [`STEP_ERROR_LEN`] characters).
    pub fn failed(name: &str, error: &str, start: StepStart) -> Self {
        Self {
            name: name.to_owned(),
            status: StepStatus::Failed,
            output: None,
            error: Some(error.chars().take(STEP_ERROR_LEN).collect()),
            started_at: start.at,
            finished_at: DateTime::now(),
            duration_ms: start.clock.elapsed().as_millis() as i64,
            attempt: start.attempt,
        }
    }

    /// The record of a step that started at `start` and returned `output` (JSON text).
    pub fn completed(name: &str, output: String, start: StepStart) -> Self {
        Self {
            status: StepStatus::Completed,
            output: Some(output),
            error: None,
            ..Self::failed(name, "", start)
        }
    }

    /// The output as JSON (`null` when there is none, or it is not JSON).
    pub fn output_json(&self) -> Value {
        let text = self.output.as_deref().unwrap_or("null");
        serde_json::from_str(text).unwrap_or(Value::Null)
    }

    /// The output's size as JSON text, in bytes (0 without one).
    pub fn output_len(&self) -> usize {
        self.output.as_ref().map_or(0, String::len)
    }
}

/// Edits kept per task in `payloadHistory` (docs/spec.md §17).
pub const PAYLOAD_HISTORY_LEN: usize = 20;

fn first_version() -> i32 {
    1
}

/// One edit of a task's payload: the version it made, when, by whom, and the RFC 6902 patch
/// from the version before it (a JSON array of operations, stored as such).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadChange {
    /// The version this edit made.
    pub version: i32,
    /// When.
    pub at: DateTime,
    /// Who: `user:<id>`.
    pub by: String,
    /// The RFC 6902 patch from version `version - 1` to `version`, as JSON text (so it reads
    /// back exactly as computed, whatever its values look like). Read leniently, as
    /// [`StepRecord::output`].
    #[serde(deserialize_with = "json_text")]
    pub patch: String,
}

impl PayloadChange {
    /// The patch as JSON (an empty array if it cannot be read).
    pub fn patch_json(&self) -> Value {
        serde_json::from_str(&self.patch).unwrap_or_else(|_| Value::Array(Vec::new()))
    }
}

/// JSON text as stored: a string as it is; any other BSON value (as an earlier build wrote
/// some) as its relaxed extended JSON.
fn json_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match bson::Bson::deserialize(deserializer)? {
        bson::Bson::String(text) => text,
        other => other.into_relaxed_extjson().to_string(),
    })
}

/// [`json_text`], `null` as `None`.
fn json_text_or_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(match bson::Bson::deserialize(deserializer)? {
        bson::Bson::Null => None,
        bson::Bson::String(text) => Some(text),
        other => Some(other.into_relaxed_extjson().to_string()),
    })
}

/// A payload version kept whole: the base the kept edits apply to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadBase {
    /// Its version.
    pub version: i32,
    /// The payload at that version.
    pub payload: Document,
}

/// Newest events kept per task.
pub const EVENTS_LEN: i32 = 50;

/// The document stored in the `tasks` collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The id, generated at `create`; every query selects on it.
    pub task_id: TaskId,
    /// The owner: the only user who may see, retry or cancel the task.
    pub user_id: UserId,
    /// Optional tenant scope set at `create`; `list` can filter on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_id: Option<BrandId>,
    /// The task type (`type` in the database and in JSON): names the processor that runs it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Labels set at `create` (at most 10, each at most 64 characters), indexed with the user
    /// for search (docs/spec.md §19).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The processor's input, validated at `create` and by each edit (docs/spec.md §17): the
    /// current version, whole. Empty when read by `list`, which leaves payloads out.
    #[serde(default)]
    pub payload: Document,
    /// The payload's version: 1 at `create`, one more with each edit. Absent on a task stored
    /// before versions, which is version 1.
    #[serde(default = "first_version")]
    pub payload_version: i32,
    /// The edits, oldest first, each the RFC 6902 patch from the version before it; the newest
    /// [`PAYLOAD_HISTORY_LEN`] kept, older ones folded into `payload_base`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_history: Vec<PayloadChange>,
    /// The oldest version kept whole, from which `payload_history` rebuilds every later one;
    /// absent until the first edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base: Option<PayloadBase>,
    /// Where the task is in its lifecycle (docs/spec.md §4).
    pub status: TaskStatus,
    /// 0..=100 as the processor reports it; 0 again at each claim and each retry, 100 on
    /// completion.
    pub progress: i32,
    /// Manual retries used by the owner (the plan's `retryCount`); never above `max_retries`. Not
    /// the number of runs: that is `attempts`.
    pub retry_count: i32,
    /// The retry budget set at `create` (default 3, at most 20): `retry` is refused once
    /// `retry_count` reaches it.
    pub max_retries: i32,
    /// `max_retries - retry_count`, stored and kept true by every transition that changes
    /// `retry_count`, so bulk retry's one `updateMany` guards with a plain comparison
    /// (`retriesLeft > 0`). `None` on a task stored before the field existed, until the store's
    /// upkeep or a retry fills it in; [`Task::retries_left`] is the same from the counts.
    #[serde(
        default,
        rename = "retriesLeft",
        skip_serializing_if = "Option::is_none"
    )]
    pub stored_retries_left: Option<i32>,
    /// Runs started (each claim adds one), whatever caused them: the first run, a retry, or a
    /// redelivery after a lost worker.
    pub attempts: i32,
    /// The latest failure's message, as the user sees it; cleared by a retry and on completion.
    pub last_error: Option<String>,
    /// Failures, oldest first, the newest [`ERROR_HISTORY_LEN`] kept; a retry does not clear it.
    #[serde(default)]
    pub error_history: Vec<ErrorEntry>,
    /// The processor's output once `completed` (a non-object value under `value`); cleared by a
    /// retry.
    pub result: Option<Document>,
    /// The current claim, present only while `processing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// When `create` inserted the task; `list` orders by it, newest first.
    pub created_at: DateTime,
    /// The last write of any kind, progress reports included.
    pub updated_at: DateTime,
    /// When the latest attempt was claimed; `None` until the first claim.
    #[serde(default)]
    pub started_at: Option<DateTime>,
    /// When the task became `completed`, `failed` or `cancelled`; cleared by a retry.
    #[serde(default)]
    pub finished_at: Option<DateTime>,
    /// The last hand-off to the queue; absent on tasks stored before hand-offs were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// The automatic-retry policy, if any (docs/spec.md §12).
    #[serde(default)]
    pub auto_retry: Option<AutoRetry>,
    /// Automatic retries used since `create` or the last manual retry.
    #[serde(default)]
    pub auto_retries: i32,
    /// Retries started, manual and automatic, never decreased (a retry given back still
    /// counts): what `jobs_retries_total` adds up (docs/spec.md §20). `None` on a task stored
    /// before it was kept, until its next retry starts it (from its counts for a manual one,
    /// from 1 for an automatic one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries_total: Option<i32>,
    /// When a `scheduled` task may be claimed; `None` otherwise.
    #[serde(default)]
    pub next_attempt_at: Option<DateTime>,
    /// The last failure's cause: the first 12 hex digits of the SHA-256 of `error_template`.
    #[serde(default)]
    pub error_group: Option<String>,
    /// The last failure's message with its variable parts replaced (docs/spec.md §14).
    #[serde(default)]
    pub error_template: Option<String>,
    /// The timeline, oldest first, the newest [`EVENTS_LEN`] kept (docs/spec.md §15).
    #[serde(default)]
    pub events: Vec<Event>,
    /// The processor's memoised steps (docs/spec.md §16): completed ones, then at most the one
    /// an attempt failed in. A retry from the failed step keeps them; one from the start
    /// empties them. Empty, and absent from the document, for a task without steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

impl Task {
    /// A new task, `queued` with its first hand-off recorded, as `create` inserts it.
    pub fn new(
        user_id: UserId,
        brand_id: Option<BrandId>,
        kind: String,
        payload: Document,
        max_retries: i32,
    ) -> Self {
        let now = DateTime::now();
        let task_id = TaskId::generate();
        let created = Event {
            at: now,
            ..Event::new(EventKind::Created, format!("user:{user_id}"))
        };
        Self {
            handoff: Some(Handoff::new(&task_id, now, false)),
            tags: Vec::new(),
            auto_retry: None,
            auto_retries: 0,
            retries_total: Some(0),
            next_attempt_at: None,
            error_group: None,
            error_template: None,
            events: vec![created],
            steps: Vec::new(),
            payload_version: 1,
            payload_history: Vec::new(),
            payload_base: None,
            task_id,
            user_id,
            brand_id,
            kind,
            payload,
            status: TaskStatus::Queued,
            progress: 0,
            retry_count: 0,
            max_retries,
            stored_retries_left: Some(max_retries),
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

    /// Manual retries left: `max_retries - retry_count`, never below 0.
    pub fn retries_left(&self) -> i32 {
        (self.max_retries - self.retry_count).max(0)
    }

    /// Whether a claim at `now` may take this task: always unless it is `scheduled`; a
    /// `scheduled` one once `now` is within [`CLOCK_SKEW`] of its `nextAttemptAt`. The claim's
    /// filter says the same with [`due_by`].
    pub fn is_due(&self, now: DateTime) -> bool {
        self.until_due(now).is_none()
    }

    /// How long a `scheduled` task that is not due at `now` has left until its
    /// `nextAttemptAt` (what `process` answers with 425); `None` when it is due.
    pub fn until_due(&self, now: DateTime) -> Option<Duration> {
        let next = self
            .next_attempt_at
            .filter(|_| self.status == TaskStatus::Scheduled)?;
        (next > due_by(now)).then(|| {
            Duration::from_millis((next.timestamp_millis() - now.timestamp_millis()) as u64)
        })
    }
}

/// Clock skew tolerated between the instance (or QStash) that hands a `scheduled` task off
/// when it is due and the instance that claims it: a claim takes it up to this much early.
/// The sweep hands one off only once due on its own clock ([`due_everywhere_by`]).
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// The latest `nextAttemptAt` that is due at `now` ([`Task::is_due`] as a bound for filters).
pub fn due_by(now: DateTime) -> DateTime {
    DateTime::from_millis(now.timestamp_millis() + CLOCK_SKEW.as_millis() as i64)
}

/// The latest hand-off time that is due at `now` on every instance whose clock is at most
/// [`CLOCK_SKEW`] behind this one: `now` itself. What the sweep hands off.
pub fn due_everywhere_by(now: DateTime) -> DateTime {
    DateTime::from_millis(due_by(now).timestamp_millis() - CLOCK_SKEW.as_millis() as i64)
}

/// A BSON time as RFC 3339 text for clients (milliseconds since the epoch if it cannot be).
pub fn rfc3339(at: DateTime) -> String {
    at.try_to_rfc3339_string()
        .unwrap_or_else(|_| at.timestamp_millis().to_string())
}

/// A stored document as plain JSON (relaxed Extended JSON), for clients.
pub fn document_to_json(doc: Document) -> Value {
    bson::Bson::Document(doc).into_relaxed_extjson()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_within_the_clock_skew() {
        let now = DateTime::from_millis(1_700_000_000_000);
        let at = |ms: i64| DateTime::from_millis(now.timestamp_millis() + ms);
        let owner = UserId::parse("u").unwrap();
        let task = |status, next: Option<DateTime>| Task {
            status,
            next_attempt_at: next,
            ..Task::new(owner.clone(), None, "demo".into(), Document::new(), 3)
        };
        // (status, nextAttemptAt - now in ms, until due in ms)
        let rows = [
            (TaskStatus::Queued, None, None),
            (TaskStatus::Scheduled, Some(-5_000), None),
            (TaskStatus::Scheduled, Some(0), None),
            (TaskStatus::Scheduled, Some(1_000), None), // within CLOCK_SKEW
            (TaskStatus::Scheduled, Some(1_001), Some(1_001)),
            (TaskStatus::Scheduled, Some(30_000), Some(30_000)),
            (TaskStatus::Failed, Some(30_000), None), // only a scheduled task waits
        ];
        for (status, next, until) in rows {
            let task = task(status, next.map(at));
            let want = until.map(|ms| Duration::from_millis(ms as u64));
            assert_eq!(task.until_due(now), want, "{status:?} {next:?}");
            assert_eq!(task.is_due(now), want.is_none());
        }
        assert_eq!(due_by(now), at(1_000));
        assert_eq!(due_everywhere_by(now), now);
    }

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
