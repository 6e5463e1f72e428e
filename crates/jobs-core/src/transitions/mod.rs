//! Every status change of docs/spec.md §4, and nothing else writes `status`. Each transition is
//! ONE atomic conditional update named after what it does; its filter is its guard, so two
//! racing callers cannot both win. Worker writes are fenced on `lease.id`: a worker whose lease
//! was taken away (swept, cancelled) matches nothing and stops. Writes about a hand-off are
//! fenced on `handoff.dedupId`: a later retry's hand-off is never mistaken for an earlier one.
//! A transition into or out of `failed` then notes the change for `groups` (docs/spec.md §14,
//! `Store::failed_changed`): a second write, which only tells a kept answer it is out of date.

use std::time::Duration;

use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use crate::error::{JobsError, REQUEUE_FAILED_MESSAGE, Result};
use crate::error_groups::Cause;
use crate::failpoints::At;
use crate::steps::{RESTARTED_MESSAGE, Resume, StepRecord, StepStatus};
use crate::store::Store;
use crate::task::{
    ERROR_HISTORY_LEN, EVENTS_LEN, Event, EventKind, Handoff, Lease, Task, TaskId, TaskStatus,
    UserId, due_by,
};
use crate::versions::Edit;

/// `lastError` of a task whose `create` could not hand it off.
pub const ENQUEUE_FAILED_MESSAGE: &str =
    "Failed to queue task: the queue could not be reached. Retry it.";

fn log(task_id: &TaskId, from: &str, to: TaskStatus, transition: &'static str) {
    tracing::info!(task_id = %task_id, from, to = %to, transition, "task state changed");
}

fn later(by: Duration) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + by.as_millis() as i64)
}

/// Appends `events` to the timeline in `update` (newest [`EVENTS_LEN`] kept), next to any
/// other `$push` it has: the event is written by the same update as the transition.
pub(crate) fn push_events(update: &mut Document, events: &[Event]) {
    let each: Vec<Bson> = events.iter().map(Event::to_bson).collect();
    let push = doc! { "$each": each, "$slice": -EVENTS_LEN };
    match update.get_document_mut("$push") {
        Ok(existing) => _ = existing.insert("events", push),
        Err(_) => _ = update.insert("$push", doc! { "events": push }),
    }
}

/// The attempt a failure belongs to, and the payload version it ran when one ran (docs/spec.md
/// §17): a plain number is an attempt whose version is not recorded (no run, or a caller that
/// does not know it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    /// The attempt's number (`attempts` when it started; 0 before any run).
    pub attempt: i32,
    /// The payload version it ran.
    pub payload_version: Option<i32>,
}

impl From<i32> for Ran {
    fn from(attempt: i32) -> Self {
        Self {
            attempt,
            payload_version: None,
        }
    }
}

impl Ran {
    /// The attempt `task` ran last, with its payload version (edits happen only between
    /// attempts, so the current version is the one the last attempt ran).
    pub fn last_of(task: &Task) -> Self {
        Self {
            attempt: task.attempts,
            payload_version: Some(task.payload_version),
        }
    }
}

/// The longest failure message stored, in characters; a longer one is cut and says so.
pub const MAX_ERROR_MESSAGE: usize = 2000;

/// `message` as a failure stores it (in `lastError`, the error history and the timeline): a
/// processor, or a webhook host, must not grow the task document with it.
fn stored_message(message: &str) -> std::borrow::Cow<'_, str> {
    match message.char_indices().nth(MAX_ERROR_MESSAGE) {
        None => message.into(),
        Some((end, _)) => format!(
            "{}… (cut at {MAX_ERROR_MESSAGE} characters)",
            &message[..end]
        )
        .into(),
    }
}

/// What any failure records, whatever status it leads to: `lastError`, the `errorHistory`
/// entry (with the payload version the attempt ran, when known), the cause (`errorTemplate`,
/// `errorGroup`, from the whole message, so cutting a long one never splits its group), and no
/// lease.
fn failure_update(status: TaskStatus, ran: Ran, message: &str, permanent: bool) -> Document {
    let now = DateTime::now();
    let cause = Cause::of(message);
    let message = stored_message(message);
    let message = message.as_ref();
    let mut entry = doc! { "attempt": ran.attempt, "message": message, "at": now };
    if permanent {
        entry.insert("permanent", true);
    }
    if let Some(version) = ran.payload_version {
        entry.insert("payloadVersion", version);
    }
    let mut set = doc! {
        "status": status, "lastError": message, "updatedAt": now,
        "errorTemplate": cause.template, "errorGroup": cause.group,
    };
    if status == TaskStatus::Failed {
        set.insert("finishedAt", now);
    }
    doc! {
        "$set": set,
        "$push": { "errorHistory": { "$each": [entry], "$slice": -ERROR_HISTORY_LEN } },
        "$unset": { "lease": "" },
    }
}

impl Event {
    /// The same, about the failure `message` that `update` ([`failure_update`]) records: the
    /// message as stored, and the cause's group the update sets (from the whole message, the
    /// task's `errorGroup`), which the failure chart counts by.
    pub(crate) fn failure(mut self, message: &str, update: &Document) -> Self {
        let set = update.get_document("$set").ok();
        self.error_group = set.and_then(|s| s.get_str("errorGroup").ok().map(str::to_owned));
        self.message(stored_message(message))
    }
}

/// The `$set`/`$push`/`$unset` of any move to `failed`, with its event.
fn failed_update(ran: impl Into<Ran>, message: &str, event: Event) -> Document {
    let ran = ran.into();
    let mut update = failure_update(TaskStatus::Failed, ran, message, false);
    let event = event.attempt(ran.attempt).failure(message, &update);
    push_events(&mut update, &[event]);
    update
}

/// `retriesTotal` + 1, as an update pipeline's expression: the retries a task has started,
/// manual and automatic, never decreased (docs/spec.md §3); a task stored before it was kept
/// starts from its counts.
pub(crate) fn retries_total_plus_one() -> Document {
    let counts = doc! { "$add": [
        { "$ifNull": ["$retryCount", 0] }, { "$ifNull": ["$autoRetries", 0] },
    ] };
    doc! { "$add": [{ "$ifNull": ["$retriesTotal", counts] }, 1] }
}

/// Why `retry` refuses a task: the retry rule (the owner's task, `failed`, with retries left)
/// read on a task, which the re-queue's filter then pins ([`requeue_filter`]). Single and bulk
/// retry answer from it, and so does the filter page of a bulk retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such task.
    NotFound,
    /// Another user's task.
    NotOwner,
    /// Not `failed`, or re-queued meanwhile by another retry.
    NotFailed,
    /// Its `retryCount` has reached its `maxRetries` (carried).
    MaxRetries(i32),
}

/// Why `retry` by `user` would refuse `task` (`None`: absent); `None` if it would not.
pub fn retry_refusal(task: Option<&Task>, user: &UserId) -> Option<Refusal> {
    match task {
        None => Some(Refusal::NotFound),
        Some(task) if task.user_id != *user => Some(Refusal::NotOwner),
        Some(task) if task.status != TaskStatus::Failed => Some(Refusal::NotFailed),
        Some(task) if task.retries_left() == 0 => Some(Refusal::MaxRetries(task.max_retries)),
        Some(_) => None,
    }
}

impl Refusal {
    /// What `retry` of `task_id` answers.
    pub fn error(self, task_id: TaskId) -> JobsError {
        match self {
            Self::NotFound => JobsError::TaskNotFound(task_id),
            Self::NotOwner => JobsError::NotOwner,
            Self::NotFailed => JobsError::NotFailed,
            Self::MaxRetries(max) => JobsError::MaxRetries(max),
        }
    }

    /// The code a bulk retry skips the task with: another user's task is `TASK_NOT_FOUND`, so
    /// nothing about it leaks.
    pub fn skip_code(self, task_id: TaskId) -> &'static str {
        match self {
            Self::NotOwner => Self::NotFound.error(task_id).code(),
            other => other.error(task_id).code(),
        }
    }
}

/// The guard of `requeue_for_retry` on `task` as read: the caller's task, still `failed`, its
/// counts still those read, so a task retried, restored or given back since matches nothing.
/// That those counts leave a retry is checked before the update is sent ([`Task::retries_left`]),
/// so neither a missing nor a stale `retriesLeft` grants or refuses one. Plain equality,
/// `taskId` first, no top-level operator: served by the `taskId` index on every server
/// (SecantusDB's Python server uses no index for a filter with a top-level `$expr`, `$and` or
/// `$or`).
fn requeue_filter(task: &Task, user_id: &UserId) -> Document {
    doc! {
        "taskId": task.task_id.as_str(),
        "userId": user_id.as_str(),
        "status": TaskStatus::Failed,
        "retryCount": task.retry_count,
        "maxRetries": task.max_retries,
    }
}

/// The re-queue of a retry, single or bulk, as ONE update pipeline: queued, progress 0, no
/// error, a fresh automatic-retry budget, one retry used and `retriesLeft` set from the task's
/// own counts (so a missing or stale value is made right), the hand-off queued at `at` whose
/// `dedupId` is `dedup_id` (a value, or for a bulk retry an expression of the task's id), and
/// the `retried` event by `by` (newest [`EVENTS_LEN`] kept); `from` the start, the stored
/// steps emptied and the event saying so (docs/spec.md §16); with an `edit`, the new payload
/// version and its history, the event carrying the version (§17). Every field is set only while the
/// task's own counts leave a retry (`retryCount < maxRetries`, an expression of the update, not
/// of the filter): a task whose stored `retriesLeft` was stale (an earlier version's retry) is
/// matched but left exactly as it was, so the update does not count it as modified. Every
/// fixed value is `$literal`, so no string is read as a field path; every expression sees the
/// task as it was. A hand-off computed by an expression replaces the stored one whole.
fn requeue_pipeline(
    at: DateTime,
    dedup_id: Bson,
    by: &str,
    (from, edit): (Resume, Option<&Edit>),
) -> Vec<Document> {
    let literal = |value: Bson| Bson::Document(doc! { "$literal": value });
    let within_budget = doc! { "$lt": ["$retryCount", "$maxRetries"] };
    let mut set = Document::new();
    let mut guarded = |field: &str, value: Bson| {
        let kept = Bson::String(format!("${field}"));
        let value = doc! { "$cond": [within_budget.clone(), value, kept] };
        set.insert(field, value);
    };
    let fixed = doc! { "status": TaskStatus::Queued, "progress": 0, "lastError": Bson::Null,
    "result": Bson::Null, "finishedAt": Bson::Null, "updatedAt": at,
    "autoRetries": 0, "nextAttemptAt": Bson::Null };
    for (field, value) in fixed {
        guarded(&field, literal(value));
    }
    let handoff = doc! { "at": literal(at.into()), "dedupId": dedup_id,
    "retry": literal(true.into()) };
    guarded("handoff", handoff.into());
    guarded("retryCount", doc! { "$add": ["$retryCount", 1] }.into());
    guarded("retriesTotal", retries_total_plus_one().into());
    let left = doc! { "$subtract": ["$maxRetries", { "$add": ["$retryCount", 1] }] };
    guarded("retriesLeft", left.into());
    let mut retried = Event::new(EventKind::Retried, by);
    let mut said = Vec::new();
    if let Some(edit) = edit {
        guarded("payload", literal(edit.payload.clone().into()));
        guarded("payloadVersion", literal(edit.version.into()));
        let history = bson::to_bson(&edit.history).expect("payload changes are BSON");
        guarded("payloadHistory", literal(history));
        let base = bson::to_bson(&edit.base).expect("a payload base is BSON");
        guarded("payloadBase", literal(base));
        retried = retried.payload_version(edit.version);
        said.push(edit.message());
    }
    if from == Resume::Start {
        guarded("steps", literal(Bson::Array(Vec::new())));
        said.push(RESTARTED_MESSAGE.to_owned());
    }
    if !said.is_empty() {
        retried = retried.message(said.join("; "));
    }
    let event = literal(retried.to_bson());
    let events = doc! { "$slice": [
        { "$concatArrays": [{ "$ifNull": ["$events", []] }, [event]] },
        -EVENTS_LEN,
    ] };
    guarded("events", events.into());
    vec![doc! { "$set": set }]
}

/// Gives back the user's retry that queued `task` (read just before; its hand-off fences the
/// update), in `update`: one retry fewer, and `retriesLeft` set from the counts read, never
/// `$inc`ed (a task an earlier version re-queued may lack the field), the filter pinned on
/// those counts.
fn give_back_retry(filter: &mut Document, update: &mut Document, task: &Task) {
    filter.insert("retryCount", task.retry_count);
    update.insert("$inc", doc! { "retryCount": -1 });
    update
        .get_document_mut("$set")
        .expect("a failure sets fields")
        .insert("retriesLeft", task.max_retries - task.retry_count + 1);
}

/// The filter value of a `payloadVersion` read: a task stored before versions has none, and is
/// version 1.
fn version_read(version: i32) -> Bson {
    match version {
        1 => doc! { "$in": [1, Bson::Null] }.into(),
        version => Bson::Int32(version),
    }
}

fn worker_fence(task_id: &TaskId, lease_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Processing, "lease.id": lease_id }
}

/// A `queued` task whose current hand-off is `dedup_id`.
fn handoff_fence(task_id: &TaskId, dedup_id: &str) -> Document {
    doc! { "taskId": task_id.as_str(), "status": TaskStatus::Queued, "handoff.dedupId": dedup_id }
}

/// Anyone can claim a `queued` task; a `scheduled` one once it is due ([`Task::is_due`]).
fn claimable(task_id: &TaskId, now: DateTime) -> Document {
    doc! { "taskId": task_id.as_str(), "$or": [
        { "status": TaskStatus::Queued },
        { "status": TaskStatus::Scheduled, "nextAttemptAt": { "$lte": due_by(now) } },
    ] }
}

/// The update that undoes a retry whose hand-off failed: `failed` again, saying so in
/// `lastError`, with the `retryUndone` event by `by`. The retry is given back with `$inc`,
/// never a `$set` of a count read earlier (a concurrent retry could have made it stale):
/// `retriesLeft` is right, the re-queue being undone set it from the counts; the
/// rest stays as the retry left it (progress 0, a fresh automatic budget, the hand-off that was
/// not sent, which nothing acts on once the task is `failed`).
pub(crate) fn restore_update(by: &str) -> Document {
    let now = DateTime::now();
    let mut update = doc! {
        "$set": { "status": TaskStatus::Failed, "lastError": REQUEUE_FAILED_MESSAGE,
                  "updatedAt": now, "finishedAt": now },
        "$inc": { "retryCount": -1, "retriesLeft": 1 },
    };
    push_events(&mut update, &[Event::new(EventKind::RetryUndone, by)]);
    update
}

mod bulk;
mod owner;
mod rescue;
mod worker;

impl Store {
    async fn update_one(&self, filter: Document, update: Document) -> Result<bool> {
        let tasks = self.tasks().await?;
        Ok(self
            .run(tasks.update_one(filter, update))
            .await?
            .matched_count
            == 1)
    }

    async fn find_one_and_update(
        &self,
        filter: Document,
        update: impl Into<mongodb::options::UpdateModifications>,
        returns: ReturnDocument,
    ) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(
            tasks
                .find_one_and_update(filter, update)
                .return_document(returns),
        )
        .await
    }

    /// Passes on the outcome of a transition into or out of `failed` for `user`'s task(s),
    /// after noting the change for `groups` (docs/spec.md §14) when it `applied`, or may
    /// have (any error: a write concern error, for one, comes after the write applied).
    async fn noting_failed<T>(
        &self,
        user: &UserId,
        outcome: Result<T>,
        applied: impl FnOnce(&T) -> bool,
    ) -> Result<T> {
        let changed = outcome.as_ref().map_or(true, applied);
        let outcome = match changed && outcome.is_ok() {
            true => outcome.at("failed.changed"),
            false => outcome,
        };
        if changed {
            self.failed_changed(user).await;
        }
        outcome
    }

    async fn fail_where(
        &self,
        filter: Document,
        update: Document,
        (task_id, user): (&TaskId, &UserId),
        from: &str,
        transition: &'static str,
    ) -> Result<bool> {
        let outcome = self.update_one(filter, update).await;
        let failed = self.noting_failed(user, outcome, |failed| *failed).await?;
        if failed {
            log(task_id, from, TaskStatus::Failed, transition);
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_refusal_and_what_each_caller_answers() {
        let owner = UserId::parse("owner").unwrap();
        let other = UserId::parse("other").unwrap();
        let task = |status, retry_count| Task {
            status,
            retry_count,
            ..Task::new(owner.clone(), None, "demo".into(), Document::new(), 3)
        };
        use Refusal::*;
        use TaskStatus::*;
        // (task, caller, refusal, `retry`'s code, bulk's code)
        let rows = [
            (
                None,
                &owner,
                Some(NotFound),
                "TASK_NOT_FOUND",
                "TASK_NOT_FOUND",
            ),
            (
                Some(task(Failed, 0)),
                &other,
                Some(NotOwner),
                "NOT_OWNER",
                "TASK_NOT_FOUND",
            ),
            (
                Some(task(Queued, 0)),
                &owner,
                Some(NotFailed),
                "NOT_FAILED",
                "NOT_FAILED",
            ),
            (
                Some(task(Completed, 0)),
                &owner,
                Some(NotFailed),
                "NOT_FAILED",
                "NOT_FAILED",
            ),
            (
                Some(task(Failed, 3)),
                &owner,
                Some(MaxRetries(3)),
                "MAX_RETRIES",
                "MAX_RETRIES",
            ),
            (
                Some(task(Failed, 4)),
                &owner,
                Some(MaxRetries(3)),
                "MAX_RETRIES",
                "MAX_RETRIES",
            ),
            (Some(task(Failed, 2)), &owner, None, "", ""),
        ];
        for (task, user, refusal, single, bulk) in rows {
            let got = retry_refusal(task.as_ref(), user);
            assert_eq!(got, refusal, "{task:?}");
            if let Some(refusal) = got {
                let id = TaskId::generate();
                assert_eq!(refusal.error(id.clone()).code(), single);
                assert_eq!(refusal.skip_code(id), bulk);
            }
        }
    }
}
