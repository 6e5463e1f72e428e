//! The MongoDB store: one client per process, reused across requests (serverless practice),
//! the `tasks` collection, its indexes, and every read, each named after the question it
//! answers. Status changes live in `transitions`; idempotency keys in `idempotency`; no other
//! module builds a filter.

mod idempotency;

use std::cell::Cell;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::{JobsError, Result};
use crate::selection::{BulkFilter, Cursor, ListQuery};
use crate::task::{Handoff, Task, TaskId, TaskStatus, UserId};

pub use idempotency::{Admission, IDEMPOTENCY_KEYS, idempotency_key_indexes};

/// The aggregation of `groups` (docs/spec.md §14): a user's tasks in `status` grouped by
/// `errorGroup`, newest first within a group, largest groups first, at most 50.
pub fn error_groups_pipeline(user: &UserId, status: TaskStatus) -> [Document; 5] {
    [
        doc! { "$match": { "userId": user.as_str(), "status": status,
        "errorGroup": { "$type": "string" } } },
        doc! { "$sort": { "updatedAt": -1 } },
        doc! { "$group": {
            "_id": "$errorGroup",
            "template": { "$first": "$errorTemplate" },
            "count": { "$sum": 1 },
            "lastAt": { "$max": "$updatedAt" },
            "exampleTaskId": { "$first": "$taskId" },
        } },
        doc! { "$sort": { "count": -1, "lastAt": -1 } },
        doc! { "$limit": 50 },
    ]
}

/// Newest first, after `after`: `createdAt` older, or the same and a smaller `taskId`.
fn after_cursor(after: &Cursor) -> Vec<Document> {
    vec![
        doc! { "createdAt": { "$lt": after.created_at } },
        doc! { "createdAt": after.created_at, "taskId": { "$lt": after.task_id.as_str() } },
    ]
}

/// A hand-off `sweep` has not re-sent yet, or whose re-send could not be sent.
fn not_resent() -> Vec<Document> {
    vec![
        doc! { "handoff.redispatched": { "$exists": false } },
        doc! { "handoff.resend": true },
    ]
}

/// A page of `list`: its tasks and, when more follow, where the next page starts.
pub struct Page {
    /// At most the requested number of tasks, newest first, payloads left out.
    pub tasks: Vec<Task>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long: a serverless instance may be frozen
/// between invocations, and MongoDB's guidance for Vercel functions is `maxIdleTimeMS=5000`
/// so frozen instances do not pile up connections on the cluster.
const DEFAULT_MAX_IDLE_TIME: Duration = Duration::from_secs(5);
/// Connections per function instance: a request issues one or two commands in sequence, so a
/// few connections serve many concurrent requests, and instances x pool stays within Atlas's
/// connection limits (README, "Database connections at scale").
pub const DEFAULT_MAX_POOL_SIZE: u32 = 5;

tokio::task_local! {
    static COMMANDS: Cell<u32>;
}

/// Runs `work` while counting the MongoDB commands it issues (the driver's command
/// monitoring calls back inline, on the task that runs the operation).
pub async fn count_commands<F: Future>(work: F) -> (F::Output, u32) {
    COMMANDS
        .scope(Cell::new(0), async move {
            let output = work.await;
            (output, COMMANDS.with(Cell::get))
        })
        .await
}

/// The indexes of the `tasks` collection: `taskId` unique; a user's tasks newest first, with
/// and without a status filter, in exactly `list`'s sort order (so MongoDB serves a page from
/// the index without a blocking sort); and the sweeper's scan by status and age.
pub fn task_indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "taskId": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build(),
        IndexModel::builder()
            .keys(doc! { "userId": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "userId": 1, "status": 1, "createdAt": -1, "taskId": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "status": 1, "updatedAt": 1 })
            .build(),
    ]
}

/// The MongoDB store: the client is created on first use, once per process, and reused.
pub struct Store {
    uri: String,
    db_name: String,
    max_pool_size: u32,
    /// Longest a single database operation may take before the request answers 503.
    operation_timeout: Duration,
    database: OnceCell<Database>,
    indexes: OnceCell<()>,
    key_indexes: OnceCell<()>,
}

impl Store {
    /// Remembers where the database is without contacting it: the first operation connects
    /// (so a DNS failure resolving `mongodb+srv` at cold start is a 503, not a dead process).
    pub fn new(config: &Config) -> Self {
        Self {
            uri: config.mongodb_uri().to_owned(),
            db_name: config.mongodb_db.clone(),
            max_pool_size: config.db_max_pool_size,
            operation_timeout: config.db_operation_timeout,
            database: OnceCell::new(),
            indexes: OnceCell::new(),
            key_indexes: OnceCell::new(),
        }
    }

    /// The database handle, created on first use; a failure is retried by the next call.
    async fn database(&self) -> Result<&Database> {
        self.database
            .get_or_try_init(|| async {
                let options = tokio::time::timeout(self.operation_timeout, self.client_options())
                    .await
                    .map_err(|_| {
                        tracing::warn!("resolving MONGODB_URI timed out");
                        JobsError::DbUnavailable
                    })?
                    .map_err(|error| match error {
                        // Not a passing outage: the connection string itself is wrong.
                        JobsError::Internal(detail) => {
                            tracing::error!(detail, "MONGODB_URI cannot be used");
                            JobsError::Misconfigured(
                                "The service is misconfigured: MONGODB_URI is not a valid connection string".into(),
                            )
                        }
                        other => other,
                    })?;
                let client = Client::with_options(options)?;
                Ok::<_, JobsError>(client.database(&self.db_name))
            })
            .await
    }

    async fn client_options(&self) -> Result<ClientOptions> {
        let mut options = ClientOptions::parse(&self.uri).await?;
        // An unreachable database must be a prompt 503, not a 30 s hang.
        options
            .server_selection_timeout
            .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        options
            .connect_timeout
            .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        options.max_idle_time.get_or_insert(DEFAULT_MAX_IDLE_TIME);
        options.max_pool_size.get_or_insert(self.max_pool_size);
        options.app_name.get_or_insert_with(|| "jobs".into());
        // An acknowledged write must survive a database crash: a task answered 201 and then
        // lost would break the promise that nothing is lost. The URI may ask for another.
        options.write_concern.get_or_insert_with(|| {
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build()
        });
        options.command_event_handler = Some(EventHandler::callback(|event| {
            if let CommandEvent::Started(_) = event {
                let _ = COMMANDS.try_with(|n| n.set(n.get() + 1));
            }
        }));
        Ok(options)
    }

    /// The `tasks` collection.
    pub(crate) async fn tasks(&self) -> Result<Collection<Task>> {
        Ok(self.database().await?.collection("tasks"))
    }

    /// Runs one database operation within the operation timeout (the Rust driver has no
    /// `timeoutMS`): a hung primary is a 503 `DB_UNAVAILABLE`, not a request that never ends.
    pub(crate) async fn run<T>(
        &self,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.operation_timeout, operation.into_future()).await {
            Ok(outcome) => Ok(outcome?),
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.operation_timeout.as_millis() as u64,
                    "database operation timed out"
                );
                Err(JobsError::DbUnavailable)
            }
        }
    }

    /// Creates the indexes once per process, before the first insert.
    async fn ensure_indexes(&self) -> Result<()> {
        self.indexes
            .get_or_try_init(|| async {
                let tasks = self.tasks().await?;
                self.run(tasks.create_indexes(task_indexes())).await?;
                Ok::<_, JobsError>(())
            })
            .await
            .copied()
    }

    /// Stores a new task (creating the indexes first, once per process).
    pub async fn insert(&self, task: &Task) -> Result<()> {
        self.ensure_indexes().await?;
        self.run(self.tasks().await?.insert_one(task)).await?;
        Ok(())
    }

    /// A task by id, whoever owns it.
    pub async fn find(&self, task_id: &TaskId) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(tasks.find_one(doc! { "taskId": task_id.as_str() }))
            .await
    }

    /// A task of this user; another user's task is indistinguishable from a missing one.
    pub async fn find_owned(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(tasks.find_one(doc! { "taskId": task_id.as_str(), "userId": user_id.as_str() }))
            .await
    }

    /// One page of a user's tasks, newest first, in one `find` round trip: one task more than
    /// the page is read to know whether another page follows. Without `brandId` or
    /// `errorGroup` the filter is a prefix of an index and the sort its order; payloads and
    /// timelines are left out (`get` has them).
    pub async fn list_for(&self, user: &UserId, query: &ListQuery) -> Result<Page> {
        let mut filter = doc! { "userId": user.as_str() };
        if let Some(status) = query.status {
            filter.insert("status", status);
        }
        if let Some(brand) = &query.brand_id {
            filter.insert("brandId", brand.as_str());
        }
        if let Some(group) = &query.error_group {
            filter.insert("errorGroup", group.as_str());
        }
        if let Some(after) = &query.after {
            filter.insert("$or", after_cursor(after));
        }
        let tasks = self.tasks().await?;
        let find = tasks
            .find(filter)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .projection(doc! { "payload": 0, "events": 0 })
            .limit(query.limit + 1)
            .batch_size(query.limit as u32 + 1);
        let mut tasks: Vec<Task> = self.run(async { find.await?.try_collect().await }).await?;
        let next = (tasks.len() as i64 > query.limit).then(|| {
            tasks.truncate(query.limit as usize);
            let last = tasks.last().expect("a full page has a last task");
            Cursor {
                created_at: last.created_at,
                task_id: last.task_id.clone(),
            }
        });
        Ok(Page { tasks, next })
    }

    /// `processing` tasks whose lease expired before `now`: their worker is gone.
    pub async fn lost_workers(&self, now: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Processing, "lease.expiresAt": { "$lt": now } },
            limit,
        )
        .await
    }

    /// `queued` tasks handed off before `before` and not re-sent yet: their hand-off may
    /// have been lost (the function was killed before it, or the queue dropped it).
    pub async fn stale_handoffs(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Queued, "handoff.at": { "$lt": before },
            "$or": not_resent() },
            limit,
        )
        .await
    }

    /// `scheduled` tasks whose next attempt was due before `before` and not yet handed off
    /// by `sweep`: self-invocation cannot wait, so `sweep` sends them when due (and, through
    /// QStash, re-sends one whose delivery seems lost).
    pub async fn due_scheduled(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Scheduled, "handoff.at": { "$lt": before },
            "$or": not_resent() },
            limit,
        )
        .await
    }

    /// `queued` (or `scheduled`) tasks whose hand-off was re-sent before `before` and that are
    /// still unclaimed (and tasks queued before hand-offs were recorded, untouched since
    /// `before`): the re-send had its full chance too.
    pub async fn never_picked_up(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": { "$in": [TaskStatus::Queued, TaskStatus::Scheduled] }, "$or": [
                { "handoff.redispatched": { "$lt": before } },
                { "handoff": { "$exists": false }, "updatedAt": { "$lt": before } },
            ] },
            limit,
        )
        .await
    }

    /// Tasks by id, whoever owns them, in ONE `find` (bulk retry reads its candidates).
    pub async fn find_many(&self, task_ids: &[TaskId]) -> Result<Vec<Task>> {
        let ids: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        self.scan(doc! { "taskId": { "$in": ids } }, task_ids.len() as i64)
            .await
    }

    /// Up to `limit` of a user's `failed` tasks matching `filter`, newest first, after
    /// `after`: one page of a bulk retry by filter, in ONE `find` served by the
    /// `{userId, status, createdAt, taskId}` index.
    pub async fn failed_page(
        &self,
        user: &UserId,
        filter: &BulkFilter,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<Task>> {
        let mut query = doc! { "userId": user.as_str(), "status": TaskStatus::Failed };
        if let Some(kind) = &filter.kind {
            query.insert("type", kind.as_str());
        }
        if let Some(group) = &filter.error_group {
            query.insert("errorGroup", group.as_str());
        }
        if let Some(brand) = &filter.brand_id {
            query.insert("brandId", brand.as_str());
        }
        if let Some(after) = after {
            query.insert("$or", after_cursor(after));
        }
        let tasks = self.tasks().await?;
        let find = tasks
            .find(query)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .projection(doc! { "payload": 0, "events": 0 })
            .limit(limit);
        self.run(async { find.await?.try_collect().await }).await
    }

    /// Which of `handoffs` are now the current hand-off of their task: the tasks a bulk
    /// re-queue moved (ONE `find`, ids only).
    pub async fn requeued_with(&self, handoffs: &[(TaskId, Handoff)]) -> Result<Vec<TaskId>> {
        let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
        let dedup: Vec<&str> = handoffs.iter().map(|(_, h)| h.dedup_id.as_str()).collect();
        let tasks = self.database().await?.collection::<Document>("tasks");
        let find = tasks
            .find(doc! { "taskId": { "$in": ids }, "handoff.dedupId": { "$in": dedup } })
            .projection(doc! { "taskId": 1, "_id": 0 });
        let found: Vec<Document> = self.run(async { find.await?.try_collect().await }).await?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_str("taskId").ok())
            .filter_map(|id| TaskId::parse(id).ok())
            .collect())
    }

    /// The tasks that still carry one of `handoffs`, without payloads and timelines, in ONE
    /// `find`: how a bulk retry's undo left them.
    pub async fn carrying_tasks(&self, handoffs: &[(TaskId, Handoff)]) -> Result<Vec<Task>> {
        let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
        let dedup: Vec<&str> = handoffs.iter().map(|(_, h)| h.dedup_id.as_str()).collect();
        let tasks = self.tasks().await?;
        let find = tasks
            .find(doc! { "taskId": { "$in": ids }, "handoff.dedupId": { "$in": dedup } })
            .projection(doc! { "payload": 0, "events": 0 });
        self.run(async { find.await?.try_collect().await }).await
    }

    /// A user's failures grouped by cause, largest first, at most 50, in ONE aggregation.
    pub async fn error_groups(&self, user: &UserId, status: TaskStatus) -> Result<Vec<Document>> {
        let pipeline = error_groups_pipeline(user, status);
        let tasks = self.tasks().await?;
        let aggregate = tasks.aggregate(pipeline);
        self.run(async { aggregate.await?.try_collect().await })
            .await
    }

    /// Runs ONE `update` command with many statements (each its own filter and update), with
    /// the client's write concern. The Rust driver sends one statement per command; bulk
    /// retry needs many in one round trip.
    pub(crate) async fn update_many_statements(&self, statements: Vec<Document>) -> Result<u64> {
        if statements.is_empty() {
            return Ok(0);
        }
        let database = self.database().await?;
        let mut command = doc! { "update": "tasks", "updates": statements, "ordered": false };
        if let Some(concern) = database.write_concern() {
            let concern = mongodb::bson::to_document(concern).map_err(JobsError::internal)?;
            command.insert("writeConcern", concern);
        }
        let reply = self.run(database.run_command(command)).await?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            return Err(JobsError::internal(format!("bulk update: {errors:?}")));
        }
        // `run_command` hands back the raw reply: a missed write concern is only in it.
        if let Ok(concern) = reply.get_document("writeConcernError") {
            tracing::warn!(?concern, "bulk update did not meet its write concern");
            return Err(JobsError::DbUnavailable);
        }
        // `n`: how many statements matched.
        let matched = reply
            .get_i32("n")
            .map(i64::from)
            .or_else(|_| reply.get_i64("n"));
        Ok(matched.unwrap_or(0).max(0) as u64)
    }

    async fn scan(&self, filter: Document, limit: i64) -> Result<Vec<Task>> {
        let tasks = self.tasks().await?;
        let find = tasks.find(filter).limit(limit);
        self.run(async { find.await?.try_collect().await }).await
    }

    /// One `ping` round trip: is the database reachable?
    pub async fn ping(&self) -> Result<()> {
        let admin = self.database().await?.client().database("admin");
        self.run(admin.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }
}
