//! The MongoDB store: one client per process, reused across requests (serverless practice),
//! and the `tasks` collection. Its methods, grouped by what they do:
//! - here: the connection, the operation timeout, command counting, `ping`, and the
//!   multi-statement `update` command;
//! - `upkeep`: the indexes, created once per process, and the backfill of fields added since;
//! - `reads`: what actions read, each named after the question it answers;
//! - `scans`: what the sweep looks for;
//! - `idempotency`: create's idempotency keys, in their own collection;
//! - `changes`: the change stream of task summaries `watch` fans out;
//! - `metrics`: what `metrics` reports, read across every user;
//! - `alerts`: who sends an alert, counted and claimed in the `alerts` collection;
//! - `summary`: the answer of `groups` kept per user, and the version that every change of
//!   a user's `failed` tasks moves;
//! - every write of `tasks` is a transition (`crate::transitions`, one file per who makes
//!   them). `store/` itself never calls one on `self` (`tests/layers.rs` checks it).
//!
//! No module but these builds a filter.

mod alerts;
mod changes;
mod idempotency;
mod metrics;
mod reads;
mod scans;
mod summary;
mod upkeep;

use std::cell::Cell;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{
    Acknowledgment, ClientOptions, ReadPreference, SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Collection, Database};
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::{JobsError, Result};
use crate::task::Task;

pub use changes::{CHANGE_AWAIT, ChangesError, TaskChanges, task_of};
pub use idempotency::Admission;
pub use reads::{Page, ReadBack};
pub(crate) use reads::{carrying, failed_selection};
pub use summary::Summary;
pub use upkeep::{MIGRATION_BUDGET, MIGRATION_PASS, MIGRATION_SWEEP_BUDGET};

const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long: a serverless instance may be frozen
/// between invocations, and MongoDB's guidance for Vercel functions is `maxIdleTimeMS=5000`
/// so frozen instances do not pile up connections on the cluster.
const DEFAULT_MAX_IDLE_TIME: Duration = Duration::from_secs(5);
/// Connections per function instance: a request issues a few commands in sequence, so a
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

/// An integer field MongoDB may send as Int32 or Int64 (counts, `$inc`ed versions).
pub(crate) fn integer(document: &Document, key: &str) -> Option<i64> {
    match document.get(key)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Reads from the primary: for reads paired with one another (`summary`'s version and the
/// aggregation of `groups`), a lagging secondary could mix a new one with an old one.
pub(crate) const PRIMARY: SelectionCriteria =
    SelectionCriteria::ReadPreference(ReadPreference::Primary);

/// The MongoDB store: the client is created on first use, once per process, and reused.
pub struct Store {
    uri: String,
    db_name: String,
    max_pool_size: u32,
    /// Longest a single database operation may take before the request answers 503.
    operation_timeout: Duration,
    database: OnceCell<Database>,
    indexes: OnceCell<()>,
    /// Set once the `retriesLeft` migration has finished (`upkeep`).
    migrated: OnceCell<()>,
    key_indexes: OnceCell<()>,
    alert_indexes: OnceCell<()>,
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
            migrated: OnceCell::new(),
            key_indexes: OnceCell::new(),
            alert_indexes: OnceCell::new(),
        }
    }

    /// The longest one database operation may take (`JOBS_DB_TIMEOUT_MS`).
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// The database handle, created on first use; a failure is retried by the next call.
    pub(crate) async fn database(&self) -> Result<&Database> {
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
    /// `timeoutMS`): a hung primary is a 503 `DB_TIMEOUT`, not a request that never ends.
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
                Err(JobsError::DbTimeout(self.operation_timeout))
            }
        }
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
        // Unordered: the statements without an error applied. An error that may have applied
        // (bulk retry then reads back which moved and answers the others with it; the
        // migration's pass stops and the next one starts where it was).
        if let Ok(errors) = reply.get_array("writeErrors") {
            tracing::warn!(errors = errors.len(), detail = ?errors, "some statements of a bulk update failed");
            return Err(JobsError::DbUnavailable);
        }
        // `run_command` hands back the raw reply: a missed write concern is only in it.
        if let Ok(concern) = reply.get_document("writeConcernError") {
            tracing::warn!(?concern, "bulk update did not meet its write concern");
            return Err(JobsError::DbUnavailable);
        }
        // `n`: how many statements matched.
        Ok(integer(&reply, "n").unwrap_or(0).max(0) as u64)
    }

    /// One `ping` round trip: is the database reachable?
    pub async fn ping(&self) -> Result<()> {
        let admin = self.database().await?.client().database("admin");
        self.run(admin.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }
}
