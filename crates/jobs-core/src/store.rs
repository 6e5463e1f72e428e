//! The MongoDB store: one client per process, reused across requests (serverless practice),
//! the `tasks` collection, its indexes, and every read, each named after the question it
//! answers. Status changes live in `transitions`; no other module builds a filter.

use std::cell::Cell;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::{JobsError, Result};
use crate::requests::{Cursor, ListQuery};
use crate::task::{Task, TaskId, TaskStatus, UserId};

/// A page of `list`: its tasks and, when more follow, where the next page starts.
pub struct Page {
    pub tasks: Vec<Task>,
    pub next: Option<Cursor>,
}

const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long: a serverless instance may be frozen
/// between invocations, and MongoDB's guidance for Vercel functions is `maxIdleTimeMS=5000`
/// so frozen instances do not pile up connections on the cluster.
const DEFAULT_MAX_IDLE_TIME: Duration = Duration::from_secs(5);

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

/// The indexes of the `tasks` collection: `taskId` unique, a user's tasks newest first, and
/// the sweeper's scan by status and age.
pub fn task_indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "taskId": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build(),
        IndexModel::builder()
            .keys(doc! { "userId": 1, "createdAt": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "status": 1, "updatedAt": 1 })
            .build(),
    ]
}

pub struct Store {
    client: Client,
    tasks: Collection<Task>,
    indexes: OnceCell<()>,
}

impl Store {
    /// Builds the client without contacting the server: the first request connects.
    pub async fn connect(config: &Config) -> Result<Self, mongodb::error::Error> {
        let mut options = ClientOptions::parse(config.mongodb_uri()).await?;
        // An unreachable database must be a prompt 503, not a 30 s hang.
        options
            .server_selection_timeout
            .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        options
            .connect_timeout
            .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        options.max_idle_time.get_or_insert(DEFAULT_MAX_IDLE_TIME);
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
        let client = Client::with_options(options)?;
        let tasks = client.database(&config.mongodb_db).collection("tasks");
        Ok(Self {
            client,
            tasks,
            indexes: OnceCell::new(),
        })
    }

    pub(crate) fn tasks(&self) -> &Collection<Task> {
        &self.tasks
    }

    /// Creates the indexes once per process, before the first insert.
    async fn ensure_indexes(&self) -> Result<()> {
        self.indexes
            .get_or_try_init(|| async {
                self.tasks.create_indexes(task_indexes()).await?;
                Ok::<_, JobsError>(())
            })
            .await
            .copied()
    }

    pub async fn insert(&self, task: &Task) -> Result<()> {
        self.ensure_indexes().await?;
        self.tasks.insert_one(task).await?;
        Ok(())
    }

    pub async fn find(&self, task_id: &TaskId) -> Result<Option<Task>> {
        Ok(self
            .tasks
            .find_one(doc! { "taskId": task_id.as_str() })
            .await?)
    }

    /// A task of this user; another user's task is indistinguishable from a missing one.
    pub async fn find_owned(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        Ok(self
            .tasks
            .find_one(doc! { "taskId": task_id.as_str(), "userId": user_id.as_str() })
            .await?)
    }

    /// One page of a user's tasks, newest first, in one `find` round trip: one task more than
    /// the page is read to know whether another page follows.
    pub async fn list_for(&self, user: &UserId, query: &ListQuery) -> Result<Page> {
        let mut filter = doc! { "userId": user.as_str() };
        if let Some(status) = query.status {
            filter.insert("status", status);
        }
        if let Some(brand) = &query.brand_id {
            filter.insert("brandId", brand.as_str());
        }
        if let Some(after) = &query.after {
            filter.insert(
                "$or",
                vec![
                    doc! { "createdAt": { "$lt": after.created_at } },
                    doc! { "createdAt": after.created_at, "taskId": { "$lt": after.task_id.as_str() } },
                ],
            );
        }
        let cursor = self
            .tasks
            .find(filter)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .limit(query.limit + 1)
            .batch_size(query.limit as u32 + 1)
            .await?;
        let mut tasks: Vec<Task> = cursor.try_collect().await?;
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

    /// `queued` tasks untouched since `before`: nothing picked them up.
    pub async fn unclaimed_since(&self, before: DateTime, limit: i64) -> Result<Vec<Task>> {
        self.scan(
            doc! { "status": TaskStatus::Queued, "updatedAt": { "$lt": before } },
            limit,
        )
        .await
    }

    async fn scan(&self, filter: Document, limit: i64) -> Result<Vec<Task>> {
        let cursor = self.tasks.find(filter).limit(limit).await?;
        Ok(cursor.try_collect().await?)
    }

    pub async fn ping(&self) -> Result<()> {
        self.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await?;
        Ok(())
    }
}
