//! The action handlers of docs/spec.md §5: one function per action, each taking typed input and
//! returning the success body or a [`JobsError`]. `App` is built once per process.

use std::future::Future;
use std::sync::Arc;

use mongodb::bson::{DateTime, Document};
use serde_json::Value;

use crate::alerts::Alerts;
use crate::auth::{Auth, Credentials};
use crate::bulk;
use crate::conditional::IfNoneMatch;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::error::{JobsError, NOT_DUE_STATUS, Result};
use crate::event_stream::EventId;
use crate::failpoints::At;
use crate::http::{Query, decode};
use crate::idempotency::{IdempotencyKey, request_hash};
use crate::processors::Processors;
use crate::replies::{
    Created, DeliveryFailed, DestinationProbe, Done, Group, Groups, Health, InvalidSetting, Listed,
    Processed, RetriedMany, TaskList, TaskReply, TaskView,
};
use crate::requests::{
    CreateRequest, FailureCallback, ListQuery, ProcessRequest, RetryManyRequest, RetryRequest,
    Source, TaskRequest, checked_payload, resume_from, task_id, user_id,
};
use crate::steps::Resume;
use crate::store::{Admission, Store};
use crate::sweeper::{self, SweepReport};
use crate::task::{Handoff, Task, TaskId, TaskStatus, UserId, rfc3339};
use crate::transitions::{Refusal, retry_refusal};
use crate::versions::{Edit, payload_at};
use crate::watch::{Hub, Watcher};
use crate::worker;

/// Deployed settings without which a hand-off can never be delivered (`process` refuses it) or
/// a lost one never rescued (`sweep` refuses the cron): `create` and `retry` refuse to queue.
const NEEDED_TO_RUN_TASKS: [&str; 3] = [
    "QSTASH_CURRENT_SIGNING_KEY",
    "JOBS_INTERNAL_SECRET",
    "CRON_SECRET",
];

pub use crate::requests::MAX_PAYLOAD_BYTES;

/// Header of `health`'s probe of the hand-off destination: a `health` carrying it does not
/// probe in turn (the destination is often this very deployment).
pub const HEALTH_PROBE_HEADER: &str = "x-jobs-health-probe";
const HEALTH_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide state of the function, built once at start-up and shared by every
/// request: configuration, store, dispatcher, processors and auth.
pub struct App {
    config: Config,
    store: Arc<Store>,
    dispatcher: Arc<Dispatcher>,
    processors: Processors,
    auth: Auth,
    /// Deployed settings that are missing (docs/spec.md §6); `health` reports them.
    missing: Vec<&'static str>,
    /// The destination's answer to `health`'s probe, once it answered (docs/spec.md §5).
    probe: std::sync::OnceLock<DestinationProbe>,
    /// The shared client, for `health`'s probe.
    http: reqwest::Client,
    /// The process's one change stream, fanned out to every `watch` (docs/spec.md §18).
    hub: Arc<Hub>,
    /// Alerts on failures (docs/spec.md §21).
    alerts: Arc<Alerts>,
    /// The last `metrics` text and when it was read: scrapes within [`METRICS_FRESH`] share it.
    metrics: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long one read of the metrics serves the scrapes of an instance (docs/spec.md §20).
const METRICS_FRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the function could not start (the database is not contacted at start-up, so a
/// database problem is never one of these).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The HTTP client for hand-offs and webhooks could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The QStash client could not be built from its settings.
    #[error(transparent)]
    Dispatch(#[from] crate::dispatch::DispatchError),
}

/// What `process` did with a delivery.
pub enum Delivery<F> {
    /// Claimed: answer 202 and keep running `work` after the response.
    Claimed {
        /// The task claimed.
        task_id: TaskId,
        /// The run of its processor, to await after the response (`wait_until`).
        work: F,
    },
    /// Nothing to claim (neither `queued` nor a `scheduled` task that is due, docs/spec.md §4):
    /// a duplicate delivery (QStash is at-least-once), a task cancelled, running or finished
    /// meanwhile, or an unknown id. Answer 200 and do nothing. (A `scheduled` task delivered
    /// before it is due is no `Delivery`: `process` answers it 425 `NOT_DUE`.)
    NotClaimed,
}

impl<F> Delivery<F> {
    /// The reply of `process` for this delivery.
    pub fn reply(&self) -> Processed {
        match self {
            Self::Claimed { task_id, .. } => Processed::claimed(task_id.clone()),
            Self::NotClaimed => Processed::not_claimed(),
        }
    }
}

impl App {
    /// Builds the process-wide state. The database is contacted by the first request.
    pub async fn new(
        config: Config,
        processors: impl FnOnce(&Config, reqwest::Client) -> Processors,
    ) -> std::result::Result<Self, StartupError> {
        tracing::debug!(?config, "configuration");
        // One HTTP client for hand-offs and `health`'s probe (a webhook builds its own per
        // call, pinned to the addresses it checked); it never follows redirects, as neither
        // may: a redirecting destination is a misconfiguration `health` names.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A suspended instance's pooled connections are dead when it thaws; like
            // MongoDB's `maxIdleTimeMS`, do not keep them long enough to be reused then.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()?;
        let store = Store::new(&config);
        let dispatcher = Dispatcher::new(&config, http.clone())?;
        if let Err(message) = dispatcher.route() {
            tracing::error!(
                message,
                "dispatch is not configured; every create and retry will be refused"
            );
        }
        for setting in &config.invalid {
            tracing::error!(
                variable = setting.name,
                problem = %setting.problem,
                "a setting cannot be used; every action answers 503 until it is fixed"
            );
        }
        let missing = config.missing_for_deployment();
        for variable in &missing {
            tracing::error!(
                variable,
                environment = ?config.environment,
                "a deployed function needs this setting; health answers 503 until it is set"
            );
        }
        let store = Arc::new(store);
        Ok(Self {
            hub: Arc::new(Hub::new(
                store.clone(),
                config.watch_duration,
                config.watch_ping,
            )),
            missing,
            metrics: tokio::sync::Mutex::new(None),
            alerts: Arc::new(Alerts::new(&config, store.clone())),
            auth: Auth::new(&config),
            processors: processors(&config, http.clone()),
            probe: std::sync::OnceLock::new(),
            http,
            store,
            dispatcher: Arc::new(dispatcher),
            config,
        })
    }

    /// Production or preview.
    pub fn is_deployed(&self) -> bool {
        self.config.is_deployed()
    }

    /// Refuses every action but `health` while a setting cannot be used (503, before anything
    /// is read or written), or when a deployed function has no `MONGODB_URI`.
    pub fn configured(&self) -> Result<()> {
        if !self.config.invalid.is_empty() {
            let each: Vec<String> = self.config.invalid.iter().map(|e| e.to_string()).collect();
            return Err(JobsError::InvalidSettings(each.join("; ")));
        }
        self.database_configured()
    }

    /// Refuses every action that needs the database when a deployed function has no
    /// `MONGODB_URI`, instead of quietly trying localhost.
    pub fn database_configured(&self) -> Result<()> {
        match self.missing.contains(&"MONGODB_URI") {
            true => Err(JobsError::missing_setting("MONGODB_URI")),
            false => Ok(()),
        }
    }

    /// The route tasks are handed off on, or `MISCONFIGURED` with the sentence of docs/spec.md
    /// §7: checked before anything is written, so nothing is left `queued`.
    fn route(&self) -> Result<&crate::dispatch::Route> {
        // Deployed without what deliveries or the rescuer need, a task queued now could never
        // run: refused like a missing route, before anything is written.
        let unrunnable: Vec<&str> = self
            .missing
            .iter()
            .copied()
            .filter(|name| NEEDED_TO_RUN_TASKS.contains(name))
            .collect();
        if !unrunnable.is_empty() {
            return Err(JobsError::Misconfigured(format!(
                "The deployment is misconfigured: set {}; a task queued now could not run.",
                unrunnable.join(", ")
            )));
        }
        self.dispatcher
            .route()
            .map_err(|message| JobsError::Misconfigured(message.to_owned()))
    }

    /// Development only: where the Task Manager page is served from (`JOBS_STATIC_DIR`).
    pub fn static_dir(&self) -> Option<&str> {
        self.config.static_dir.as_deref()
    }

    /// `create`: validates the request, stores the task `queued` with its hand-off recorded,
    /// and hands it off. Refused with `MISCONFIGURED` before anything is written when
    /// dispatch is not configured. With an idempotency key (the `Idempotency-Key` header or
    /// `idempotencyKey`), a key already used answers its first task instead.
    pub async fn create(
        &self,
        credentials: &Credentials,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Created> {
        let mut request: CreateRequest = decode(body)?;
        let key = IdempotencyKey::of_request(idempotency_key, request.idempotency_key.as_deref())?;
        let user = self.auth.user(
            credentials,
            user_id(request.user_id.as_deref(), Source::Body)?,
        )?;
        let (payload, stored) = checked_payload(request.payload.take().unwrap_or_default())?;
        let processor = self
            .processors
            .get(&request.kind)
            .ok_or_else(|| JobsError::UnknownTaskType(request.kind.chars().take(64).collect()))?;
        processor
            .validate(&payload)
            .map_err(JobsError::InvalidPayload)?;
        let (brand_id, max_retries) = (request.brand_id()?, request.max_retries()?);
        let auto_retry = request
            .auto_retry()?
            .or_else(|| processor.default_auto_retry());
        self.route()?;
        let tags = request.tags()?;
        let mut task = Task {
            auto_retry,
            tags,
            ..Task::new(user, brand_id, request.kind, stored, max_retries)
        };
        if let Some(key) = &key {
            let request_hash = request_hash(&task, &payload);
            // A key stored whose answer was lost: the client's retry with the same key finds
            // it, and creates the task under its id.
            match self
                .store
                .admit(key, &request_hash, task)
                .await
                .at("create.key_admitted")?
            {
                Admission::Create(admitted) => task = admitted,
                Admission::Replay(first) => return Ok(Created::replayed(&first)),
            }
        }
        let handoff = task
            .handoff
            .clone()
            .expect("a new task records its hand-off");
        match self
            .store
            .insert_unless_stored(&task)
            .await
            .at("create.inserted")
        {
            Ok(Some(first)) => return Ok(Created::replayed(&first)),
            Ok(None) => {}
            // The insert may have applied without answering: a task stored but not handed off
            // would wait for `sweep`. Carry on if the task is there with this very hand-off.
            Err(error) => {
                let stored = match error.may_have_applied() {
                    true => self.store.find(&task.task_id).await.ok().flatten(),
                    false => None,
                };
                match stored {
                    Some(stored) if stored.handoff.as_ref() == Some(&handoff) => {}
                    // Stored under the key's id by another create of the same key: its task.
                    Some(stored) if key.is_some() => return Ok(Created::replayed(&stored)),
                    _ => return Err(error),
                }
                tracing::warn!(task_id = %task.task_id, "insert answered an error but applied");
            }
        }
        tracing::info!(task_id = %task.task_id, task_type = %task.kind, "task created");

        let sent = self.dispatcher.dispatch(&task.task_id, &handoff).await;
        if sent.at("create.handed_off").is_err() {
            // Never leave a task queued with no message on its way: fail it, visibly, so
            // the user can retry it.
            if self
                .store
                .fail_unqueued(&task, &handoff)
                .await
                .at("create.failed_unqueued")?
            {
                return Err(JobsError::EnqueueFailed(task.task_id));
            }
            // The hand-off arrived after all (a 202 after the timeout): say what is true.
            let status = self.store.find(&task.task_id).await?.map(|t| t.status);
            return Ok(Created::new(
                task.task_id,
                status.unwrap_or(TaskStatus::Queued),
            ));
        }
        Ok(Created::new(task.task_id, TaskStatus::Queued))
    }

    /// `get`: one of the caller's tasks; another user's task is `TASK_NOT_FOUND`. With
    /// `version`, also the payload as it was at that version (docs/spec.md §17).
    pub async fn get(&self, credentials: &Credentials, query: &Query) -> Result<TaskReply> {
        let user = self
            .auth
            .user(credentials, user_id(query.get("userId"), Source::Query)?)?;
        let task_id = task_id(query.get("taskId"), Source::Query)?
            .ok_or(JobsError::MissingFields("taskId"))?;
        let version = query
            .get("version")
            .map(|v| {
                v.parse::<i32>()
                    .map_err(|_| JobsError::InvalidQuery("version must be a whole number".into()))
            })
            .transpose()?;
        let task = self
            .store
            .find_owned(&task_id, &user)
            .await?
            .ok_or(JobsError::TaskNotFound(task_id))?;
        let payload_at = match version {
            None => None,
            Some(version) => {
                let payload = payload_at(&task, version).map_err(JobsError::InvalidQuery)?;
                let payload = crate::processors::redact_payload(&task.kind, payload);
                Some(serde_json::json!({ "version": version, "payload": payload }))
            }
        };
        Ok(TaskReply {
            task: TaskView::from(task),
            payload_at,
        })
    }

    /// `list`: a page of the caller's tasks, newest first, without payloads; 304 when
    /// `if_none_match` names the page's tag. Either way the page's read: ONE `find`, two when
    /// the page is bounded by a window (docs/spec.md §19).
    pub async fn list(
        &self,
        credentials: &Credentials,
        query: &Query,
        if_none_match: &IfNoneMatch,
    ) -> Result<Listed> {
        let user = self
            .auth
            .user(credentials, user_id(query.get("userId"), Source::Query)?)?;
        let list_query = ListQuery::parse(query)?;
        let page = self.store.list_for(&user, &list_query).await?;
        let page = TaskList {
            tasks: page.tasks.into_iter().map(TaskView::summary).collect(),
            next_cursor: page.next.map(|cursor| cursor.encode()),
            window_ended: page.window_ended,
        };
        let canonical = list_query.canonical();
        let scope = [user.as_str().as_bytes(), canonical.as_bytes()];
        Ok(Listed::answer(&scope, page, if_none_match))
    }

    /// `failures`: the caller's failures per hour over the last 24 h, by cause, with retries
    /// and recoveries (docs/spec.md §22): ONE aggregation.
    pub async fn failures(
        &self,
        credentials: &Credentials,
        query: &Query,
    ) -> Result<crate::chart::FailuresOverTime> {
        let user = self
            .auth
            .user(credentials, user_id(query.get("userId"), Source::Query)?)?;
        let now = DateTime::now();
        let since = DateTime::from_millis(
            (now.timestamp_millis() / 3_600_000 - (crate::chart::HOURS - 1)) * 3_600_000,
        );
        let (events, truncated) = self.store.chart_events(&user, since).await?;
        Ok(crate::chart::FailuresOverTime::of(now, &events, truncated))
    }

    /// `metrics`: the OpenMetrics text (docs/spec.md §20), read from the database at most once
    /// per [`METRICS_FRESH`] per instance (concurrent scrapes wait for the one read).
    pub async fn metrics(&self, credentials: &Credentials) -> Result<String> {
        self.auth.metrics(credentials)?;
        let mut kept = self.metrics.lock().await;
        if let Some((at, text)) = kept.as_ref()
            && at.elapsed() < METRICS_FRESH
        {
            return Ok(text.clone());
        }
        let snapshot = self.store.metrics_snapshot(DateTime::now()).await?;
        let text = crate::metrics::openmetrics(&snapshot);
        *kept = Some((std::time::Instant::now(), text.clone()));
        Ok(text)
    }

    /// `watch`: the caller's changes as they happen, after `last_event_id` (the
    /// `Last-Event-ID` of a reconnect) or from now; no read of its own (docs/spec.md §18).
    pub async fn watch(
        &self,
        credentials: &Credentials,
        query: &Query,
        last_event_id: Option<&str>,
    ) -> Result<Watcher> {
        let (user, token_until) = self
            .auth
            .user_until(credentials, user_id(query.get("userId"), Source::Query)?)?;
        let after = last_event_id
            .filter(|id| !id.is_empty())
            .map(EventId::decode)
            .transpose()?;
        // A stream ends when its token does; the reconnect is then refused like any call.
        let until =
            token_until.map(|exp| std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp));
        self.hub.subscribe(user, after, until).await
    }

    /// The headline feature: read the task, refuse with the precise reason, or re-queue it in
    /// ONE conditional update pinned on what was read, then the re-publish.
    pub async fn retry(&self, credentials: &Credentials, body: &[u8]) -> Result<Done> {
        const MISSING: JobsError = JobsError::MissingFields("taskId, userId");
        let request: RetryRequest = decode(body)?;
        let task_id = task_id(request.task_id.as_deref(), Source::Body)?.ok_or(MISSING)?;
        let claimed = user_id(request.user_id.as_deref(), Source::Body)?;
        let user = match self.auth.user(credentials, claimed) {
            Err(JobsError::MissingFields(_)) => return Err(MISSING),
            other => other?,
        };
        let from = resume_from(request.from.as_deref())?;
        let (mut sent_payload, mut new_payload) = (request.payload, None);

        self.route()?;
        let handoff = Handoff::new(&task_id, DateTime::now(), true);
        // Read, then re-queue pinned on the read. A task changed in between (another retry
        // that ran and failed again, a give-back) is read once more and, if that still allows
        // a retry, re-queued on it: only a retry that another retry won answers NOT_FAILED.
        // An edit is pinned on the payload version read as well: another version by then is
        // VERSION_CONFLICT, never an edit of a payload the caller did not see.
        let mut requeued = Ok(false);
        let mut first_version = None;
        for _ in 0..2 {
            let read = self.store.find(&task_id).await?;
            let task = match (retry_refusal(read.as_ref(), &user), read) {
                (None, Some(task)) => task,
                (refusal, _) => {
                    return Err(refusal.unwrap_or(Refusal::NotFound).error(task_id));
                }
            };
            // Checked once the task is known to be the caller's and retryable (the plan's order
            // of refusals first), and before anything is written.
            if let Some(sent) = sent_payload.take() {
                new_payload = Some(checked_payload(sent)?);
            }
            let seen = *first_version.get_or_insert(task.payload_version);
            let expected = request.expected_version.unwrap_or(seen);
            if new_payload.is_some() && task.payload_version != expected {
                return Err(JobsError::VersionConflict(task.payload_version));
            }
            let edit = match &new_payload {
                Some((value, document)) => self.edit_of(&task, (value, document), &user)?,
                None => None,
            };
            // After an edit the completed steps ran on the old input: from the start, unless
            // the caller asked otherwise.
            let from = match (&edit, request.from.is_some()) {
                (Some(_), false) => Resume::Start,
                _ => from,
            };
            requeued = self
                .store
                .requeue_edited(&task, &user, &handoff, (from, edit.as_ref()))
                .await
                .at("retry.requeued");
            if !matches!(requeued, Ok(false)) {
                break;
            }
        }
        match requeued {
            Ok(true) => {}
            // Changed twice between read and update: another retry keeps winning.
            Ok(false) => return Err(Refusal::NotFailed.error(task_id)),
            // The update may have applied without answering: if the task carries this
            // hand-off, it did, and the retry goes on (it was counted).
            Err(error) if error.may_have_applied() => {
                let now = self.store.find(&task_id).await.ok().flatten();
                if now
                    .and_then(|t| t.handoff)
                    .is_none_or(|h| h.dedup_id != handoff.dedup_id)
                {
                    return Err(error);
                }
                tracing::warn!(task_id = %task_id, "re-queue answered an error but applied");
            }
            Err(error) => return Err(error),
        }
        let sent = self.dispatcher.dispatch(&task_id, &handoff).await;
        if let Err(error) = sent.at("retry.handed_off") {
            if self
                .store
                .restore_after_failed_requeue(&task_id, &user, &handoff)
                .await
                .at("retry.restored")?
            {
                tracing::warn!(task_id = %task_id, %error, "retry not queued; task restored");
                return Err(JobsError::RequeueFailed);
            }
            // The hand-off was reported failed, yet the task moved on: answer what is true.
            let now = self.store.find(&task_id).await?.map(|t| t.status);
            tracing::warn!(task_id = %task_id, %error, status = ?now, "hand-off reported failed but the task moved on");
            if now == Some(TaskStatus::Cancelled) {
                return Err(JobsError::CancelledMeanwhile);
            }
        }
        Ok(Done::new(task_id))
    }

    /// The edit of `task`'s payload into `payload` (docs/spec.md §17), validated by its
    /// processor exactly as at `create`; `None` when it is the current payload.
    fn edit_of(
        &self,
        task: &Task,
        (payload, document): (&Value, &Document),
        user: &UserId,
    ) -> Result<Option<Edit>> {
        let processor = self
            .processors
            .get(&task.kind)
            .ok_or_else(|| JobsError::UnknownTaskType(task.kind.chars().take(64).collect()))?;
        processor
            .validate(payload)
            .map_err(JobsError::InvalidPayload)?;
        let by = format!("user:{user}");
        let edit = Edit::of(task, document.clone(), &by, DateTime::now());
        match edit.as_ref().and_then(Edit::refusal) {
            Some(refused) => Err(JobsError::InvalidPayload(refused)),
            None => Ok(edit),
        }
    }

    /// `cancel`: a queued, scheduled or processing task of the caller; the precise refusal is
    /// looked up only when the update matched nothing.
    pub async fn cancel(&self, credentials: &Credentials, body: &[u8]) -> Result<Done> {
        let request: TaskRequest = decode(body)?;
        let task_id = task_id(request.task_id.as_deref(), Source::Body)?
            .ok_or(JobsError::MissingFields("taskId"))?;
        let user = self.auth.user(
            credentials,
            user_id(request.user_id.as_deref(), Source::Body)?,
        )?;
        if self.store.cancel(&task_id, &user).await?.is_some() {
            return Ok(Done::new(task_id));
        }
        Err(match self.store.find(&task_id).await? {
            None => JobsError::TaskNotFound(task_id),
            Some(task) if task.user_id != user => JobsError::NotOwner,
            Some(task) => JobsError::NotCancellable(task.status),
        })
    }

    /// A delivery from QStash or a self-invocation: authenticate on the raw body, then claim.
    pub async fn process(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<Delivery<impl Future<Output = ()> + Send + 'static>> {
        let process_url = self.dispatcher.route().ok().map(|r| r.process_url());
        let deliverer = self
            .auth
            .delivery(credentials, body, process_url.as_deref())?;
        let request: ProcessRequest = decode(body)?;
        let task_id = TaskId::parse(request.task_id).map_err(JobsError::InvalidBody)?;
        let by = deliverer.name();
        let now = DateTime::now();
        let claimed = self
            .store
            .claim(&task_id, self.config.lease, by, now)
            .await?;
        let Some(task) = claimed else {
            // A scheduled task delivered before it is due is refused (non-2xx), so QStash
            // delivers it again later instead of dropping it. Judged at the claim's `now`.
            let task = self.store.find(&task_id).await?;
            if let Some(wait) = task.and_then(|t| t.until_due(now)) {
                tracing::info!(task_id = %task_id, wait_ms = wait.as_millis() as u64, "delivered before its next attempt is due");
                return Err(JobsError::NotDueYet(wait.as_secs().max(1)));
            }
            tracing::info!(task_id = %task_id, "nothing to claim; delivery ignored");
            return Ok(Delivery::NotClaimed);
        };
        let worker = worker::Worker {
            store: self.store.clone(),
            dispatcher: self.dispatcher.clone(),
            processors: self.processors.clone(),
            lease_for: self.config.lease,
            by,
            alerts: self.alerts.clone(),
        };
        Ok(Delivery::Claimed {
            task_id,
            work: worker::run(worker, task),
        })
    }

    /// QStash's failure callback: it gave up delivering a hand-off. Verified like `process`
    /// (signature on the raw body, for the URL the service publishes it under); the task is
    /// failed at once if that hand-off is still the one it waits for.
    pub async fn delivery_failed(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<DeliveryFailed> {
        let url = self
            .dispatcher
            .route()
            .ok()
            .map(|r| r.url("deliveryFailed"));
        self.auth.delivery(credentials, body, url.as_deref())?;
        let callback: FailureCallback = decode(body)?;
        let source = callback.source()?;
        let task_id = TaskId::parse(source.task_id).map_err(JobsError::InvalidBody)?;
        let (Some(handoff_id), Some(task)) = (source.handoff_id, self.store.find(&task_id).await?)
        else {
            return Ok(DeliveryFailed { failed: false });
        };
        // Its last answer was 425 NOT_DUE: QStash gave up on early deliveries (clock skew),
        // not on the task. It stays scheduled, handed off again under a new dedup id; if that
        // fails, `sweep` sends it once it is overdue.
        if callback.status == Some(NOT_DUE_STATUS) {
            tracing::warn!(task_id = %task_id, "QStash gave up on early deliveries; handed off again");
            let current = task.handoff.filter(|h| h.dedup_id == handoff_id);
            if let (TaskStatus::Scheduled, Some(current)) = (task.status, current) {
                let fresh = Handoff::new(&task_id, current.at, current.retry);
                if self
                    .store
                    .renew_handoff(&task_id, &handoff_id, &fresh)
                    .await?
                {
                    let _ = self.dispatcher.dispatch(&task_id, &fresh).await;
                }
            }
            return Ok(DeliveryFailed { failed: false });
        }
        let failed = self
            .store
            .fail_undelivered(&task, &handoff_id, &callback.message())
            .await
            .at("delivery_failed.failed")?;
        tracing::warn!(task_id = %task_id, failed, retried = callback.retried, status = callback.status, "QStash gave up delivering a hand-off");
        Ok(DeliveryFailed { failed })
    }

    /// `groups`: the caller's failures grouped by cause, largest first (docs/spec.md §14).
    pub async fn groups(&self, credentials: &Credentials, query: &Query) -> Result<Groups> {
        let user = self
            .auth
            .user(credentials, user_id(query.get("userId"), Source::Query)?)?;
        let status = match query.get("status").filter(|s| !s.is_empty()) {
            None => TaskStatus::Failed,
            Some(name) => TaskStatus::parse(name).ok_or_else(|| {
                let shown: String = name.chars().take(32).collect();
                JobsError::InvalidQuery(format!("unknown status {shown:?}"))
            })?,
        };
        let found = match status {
            TaskStatus::Failed => {
                let max_age = self.config.groups_cache;
                self.store.failed_groups(&user, max_age).await?
            }
            other => self.store.error_groups(&user, other).await?,
        };
        let groups = found
            .iter()
            .filter_map(|g| {
                Some(Group {
                    error_group: g.get_str("_id").ok()?.to_owned(),
                    template: g.get_str("template").unwrap_or_default().to_owned(),
                    count: crate::store::integer(g, "count")?,
                    last_at: rfc3339(*g.get_datetime("lastAt").ok()?),
                    example_task_id: g.get_str("exampleTaskId").ok()?.to_owned(),
                })
            })
            .collect();
        Ok(Groups { groups })
    }

    /// `retryMany`: retries many failed tasks of the caller, by ids or a page of a filter,
    /// each with exactly `retry`'s guard and effect (see [`bulk`]).
    pub async fn retry_many(&self, credentials: &Credentials, body: &[u8]) -> Result<RetriedMany> {
        let request: RetryManyRequest = decode(body)?;
        let claimed = user_id(request.user_id.as_deref(), Source::Body)?;
        let user = self.auth.user(credentials, claimed)?;
        let call = request.checked()?;
        self.route()?;
        bulk::retry_many(
            (&self.store, &self.dispatcher, &self.processors),
            &user,
            call,
        )
        .await
    }

    /// The rescuer (see [`sweeper`]), for Vercel Cron or a signed QStash schedule.
    pub async fn sweep(&self, credentials: &Credentials) -> Result<SweepReport> {
        let sweep_url = self.dispatcher.route().ok().map(|r| r.url("sweep"));
        self.auth.cron(credentials, sweep_url.as_deref())?;
        sweeper::sweep(&self.store, &self.dispatcher, &self.config).await
    }

    /// Liveness with the settings, the dispatch route, the hand-off destination and the
    /// database. `Err` (503) when a setting is invalid or (deployed) missing, dispatch is not
    /// configured, the destination redirects, or MongoDB is unreachable. `probe` is false for
    /// the probe itself ([`HEALTH_PROBE_HEADER`]).
    pub async fn health(&self, probe: bool) -> std::result::Result<Health, Health> {
        let route = self.dispatcher.route();
        let mut health = Health {
            ok: true,
            store: "mongodb",
            dispatch: route.map_or("unconfigured", |r| r.transport()),
            processors: self
                .processors
                .types()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            destination: route.ok().map(|r| r.process_url()),
            dispatch_error: route.err().map(str::to_owned),
            missing: self.missing.clone(),
            invalid: self
                .config
                .invalid
                .iter()
                .map(|e| InvalidSetting {
                    variable: e.name,
                    problem: e.problem.clone(),
                })
                .collect(),
            probe: None,
            error: None,
            code: None,
        };
        // Invalid settings first, and nothing else is tried: no probe, no database.
        let problem = if !self.config.invalid.is_empty() {
            self.configured().err()
        } else if !self.missing.is_empty() {
            Some(JobsError::Misconfigured(format!(
                "The deployment is misconfigured: set {}.",
                self.missing.join(", ")
            )))
        } else if let Err(message) = route {
            Some(JobsError::Misconfigured(message.to_owned()))
        } else if let Some(redirect) = self.probe_destination(route, probe, &mut health).await {
            Some(redirect)
        } else if self.store.ping().await.is_err() {
            Some(JobsError::DbUnavailable)
        } else {
            None
        };
        let Some(problem) = problem else {
            return Ok(health);
        };
        health.ok = false;
        health.error = Some(problem.to_string());
        health.code = Some(problem.code());
        Err(health)
    }

    /// Deployed, asks the hand-off destination for its `health` once per process (the
    /// function's own answer is kept; anything else is reported and asked again next time). A 3xx is
    /// `MISCONFIGURED`: neither QStash nor self-invocation follows redirects, so every
    /// hand-off would fail. In development the destination is this process or a tunnel.
    async fn probe_destination(
        &self,
        route: std::result::Result<&crate::dispatch::Route, &str>,
        probe: bool,
        health: &mut Health,
    ) -> Option<JobsError> {
        let (Ok(route), true, true) = (route, probe, self.is_deployed()) else {
            return None;
        };
        let answer = match self.probe.get() {
            Some(answer) => answer.clone(),
            None => {
                let url = route.url("health");
                let mut request = self
                    .http
                    .get(&url)
                    .header(HEALTH_PROBE_HEADER, "1")
                    .timeout(HEALTH_PROBE_TIMEOUT);
                if let Some(bypass) = &route.protection_bypass {
                    request =
                        request.header(crate::dispatch::PROTECTION_BYPASS_HEADER, bypass.expose());
                }
                let answer = match request.send().await {
                    Ok(response) => DestinationProbe {
                        url,
                        status: Some(response.status().as_u16()),
                        location: response
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        error: None,
                    },
                    Err(error) => DestinationProbe {
                        url,
                        status: None,
                        location: None,
                        error: Some(error.without_url().to_string()),
                    },
                };
                // Only the function's own answer (200, or 503 for its database) is kept:
                // anything else (unreachable, a redirect, Protection, a 404, a gateway error)
                // may be fixed without a redeploy, so it is asked again next time.
                if matches!(answer.status, Some(200 | 503)) {
                    self.probe.get_or_init(|| answer).clone()
                } else {
                    tracing::warn!(
                        url = answer.url,
                        status = answer.status,
                        error = answer.error,
                        "the hand-off destination did not answer health's probe as this service"
                    );
                    answer
                }
            }
        };
        let url = &answer.url;
        let wrong_route = match answer.status {
            Some(status @ 300..=399) => Some(format!(
                "The hand-off destination {url} redirects (HTTP {status}) to {}: hand-offs do \
                 not follow redirects. Set JOBS_PUBLIC_URL to the URL it redirects to.",
                answer.location.as_deref().unwrap_or("(no Location)")
            )),
            Some(status @ (401 | 403)) => Some(format!(
                "The hand-off destination {url} refused the probe (HTTP {status}), as Deployment \
                 Protection does: every hand-off would be refused. Set \
                 VERCEL_AUTOMATION_BYPASS_SECRET (Protection Bypass for Automation), or \
                 JOBS_PUBLIC_URL to an unprotected domain."
            )),
            Some(404) => Some(format!(
                "The hand-off destination {url} answered 404: it is not this service. Check \
                 JOBS_PUBLIC_URL."
            )),
            _ => None,
        };
        health.probe = Some(answer);
        wrong_route.map(JobsError::Misconfigured)
    }
}
