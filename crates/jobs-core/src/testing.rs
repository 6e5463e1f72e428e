//! Test fixtures, compiled only with the `testing` feature: a [`Store`] on a fresh database,
//! a factory that inserts a task in any state with sensible defaults (modelled on River's
//! `testfactory.Job`), and [`assert_legal`], the one checker of the invariants every stored
//! task satisfies, called after every test scenario (unit, transition table and HTTP).
//!
//! ```no_run
//! # use jobs_core::{task::TaskStatus, testing};
//! # async fn example() {
//! let store = testing::fresh_store();
//! // A worker lost 10 minutes ago, 1 minute into its attempt.
//! let lost = testing::task()
//!     .status(TaskStatus::Processing)
//!     .lease_expired_secs_ago(600)
//!     .started_secs_ago(660)
//!     .insert(&store)
//!     .await;
//! testing::assert_legal(&lost);
//! # }
//! ```
//!
//! Times are set relative to the moment the task is built, so no test sleeps to make time pass.

pub mod spec;

use mongodb::bson::{Bson, DateTime, Document, doc};

use crate::config::Config;
use crate::steps::{MAX_STEPS, MAX_STEPS_OUTPUT, Resume, StepRecord, StepStatus};
use crate::store::Store;
use crate::task::{
    AutoRetry, DEFAULT_MAX_RETRIES, ERROR_HISTORY_LEN, ErrorEntry, Event, EventKind, Handoff,
    Lease, MAX_MAX_RETRIES, PAYLOAD_HISTORY_LEN, Task, TaskId, TaskStatus, UserId,
};

/// The variable naming the MongoDB (SecantusDB) that tests run against; `scripts/test` sets it.
pub const TEST_MONGODB_URI_VAR: &str = "JOBS_TEST_MONGODB_URI";

/// The lease a fixture `processing` task holds unless told otherwise: live for this long.
pub const DEFAULT_LEASE_SECS: i64 = 300;

/// The connection string of the test database. Panics when [`TEST_MONGODB_URI_VAR`] is not set:
/// a database test must fail, not be skipped, when there is no database.
pub fn test_mongodb_uri() -> String {
    std::env::var(TEST_MONGODB_URI_VAR)
        .ok()
        .filter(|uri| !uri.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{TEST_MONGODB_URI_VAR} is not set: run the tests with scripts/test, \
                 which starts SecantusDB"
            )
        })
}

/// A store on database `db` of the server at `uri`, configured as the service configures it
/// (it connects on first use).
pub fn store_on(uri: &str, db: &str) -> Store {
    let config = Config::from_lookup(|name| match name {
        "MONGODB_URI" => Some(uri.to_owned()),
        "MONGODB_DB" => Some(db.to_owned()),
        _ => None,
    });
    assert!(config.invalid.is_empty(), "a test configuration is valid");
    Store::new(&config)
}

/// The `tasks` collection of `store`, untyped: for a test that writes a task as something
/// other than this version would (an earlier version, a hand edit).
pub async fn raw_tasks(store: &Store) -> mongodb::Collection<Document> {
    let database = store.database().await.expect("the test database");
    database.collection("tasks")
}

/// A store on a fresh, empty database `test_<uuid>` of the test server.
pub fn fresh_store() -> Store {
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    store_on(&test_mongodb_uri(), &db)
}

/// A task to insert: [`task`] then the setters that matter to the test, then
/// [`insert`](TaskFixture::insert) (or [`build`](TaskFixture::build)).
///
/// Defaults follow the status, as the service would have left the task:
///
/// | status | attempts | progress | lease | lastError / errorHistory | startedAt / finishedAt |
/// | --- | --- | --- | --- | --- | --- |
/// | `queued` | `retryCount` | 0 | none | none / one entry per retry | set if attempted / none |
/// | `processing` | `retryCount + 1` | 0 | live for [`DEFAULT_LEASE_SECS`] | none / one per retry | set / none |
/// | `completed` | `retryCount + 1` | 100 | none | none / one per retry | set / set |
/// | `failed` | `retryCount + 1` | 0 | none | the last attempt's failure / one per attempt | set / set |
/// | `cancelled` | `retryCount` | 0 | none | none / one per retry | set if attempted / set |
/// | `scheduled` | `retryCount + 1` | 0 | none | the last attempt's failure / one per attempt | set / none |
///
/// Every task has a `handoff` (its last queueing: when it was last updated if `queued`, else
/// when it was started; `retry` when `retryCount > 0`), not re-sent, unless
/// [`redispatched_secs_ago`](TaskFixture::redispatched_secs_ago) or
/// [`without_handoff`](TaskFixture::without_handoff) says otherwise. A `scheduled` task's
/// hand-off is its automatic retry's, as `schedule_retry` records it: dated when it is due
/// (`nextAttemptAt`, 60 s from now unless
/// [`next_attempt_in_secs`](TaskFixture::next_attempt_in_secs) says otherwise), `retry: false`.
/// A `scheduled` task is only legal with an [`auto_retry`](TaskFixture::auto_retry) policy that
/// has used at least one automatic retry.
///
/// A task with a `lastError` (`failed`, `scheduled`) has its cause (`errorTemplate`,
/// `errorGroup`) unless [`without_error_group`](TaskFixture::without_error_group) says
/// otherwise. The timeline (`events`) is empty unless
/// [`events_len`](TaskFixture::events_len) says otherwise.
///
/// The owner is `alice`, the type `demo` with a payload that completes at once, `maxRetries`
/// 3, and every time is "now" unless set in seconds ago.
#[derive(Debug, Clone)]
#[must_use = "a fixture does nothing until it is inserted or built"]
pub struct TaskFixture {
    status: TaskStatus,
    owner: String,
    kind: String,
    payload: Document,
    progress: Option<i32>,
    retry_count: i32,
    max_retries: i32,
    attempts: Option<i32>,
    last_error: Option<String>,
    error_history_len: Option<usize>,
    lease_expires_in_secs: Option<i64>,
    created_secs_ago: Option<i64>,
    updated_secs_ago: i64,
    started_secs_ago: Option<i64>,
    handoff: bool,
    redispatched_secs_ago: Option<i64>,
    auto_retry: Option<AutoRetry>,
    auto_retries: i32,
    next_attempt_in_ms: Option<i64>,
    error_group: bool,
    events_len: usize,
    /// `Some(stored)` overrides `retriesLeft` (`None` inside: absent, as an earlier version
    /// stored tasks); otherwise it is what the counts call for.
    retries_left: Option<Option<i32>>,
    steps: Vec<StepRecord>,
}

/// A fixture task with the defaults of [`TaskFixture`]: a fresh `queued` `demo` task of `alice`.
pub fn task() -> TaskFixture {
    TaskFixture {
        status: TaskStatus::Queued,
        owner: "alice".into(),
        kind: "demo".into(),
        payload: doc! { "steps": 1, "stepMs": 0 },
        progress: None,
        retry_count: 0,
        max_retries: DEFAULT_MAX_RETRIES,
        attempts: None,
        last_error: None,
        error_history_len: None,
        lease_expires_in_secs: None,
        created_secs_ago: None,
        updated_secs_ago: 0,
        started_secs_ago: None,
        handoff: true,
        redispatched_secs_ago: None,
        auto_retry: None,
        auto_retries: 0,
        next_attempt_in_ms: None,
        error_group: true,
        events_len: 0,
        retries_left: None,
        steps: Vec::new(),
    }
}

impl Default for TaskFixture {
    fn default() -> Self {
        task()
    }
}

impl TaskFixture {
    /// The task's status; the other defaults follow it (see the table above).
    pub fn status(mut self, status: TaskStatus) -> Self {
        self.status = status;
        self
    }

    /// The owner's user id.
    pub fn owner(mut self, user: &str) -> Self {
        self.owner = user.into();
        self
    }

    /// The processor type and its payload.
    pub fn kind(mut self, kind: &str, payload: Document) -> Self {
        self.kind = kind.into();
        self.payload = payload;
        self
    }

    /// Progress, 0..=100.
    pub fn progress(mut self, progress: i32) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Manual retries used.
    pub fn retry_count(mut self, retry_count: i32) -> Self {
        self.retry_count = retry_count;
        self
    }

    /// The retry budget.
    pub fn max_retries(mut self, max_retries: i32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Runs started (claims), whatever the default for the status.
    pub fn attempts(mut self, attempts: i32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// The message of the newest failure: `lastError` of a `failed` task, and the newest
    /// `errorHistory` entry of any task that has one.
    pub fn last_error(mut self, message: &str) -> Self {
        self.last_error = Some(message.into());
        self
    }

    /// Exactly `len` `errorHistory` entries (oldest first, the newest one for the last attempt).
    pub fn error_history_len(mut self, len: usize) -> Self {
        self.error_history_len = Some(len);
        self
    }

    /// A lease that expires `secs` from now (used by `processing` only).
    pub fn lease_expires_in_secs(mut self, secs: i64) -> Self {
        self.lease_expires_in_secs = Some(secs);
        self
    }

    /// A lease that expired `secs` ago: the worker is gone (used by `processing` only).
    pub fn lease_expired_secs_ago(self, secs: i64) -> Self {
        self.lease_expires_in_secs(-secs)
    }

    /// `createdAt`, in seconds ago; by default as old as the oldest other time.
    pub fn created_secs_ago(mut self, secs: i64) -> Self {
        self.created_secs_ago = Some(secs);
        self
    }

    /// `updatedAt` (and `finishedAt` of a finished task, and the newest failure's `at`), in
    /// seconds ago; by default now.
    pub fn updated_secs_ago(mut self, secs: i64) -> Self {
        self.updated_secs_ago = secs;
        self
    }

    /// `startedAt` (the last claim), in seconds ago; by default when it was last updated.
    pub fn started_secs_ago(mut self, secs: i64) -> Self {
        self.started_secs_ago = Some(secs);
        self
    }

    /// A hand-off that `sweep` re-sent `secs` ago.
    pub fn redispatched_secs_ago(mut self, secs: i64) -> Self {
        self.redispatched_secs_ago = Some(secs);
        self
    }

    /// An automatic-retry policy, and how many automatic retries it used.
    pub fn auto_retry(mut self, policy: AutoRetry, used: i32) -> Self {
        self.auto_retry = Some(policy);
        self.auto_retries = used;
        self
    }

    /// A `scheduled` task's next attempt, `secs` from now (negative: due already).
    pub fn next_attempt_in_secs(self, secs: i64) -> Self {
        self.next_attempt_in_millis(secs * 1000)
    }

    /// A `scheduled` task's next attempt, `ms` milliseconds from now (negative: due already);
    /// for times within `claim`'s one second of allowed clock skew.
    pub fn next_attempt_in_millis(mut self, ms: i64) -> Self {
        self.next_attempt_in_ms = Some(ms);
        self
    }

    /// No `errorTemplate` / `errorGroup`: a failure stored before causes were recorded.
    pub fn without_error_group(mut self) -> Self {
        self.error_group = false;
        self
    }

    /// These memoised `steps` (docs/spec.md §16), as an earlier attempt stored them.
    pub fn steps(mut self, steps: Vec<StepRecord>) -> Self {
        self.steps = steps;
        self
    }

    /// Exactly `len` timeline `events` (at most [`EVENTS_LEN`](crate::task::EVENTS_LEN) are
    /// legal), oldest first, one second apart, the newest when the task was last updated: a
    /// `created` event by `user:<owner>`, then `redispatched` events by `sweep` (their times
    /// tell which ones a transition dropped).
    pub fn events_len(mut self, len: usize) -> Self {
        self.events_len = len;
        self
    }

    /// No `handoff`: a task stored before hand-offs were recorded.
    pub fn without_handoff(mut self) -> Self {
        self.handoff = false;
        self
    }

    /// `retriesLeft` as stored, whatever the counts say: `None` for a task an earlier version
    /// stored without it, a wrong value for one an earlier version retried or restored.
    pub fn stored_retries_left(mut self, stored: Option<i32>) -> Self {
        self.retries_left = Some(stored);
        self
    }

    /// The task document, timed relative to now.
    pub fn build(&self) -> Task {
        use TaskStatus::*;
        let now = DateTime::now().timestamp_millis();
        let ago = |secs: i64| DateTime::from_millis(now - secs * 1000);

        let ran = matches!(self.status, Processing | Completed | Failed | Scheduled);
        let attempts = self.attempts.unwrap_or(self.retry_count + i32::from(ran));
        // Each retry followed a failure; a failed (or scheduled) task has also failed its
        // last attempt.
        let failed_last = matches!(self.status, Failed | Scheduled);
        let failures = self.retry_count + i32::from(failed_last);
        let history_len = self
            .error_history_len
            .unwrap_or(failures.clamp(0, ERROR_HISTORY_LEN) as usize);
        let error_history: Vec<ErrorEntry> = (0..history_len)
            .map(|i| {
                // The newest failure belongs to the last attempt started (0: it never ran).
                let attempt = (attempts - (history_len - 1 - i) as i32).max(0);
                let newest = i + 1 == history_len;
                let message = match &self.last_error {
                    Some(message) if newest => message.clone(),
                    _ => format!("Simulated failure on attempt {attempt}"),
                };
                // Older failures one second apart, the newest when the task was last updated.
                let at = ago(self.updated_secs_ago + (history_len - 1 - i) as i64);
                ErrorEntry {
                    attempt,
                    message,
                    at,
                    permanent: false,
                    payload_version: (attempt > 0).then_some(1),
                }
            })
            .collect();
        let last_error = matches!(self.status, Failed | Scheduled).then(|| {
            let newest = error_history.last().map(|e| e.message.clone());
            (self.last_error.clone().or(newest))
                .unwrap_or_else(|| format!("Simulated failure on attempt {attempts}"))
        });

        let lease = (self.status == Processing).then(|| Lease {
            id: uuid::Uuid::new_v4().to_string(),
            expires_at: ago(-self.lease_expires_in_secs.unwrap_or(DEFAULT_LEASE_SECS)),
        });
        let started_secs_ago = self.started_secs_ago.unwrap_or(self.updated_secs_ago);
        let events: Vec<Event> = (0..self.events_len)
            .map(|i| {
                let (kind, by) = match i {
                    0 => (EventKind::Created, format!("user:{}", self.owner)),
                    _ => (EventKind::Redispatched, "sweep".to_owned()),
                };
                Event {
                    at: ago(self.updated_secs_ago + (self.events_len - 1 - i) as i64),
                    ..Event::new(kind, by)
                }
            })
            .collect();
        let oldest = [
            Some(self.updated_secs_ago),
            self.started_secs_ago,
            error_history
                .first()
                .map(|e| (now - e.at.timestamp_millis()) / 1000),
            events
                .first()
                .map(|e| (now - e.at.timestamp_millis()) / 1000),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        let finished = matches!(self.status, Completed | Failed | Cancelled);
        let task_id = TaskId::generate();
        let next_attempt_at = (self.status == Scheduled)
            .then(|| DateTime::from_millis(now + self.next_attempt_in_ms.unwrap_or(60_000)));
        let handoff = self.handoff.then(|| {
            let (at, retry) = match (self.status, next_attempt_at) {
                // An automatic retry's hand-off, dated when it is due.
                (Scheduled, Some(due)) => (due, false),
                (Queued, _) => (ago(self.updated_secs_ago), self.retry_count > 0),
                _ => (ago(started_secs_ago), self.retry_count > 0),
            };
            Handoff {
                redispatched: self.redispatched_secs_ago.map(ago),
                ..Handoff::new(&task_id, at, retry)
            }
        });
        // The cause of the last failure, as every failure records it.
        let cause = last_error
            .as_deref()
            .filter(|_| self.error_group)
            .map(crate::error_groups::Cause::of);
        Task {
            task_id,
            user_id: UserId::parse(&self.owner).expect("a valid fixture owner"),
            brand_id: None,
            kind: self.kind.clone(),
            tags: Vec::new(),
            payload: self.payload.clone(),
            status: self.status,
            progress: self
                .progress
                .unwrap_or(if self.status == Completed { 100 } else { 0 }),
            retry_count: self.retry_count,
            max_retries: self.max_retries,
            stored_retries_left: self
                .retries_left
                .unwrap_or(Some((self.max_retries - self.retry_count).max(0))),
            attempts,
            last_error,
            error_history,
            result: (self.status == Completed).then(|| doc! { "attempt": attempts }),
            lease,
            created_at: ago(self.created_secs_ago.unwrap_or(oldest)),
            updated_at: ago(self.updated_secs_ago),
            started_at: (attempts > 0 || self.status == Processing).then(|| ago(started_secs_ago)),
            finished_at: finished.then(|| ago(self.updated_secs_ago)),
            handoff,
            auto_retry: self.auto_retry,
            auto_retries: self.auto_retries,
            retries_total: Some(self.retry_count + self.auto_retries),
            next_attempt_at,
            error_group: cause.as_ref().map(|c| c.group.clone()),
            error_template: cause.map(|c| c.template),
            events,
            steps: self.steps.clone(),
            payload_version: 1,
            payload_history: Vec::new(),
            payload_base: None,
        }
    }

    /// Builds the task and inserts it through [`Store::insert`]; returns it as stored.
    pub async fn insert(&self, store: &Store) -> Task {
        let task = self.build();
        store
            .insert(&task)
            .await
            .unwrap_or_else(|e| panic!("cannot insert fixture task: {e}"));
        task
    }
}

/// Checks every invariant a stored task satisfies, whatever happened to it; panics naming the
/// broken one. Call it after every scenario.
pub fn assert_legal(task: &Task) {
    use TaskStatus::*;
    let status = task.status;
    assert_eq!(
        task.lease.is_some(),
        status == Processing,
        "a lease exactly while processing: {task:?}"
    );
    if let Some(lease) = &task.lease {
        assert!(!lease.id.is_empty(), "a lease has an id: {task:?}");
    }
    assert!(
        (0..=100).contains(&task.progress),
        "progress in 0..=100: {task:?}"
    );
    assert!(
        (0..=MAX_MAX_RETRIES).contains(&task.max_retries),
        "maxRetries in 0..={MAX_MAX_RETRIES}: {task:?}"
    );
    assert!(
        (0..=task.max_retries).contains(&task.retry_count),
        "retryCount in 0..=maxRetries: {task:?}"
    );
    // Memoised steps (docs/spec.md §16): a prefix of one run's sequence, completed steps then
    // at most the one an attempt failed in, each name once, within the limits.
    let steps = &task.steps;
    assert!(
        steps.len() <= MAX_STEPS,
        "at most {MAX_STEPS} steps: {task:?}"
    );
    for (k, step) in steps.iter().enumerate() {
        let last = k + 1 == steps.len();
        assert!(
            step.status == StepStatus::Completed || last,
            "only the last step may be failed: {steps:?}"
        );
        assert_eq!(
            step.output.is_some(),
            step.status == StepStatus::Completed,
            "an output exactly on a completed step: {step:?}"
        );
        assert!(
            steps[..k].iter().all(|s| s.name != step.name),
            "step names are unique: {steps:?}"
        );
        assert!(
            step.duration_ms >= 0,
            "a step's duration is not negative: {step:?}"
        );
    }
    // Payload versions (docs/spec.md §17): the kept edits are the versions after the base, in
    // order, up to the current one, and rebuild the current payload.
    assert!(task.payload_version >= 1, "payloadVersion from 1: {task:?}");
    let history = &task.payload_history;
    assert!(
        history.len() <= PAYLOAD_HISTORY_LEN,
        "at most {PAYLOAD_HISTORY_LEN} edits kept"
    );
    match &task.payload_base {
        None => assert!(
            history.is_empty(),
            "edits are kept with their base: {task:?}"
        ),
        Some(base) => {
            let versions: Vec<i32> = history.iter().map(|c| c.version).collect();
            let expected: Vec<i32> = (base.version + 1..=task.payload_version).collect();
            assert_eq!(
                versions, expected,
                "the kept edits follow the base: {task:?}"
            );
            let rebuilt = crate::versions::payload_at(task, base.version);
            if !task.payload.is_empty() {
                let mut whole = crate::task::document_to_json(base.payload.clone());
                for change in history {
                    let patch: json_patch::Patch =
                        serde_json::from_str(&change.patch).expect("a stored patch");
                    json_patch::patch(&mut whole, &patch).expect("a patch applies");
                }
                assert_eq!(
                    whole,
                    crate::task::document_to_json(task.payload.clone()),
                    "base + patches = payload: {task:?}"
                );
                assert!(rebuilt.is_ok());
            }
        }
    }
    let outputs: usize = steps.iter().map(StepRecord::output_len).sum();
    assert!(
        outputs <= MAX_STEPS_OUTPUT,
        "step outputs within 1 MiB: {outputs}"
    );
    // Absent only on a task an earlier version stored (the store's upkeep fills it in).
    if let Some(left) = task.stored_retries_left {
        assert_eq!(
            left,
            task.retries_left(),
            "retriesLeft is maxRetries - retryCount: {task:?}"
        );
    }
    assert!(task.attempts >= 0, "attempts not negative: {task:?}");
    assert!(
        task.error_history.len() <= ERROR_HISTORY_LEN as usize,
        "at most {ERROR_HISTORY_LEN} errorHistory entries: {task:?}"
    );
    for entry in &task.error_history {
        assert!(
            !entry.message.is_empty() && entry.attempt >= 0 && entry.at <= task.updated_at,
            "errorHistory entry {entry:?} is a past failure: {task:?}"
        );
    }
    assert!(
        task.created_at <= task.updated_at,
        "createdAt <= updatedAt: {task:?}"
    );
    if let Some(handoff) = &task.handoff {
        // An automatic retry's hand-off is dated when it is due (its `nextAttemptAt`), which
        // may be later than the last write; any other hand-off is dated when it was queued.
        let scheduled_handoff = task.auto_retries > 0 && !handoff.retry;
        assert!(
            !handoff.dedup_id.is_empty()
                && (scheduled_handoff || handoff.at <= task.updated_at)
                && handoff
                    .redispatched
                    .is_none_or(|at| at >= handoff.at || scheduled_handoff),
            "a hand-off is queued no later than the last update, and re-sent after: {task:?}"
        );
    }
    let finished = matches!(status, Completed | Failed | Cancelled);
    assert_eq!(
        task.finished_at.is_some(),
        finished,
        "finishedAt exactly when finished: {task:?}"
    );
    match status {
        Queued => assert!(
            task.progress == 0 && task.last_error.is_none(),
            "queued: progress 0, no lastError: {task:?}"
        ),
        Processing => assert!(
            task.attempts >= 1 && task.started_at.is_some(),
            "processing: an attempt started: {task:?}"
        ),
        Completed => assert!(
            task.progress == 100 && task.last_error.is_none() && task.result.is_some(),
            "completed: progress 100, a result, no lastError: {task:?}"
        ),
        Failed => assert!(
            task.last_error.as_deref().is_some_and(|e| !e.is_empty()),
            "failed: a lastError: {task:?}"
        ),
        Cancelled => {}
        Scheduled => assert!(
            task.next_attempt_at.is_some()
                && task.last_error.is_some()
                && task
                    .auto_retry
                    .is_some_and(|p| task.auto_retries <= p.attempts),
            "scheduled: a next attempt, a lastError, within its automatic budget: {task:?}"
        ),
    }
    if !matches!(status, Scheduled) {
        assert!(
            task.next_attempt_at.is_none(),
            "nextAttemptAt only while scheduled: {task:?}"
        );
    }
    assert_eq!(
        task.error_group.is_some(),
        task.error_template.is_some(),
        "errorGroup and errorTemplate are written together: {task:?}"
    );
    if let Some(group) = &task.error_group {
        assert!(
            crate::error_groups::is_group_id(group),
            "errorGroup is 12 hex digits: {task:?}"
        );
    }
    assert!(
        task.events.len() <= crate::task::EVENTS_LEN as usize,
        "events capped: {task:?}"
    );
    for event in &task.events {
        let owner = |prefix: &str| event.by.strip_prefix(prefix) == Some(task.user_id.as_str());
        assert!(
            matches!(event.by.as_str(), "auto" | "qstash" | "self" | "sweep")
                || owner("user:")
                || owner("bulk:"),
            "an event is by auto, qstash, self, sweep, or user:/bulk: its owner: {event:?} in {task:?}"
        );
    }
}

/// [`assert_legal`] for a raw stored document (as HTTP tests read it): it must also be a
/// well-formed task (known status, every field typed, `lease` and `handoff` documents when
/// present, never null). Returns the task.
pub fn assert_legal_document(stored: &Document) -> Task {
    for field in ["lease", "handoff"] {
        if let Some(value) = stored.get(field) {
            assert!(
                matches!(value, Bson::Document(_)),
                "{field} is absent or a document: {stored}"
            );
        }
    }
    let task: Task = mongodb::bson::from_document(stored.clone())
        .unwrap_or_else(|e| panic!("not a task document ({e}): {stored}"));
    assert_legal(&task);
    task
}

/// `retry`'s re-queue as the action makes it: the task read, then `requeue_for_retry` pinned on
/// what was read. The task as read when it moved; `None` when it did not (or is absent).
pub async fn requeue_as_read(
    store: &Store,
    task_id: &TaskId,
    user: &UserId,
    handoff: &Handoff,
) -> crate::error::Result<Option<Task>> {
    let Some(task) = store.find(task_id).await? else {
        return Ok(None);
    };
    let moved = store
        .requeue_for_retry(&task, user, handoff, Resume::FailedStep)
        .await?;
    Ok(moved.then_some(task))
}
