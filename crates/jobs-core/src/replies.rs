//! The success bodies of docs/spec.md §5, one `Serialize` type per reply, each built here and
//! nowhere else. The edge only encodes them; errors have their own shape (`error::JobsError`).

use serde::Serialize;
use serde_json::Value;

use crate::conditional::{ETag, IfNoneMatch};
use crate::steps::{StepRecord, StepStatus};
use crate::task::{
    AutoRetry, BrandId, ErrorEntry, Event, EventKind, Task, TaskId, TaskStatus, UserId,
    document_to_json, rfc3339,
};

/// `create`: 201 `{success, taskId, status}`; 200 `{success, taskId, status, replayed: true}`
/// when an idempotency key answers the task it created before.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// `success`: always `true`; refusals are errors.
    pub success: bool,
    /// `taskId`: the new task's id, to `get`, `retry` or `cancel` it.
    pub task_id: TaskId,
    /// `status`: `queued` once the task is stored and its hand-off sent, or the real status
    /// when a hand-off reported as failed had arrived after all; when replayed, the task's
    /// status now.
    pub status: TaskStatus,
    /// `replayed`: `true` when this create created nothing and answers the task its
    /// idempotency key created before (then the status is 200, not 201); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl Created {
    /// The 201 reply for a task just stored and handed off.
    pub fn new(task_id: TaskId, status: TaskStatus) -> Self {
        Self {
            success: true,
            task_id,
            status,
            replayed: false,
        }
    }

    /// The 200 reply of a create whose idempotency key already created `task`.
    pub fn replayed(task: &Task) -> Self {
        Self {
            replayed: true,
            ..Self::new(task.task_id.clone(), task.status)
        }
    }
}

/// `retry` and `cancel`: 200 `{success: true, taskId}` (the plan's reply).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    /// `success`: always `true`; refusals are errors.
    pub success: bool,
    /// `taskId`: the task retried or cancelled, echoed back.
    pub task_id: TaskId,
}

impl Done {
    /// The 200 reply of a `retry` or `cancel` that took effect.
    pub fn new(task_id: TaskId) -> Self {
        Self {
            success: true,
            task_id,
        }
    }
}

/// `get`: 200 `{task}`, and with `?version=` `payloadAt`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReply {
    /// `task`: the task, which the caller owns.
    pub task: TaskView,
    /// `payloadAt`: `{version, payload}`, the payload as it was at the version asked for
    /// (docs/spec.md §17), shown as `payload` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_at: Option<Value>,
}

/// One kept edit of a task's payload as a client sees it (docs/spec.md §17).
#[derive(Debug, Serialize)]
pub struct PayloadChangeView {
    /// `version`: the version the edit made.
    pub version: i32,
    /// `at`: RFC 3339.
    pub at: String,
    /// `by`: `user:<id>`.
    pub by: String,
    /// `patch`: the RFC 6902 patch from the version before (values a built-in processor keeps
    /// secret redacted, as in `payload`).
    pub patch: Value,
}

/// `list`: 200 `{tasks, nextCursor}`, newest first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    /// `tasks`: at most `limit` (default 20) of the caller's tasks matching the filters, newest
    /// first.
    pub tasks: Vec<TaskView>,
    /// Pass it back as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// `windowEnded: true`: a search on payload fields examined the most tasks a page may
    /// (docs/spec.md §19) before it filled the page; `nextCursor` searches on from there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub window_ended: bool,
}

/// What `list` answers: the page with its `ETag`, or 304 when the client holds that page already.
#[derive(Debug)]
pub enum Listed {
    /// 200: the page, with the tag of exactly this reply.
    Page {
        /// The body.
        page: TaskList,
        /// Its `ETag`.
        etag: ETag,
    },
    /// 304 with no body: `If-None-Match` names the tag this reply would carry.
    NotModified(ETag),
}

impl Listed {
    /// `page`, as the caller (`scope`: who asked and the canonical query) sees it: the body
    /// unless `if_none_match` already names its tag. The tag hashes the body's JSON, so it
    /// changes exactly when what the caller would see changes; no clock takes part.
    pub fn answer(scope: &[&[u8]], page: TaskList, if_none_match: &IfNoneMatch) -> Self {
        let body = serde_json::to_vec(&page).expect("a task list serializes");
        let etag = ETag::of(&[scope, &[body.as_slice()]].concat());
        if if_none_match.matches(&etag) {
            Self::NotModified(etag)
        } else {
            Self::Page { page, etag }
        }
    }
}

/// `process`: 202 `{success, taskId, claimed: true}` when claimed, 200 `{success, claimed:
/// false}` when there was nothing to claim.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Processed {
    /// `success`: always `true`: a delivery with nothing to claim is no error, so QStash does not
    /// redeliver it.
    pub success: bool,
    /// `taskId`: the task claimed; absent when nothing was claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// `claimed`: `true` when this delivery started an attempt; `false` for a duplicate delivery or
    /// a task no longer queued (e.g. cancelled).
    pub claimed: bool,
}

impl Processed {
    /// 202: this delivery claimed `task_id` and started its attempt.
    pub fn claimed(task_id: TaskId) -> Self {
        Self {
            success: true,
            task_id: Some(task_id),
            claimed: true,
        }
    }

    /// 200: nothing to claim (a redelivery, or the task was cancelled, claimed or finished
    /// meanwhile).
    pub fn not_claimed() -> Self {
        Self {
            success: true,
            task_id: None,
            claimed: false,
        }
    }
}

/// `deliveryFailed`: 200 `{failed}`; `failed` is false when the task had moved on
/// (claimed, cancelled, or handed off again) and nothing changed.
#[derive(Debug, Serialize)]
pub struct DeliveryFailed {
    /// `failed`: whether the task was failed by this callback.
    pub failed: bool,
}

/// `health`: 200 when everything is in order, 503 with `code` and `error` when not.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`: `true` when every deployed setting is present, dispatch is configured and MongoDB
    /// answers.
    pub ok: bool,
    /// `store`: the task store, always `mongodb`.
    pub store: &'static str,
    /// `dispatch`: how tasks are handed off: `qstash`, `self` (self-invocation) or `unconfigured`.
    pub dispatch: &'static str,
    /// `processors`: the registered task types, sorted.
    pub processors: Vec<String>,
    /// `destination`: the `process` URL hand-offs go to; absent when dispatch is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// `dispatchError`: why dispatch is not configured; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch_error: Option<String>,
    /// `missing`: deployed settings that are missing, by variable name; absent when none are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<&'static str>,
    /// `invalid`: settings whose value cannot be used, each `{variable, problem}`; absent when
    /// none are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid: Vec<InvalidSetting>,
    /// `probe`: what the hand-off destination answered to `GET <base>/api/jobs?action=health`
    /// (deployed only, once per process); absent when it was not probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<DestinationProbe>,
    /// `error`: the public message of the first problem found; absent when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `code`: its machine code, `MISCONFIGURED` or `DB_UNAVAILABLE`; absent when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

/// One setting `health` names as unusable.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidSetting {
    /// `variable`: its name, e.g. `JOBS_LEASE_SECONDS`.
    pub variable: &'static str,
    /// `problem`: the rule its value broke, e.g. `expected a whole number in 30..=86400, got "10"`.
    pub problem: String,
}

/// What the hand-off destination answered to `health`'s probe: `{status, location?}` once it
/// answered (kept for the process), or `{error}` when it could not be reached (probed again
/// by the next `health`).
#[derive(Debug, Clone, Serialize)]
pub struct DestinationProbe {
    /// `url`: what was probed, `<base>/api/jobs?action=health`.
    pub url: String,
    /// `status`: the HTTP status it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `location`: where a 3xx answer redirected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `error`: why it could not be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A task as a client sees it: camelCase fields, RFC 3339 times, the payload and result as
/// plain JSON, and no lease internals.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// `taskId`: the task's id (a UUIDv7).
    pub task_id: TaskId,
    /// `userId`: the owner.
    pub user_id: UserId,
    /// `brandId`: the tenant scope set at `create`; `null` when none.
    pub brand_id: Option<BrandId>,
    /// `type`: the task type, which names the processor that runs it.
    #[serde(rename = "type")]
    pub kind: String,
    /// `tags`: the labels set at `create` (`[]` when none).
    pub tags: Vec<String>,
    /// `payload`: the input given at `create`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// `status`: `queued`, `scheduled`, `processing`, `completed`, `failed` or `cancelled`.
    pub status: TaskStatus,
    /// `progress`: 0..=100; 0 again at each claim and each retry, 100 once completed.
    pub progress: i32,
    /// `retryCount`: manual retries used, shown as `retryCount / maxRetries`. Not the number of
    /// runs: that is `attempts`.
    pub retry_count: i32,
    /// `maxRetries`: the retry budget; `retry` is refused once `retryCount` reaches it.
    pub max_retries: i32,
    /// `attempts`: runs started, whatever caused them: the first run, a retry, or a redelivery
    /// after a lost worker.
    pub attempts: i32,
    /// `lastError`: the latest failure's message; `null` after a retry and on completion.
    pub last_error: Option<String>,
    /// `errorHistory`: the failures across all attempts, oldest first (the newest 20 kept).
    pub error_history: Vec<ErrorView>,
    /// `result`: the processor's output once `completed`; `null` otherwise.
    pub result: Option<Value>,
    /// `createdAt`: when the task was created (RFC 3339, like every time here).
    pub created_at: String,
    /// `updatedAt`: the last change of any kind, progress included.
    pub updated_at: String,
    /// `startedAt`: when the latest attempt was claimed; `null` before the first.
    pub started_at: Option<String>,
    /// `finishedAt`: when the task became `completed`, `failed` or `cancelled`; `null` while it is
    /// queued, scheduled or processing.
    pub finished_at: Option<String>,
    /// `autoRetry`: the automatic-retry policy, or `null`.
    pub auto_retry: Option<AutoRetry>,
    /// `autoRetries`: automatic retries used since `create` or the last manual retry.
    pub auto_retries: i32,
    /// `nextAttemptAt`: when a `scheduled` task runs next; `null` otherwise.
    pub next_attempt_at: Option<String>,
    /// `errorGroup`: the last failure's cause (12 hex digits), or `null`.
    pub error_group: Option<String>,
    /// `errorTemplate`: the last failure's message with its variable parts replaced.
    pub error_template: Option<String>,
    /// `events`: the timeline, oldest first (`get` only; `list` leaves it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
    /// `steps`: the processor's memoised steps in order, completed ones then at most the one
    /// an attempt failed in (`get` only; `list` leaves it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    /// `payloadVersion`: 1 at `create`, one more with each edit.
    pub payload_version: i32,
    /// `payloadHistory`: the kept edits, oldest first (`get` only); `payloadBaseVersion` the
    /// oldest version that can still be shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_history: Option<Vec<PayloadChangeView>>,
    /// `payloadBaseVersion`: the oldest payload version kept (`get` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base_version: Option<i32>,
}

/// One stored step as a client sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// `name`: unique within the task.
    pub name: String,
    /// `status`: `completed` or `failed`.
    pub status: StepStatus,
    /// `output`: what the step returned (`completed`); a retry from the failed step gets it
    /// back without running the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// `error`: why it failed (`failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `startedAt`: RFC 3339.
    pub started_at: String,
    /// `finishedAt`: RFC 3339.
    pub finished_at: String,
    /// `durationMs`: how long it ran, by the worker's monotonic clock.
    pub duration_ms: i64,
    /// `attempt`: the attempt that ran it.
    pub attempt: i32,
}

impl From<StepRecord> for StepView {
    fn from(step: StepRecord) -> Self {
        Self {
            output: step.output.as_ref().map(|_| step.output_json()),
            duration_ms: step.duration_ms,
            started_at: rfc3339(step.started_at),
            finished_at: rfc3339(step.finished_at),
            name: step.name,
            status: step.status,
            error: step.error,
            attempt: step.attempt,
        }
    }
}

/// One timeline entry as a client sees it: `{at, kind, by, attempt?, message?}`.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// `at`: RFC 3339.
    pub at: String,
    /// `kind`: `created`, `claimed`, `completed`, `failed`, `scheduled`, `retried`,
    /// `retryUndone`, `redispatched`, `cancelled`, `swept`, `deliveryFailed`, `stepCompleted` or
    /// `resumed`.
    pub kind: EventKind,
    /// `by`: `user:<id>`, `bulk:<id>`, `auto`, `qstash`, `self` or `sweep`.
    pub by: String,
    /// `attempt`, when the event concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// `message`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `step`, when the event concerns one (`stepCompleted`, `resumed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `payloadVersion`: the version a `claimed` attempt ran, or a `retried` edit stored.
    #[serde(rename = "payloadVersion", skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<i32>,
}

impl From<Event> for EventView {
    fn from(event: Event) -> Self {
        Self {
            at: rfc3339(event.at),
            kind: event.kind,
            by: event.by,
            attempt: event.attempt,
            message: event.message,
            step: event.step,
            payload_version: event.payload_version,
        }
    }
}

/// One `errorHistory` entry as a client sees it.
#[derive(Debug, Serialize)]
pub struct ErrorView {
    /// `attempt`: the attempt that failed; 0 when the task failed before its first run (e.g. it
    /// could not be queued).
    pub attempt: i32,
    /// `message`: the error as the user sees it.
    pub message: String,
    /// `at`: when it failed (RFC 3339).
    pub at: String,
    /// `permanent`: present (true) when the processor said not to retry it automatically.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// `payloadVersion`: the payload version the failed attempt ran, when one ran.
    #[serde(rename = "payloadVersion", skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<i32>,
}

impl From<ErrorEntry> for ErrorView {
    fn from(entry: ErrorEntry) -> Self {
        Self {
            attempt: entry.attempt,
            message: entry.message,
            at: rfc3339(entry.at),
            permanent: entry.permanent,
            payload_version: entry.payload_version,
        }
    }
}

impl TaskView {
    /// As `list` shows it: without the payload and the timeline (`get` has them).
    pub fn summary(task: Task) -> Self {
        Self {
            payload: None,
            events: None,
            steps: None,
            payload_history: None,
            payload_base_version: None,
            ..Self::from(task)
        }
    }
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        let payload_history = task.payload_history.iter().map(|change| PayloadChangeView {
            version: change.version,
            at: rfc3339(change.at),
            by: change.by.clone(),
            patch: crate::processors::redact_patch(&task.kind, change.patch_json()),
        });
        let payload_history = Some(payload_history.collect());
        Self {
            task_id: task.task_id,
            user_id: task.user_id,
            brand_id: task.brand_id,
            tags: task.tags,
            // Before `kind` moves: header values and other secrets are never shown.
            payload: Some(crate::processors::redact_payload(
                &task.kind,
                document_to_json(task.payload),
            )),
            kind: task.kind,
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
            auto_retry: task.auto_retry,
            auto_retries: task.auto_retries,
            next_attempt_at: task.next_attempt_at.map(rfc3339),
            error_group: task.error_group,
            error_template: task.error_template,
            events: Some(task.events.into_iter().map(EventView::from).collect()),
            steps: Some(task.steps.into_iter().map(StepView::from).collect()),
            payload_version: task.payload_version,
            payload_history,
            payload_base_version: Some(
                task.payload_base
                    .as_ref()
                    .map_or(task.payload_version, |base| base.version),
            ),
        }
    }
}

/// `retryMany`: 200 `{retried, skipped, nextCursor}` (docs/spec.md §13).
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetriedMany {
    /// `retried`: the tasks re-queued and handed off by this call.
    pub retried: Vec<TaskId>,
    /// `skipped`: the others, each with the code `retry` would have answered.
    pub skipped: Vec<Skipped>,
    /// `nextCursor`: with a filter, where the next call starts; `null` when done.
    pub next_cursor: Option<String>,
    /// `dryRun`: with `dryRun: true`, what the call would have done (it changed nothing, and
    /// `retried` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
}

/// What a `retryMany` with `dryRun: true` would have done (docs/spec.md §17).
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// `wouldRetry`: how many tasks it would have retried (`skipped` says which not, and why).
    pub would_retry: usize,
    /// `examples`: up to 3 tasks with a `patch`, each with the RFC 6902 changes it would make.
    pub examples: Vec<Value>,
}

/// A task `retryMany` did not retry, and why (a code of `retry`'s error table).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// `taskId`: as sent.
    pub task_id: TaskId,
    /// `code`: `TASK_NOT_FOUND` (also another user's task), `NOT_FAILED`, `MAX_RETRIES`,
    /// `REQUEUE_FAILED`, or with a `patch` `INVALID_PAYLOAD`.
    pub code: &'static str,
    /// `message`: why, for `INVALID_PAYLOAD` (the processor's refusal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Skipped {
    /// `task_id` skipped with `code`.
    pub fn new(task_id: TaskId, code: &'static str) -> Self {
        Self {
            task_id,
            code,
            message: None,
        }
    }

    /// `task_id` skipped because its patched payload was refused: `INVALID_PAYLOAD`, why.
    pub fn refused(task_id: TaskId, message: String) -> Self {
        Self {
            message: Some(message),
            ..Self::new(task_id, "INVALID_PAYLOAD")
        }
    }
}

/// `groups`: 200 `{groups}`, largest first, at most 50 (docs/spec.md §14).
#[derive(Debug, Serialize)]
pub struct Groups {
    /// `groups`.
    pub groups: Vec<Group>,
}

/// One cause of failures and how many tasks it has.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// `errorGroup`: 12 hex digits; pass it to `list` or `retryMany`'s filter.
    pub error_group: String,
    /// `template`: the failure message with its variable parts replaced.
    pub template: String,
    /// `count`: tasks in this group (and status).
    pub count: i64,
    /// `lastAt`: the newest such failure, RFC 3339.
    pub last_at: String,
    /// `exampleTaskId`: the task that failed most recently for this cause.
    pub example_task_id: String,
}
