//! The `idempotency_keys` collection (docs/spec.md §3): one record per user and key,
//! `{_id: "<userId>\0<key>", taskId, requestHash, at}`, reserved BEFORE the task is inserted.
//! The `_id` makes a key unique; a TTL index on `at` removes expired records, but the 24 h rule
//! is checked here, so it holds whether or not the TTL monitor has run.

use mongodb::bson::{DateTime, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{JobsError, Result, is_duplicate_key};
use crate::idempotency::{IdempotencyKey, KEY_LIFETIME};
use crate::task::{Handoff, Task, TaskId};

/// The collection's name.
const IDEMPOTENCY_KEYS: &str = "idempotency_keys";

/// The indexes of `idempotency_keys` besides the unique `_id`: a TTL index on `at`, so a record
/// is deleted once its key has expired.
fn idempotency_key_indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "at": 1 })
            .options(IndexOptions::builder().expire_after(KEY_LIFETIME).build())
            .build(),
    ]
}

/// A key's record: which task it answers and the fingerprint of the request that created it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRecord {
    /// `<userId>\0<key>` ([`IdempotencyKey::record_id`]).
    #[serde(rename = "_id")]
    id: String,
    /// The task the key answers; it may not be stored yet (its create is between the two
    /// inserts, or stopped there).
    task_id: TaskId,
    /// [`crate::idempotency::request_hash`] of the first request.
    request_hash: String,
    /// When the key was first used (or taken over after it expired).
    at: DateTime,
}

/// What `create` does with a keyed request.
pub enum Admission {
    /// Insert this task and hand it off: the key is new (or expired), or its task was never
    /// stored, in which case the task carries the key's task id.
    Create(Task),
    /// The key's task as stored now: answer it, create nothing.
    Replay(Task),
}

enum Reservation {
    /// The key now names the new task.
    Reserved,
    /// The key already names this task, for the same request.
    Taken(TaskId),
}

/// Attempts at reserving a key: each further one follows a concurrent change of the record
/// (deleted by the TTL monitor, or taken over by another create).
const RESERVE_ATTEMPTS: usize = 3;

impl Store {
    async fn idempotency_keys(&self) -> Result<Collection<KeyRecord>> {
        Ok(self.database().await?.collection(IDEMPOTENCY_KEYS))
    }

    /// Creates the key indexes once per process, before the first keyed create.
    async fn ensure_key_indexes(&self) -> Result<()> {
        self.key_indexes
            .get_or_try_init(|| async {
                let keys = self.idempotency_keys().await?;
                self.run(keys.create_indexes(idempotency_key_indexes()))
                    .await?;
                Ok::<_, JobsError>(())
            })
            .await
            .copied()
    }

    /// Admits `task`, created with `key` by its owner from a request whose fingerprint is
    /// `request_hash`: a new key is reserved for it; a key used within 24 h answers its first
    /// task, or 409 `IDEMPOTENCY_KEY_REUSED` when the request differs.
    pub async fn admit(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        task: Task,
    ) -> Result<Admission> {
        let id = key.record_id(&task.user_id);
        let first = match self.reserve_key(&id, request_hash, &task.task_id).await? {
            Reservation::Reserved => return Ok(Admission::Create(task)),
            Reservation::Taken(first) => first,
        };
        Ok(match self.find(&first).await? {
            Some(stored) => {
                tracing::info!(task_id = %stored.task_id, "idempotency key answered its first task");
                Admission::Replay(stored)
            }
            // The create that reserved the key has not inserted its task: it crashed between
            // the two inserts, or is just between them. Create the task under the key's id;
            // whichever insert comes second finds it stored (`insert_unless_stored`).
            None => Admission::Create(with_id(task, first)),
        })
    }

    /// Inserts the key record naming `task_id`; on a duplicate, reads the record and takes it
    /// over if it expired, refuses a different request, or answers the task it names.
    async fn reserve_key(
        &self,
        id: &str,
        request_hash: &str,
        task_id: &TaskId,
    ) -> Result<Reservation> {
        self.ensure_key_indexes().await?;
        let keys = self.idempotency_keys().await?;
        for _ in 0..RESERVE_ATTEMPTS {
            let now = DateTime::now();
            let record = KeyRecord {
                id: id.to_owned(),
                task_id: task_id.clone(),
                request_hash: request_hash.to_owned(),
                at: now,
            };
            match self
                .run(async { Ok(keys.insert_one(&record).await) })
                .await?
            {
                Ok(_) => return Ok(Reservation::Reserved),
                Err(error) if is_duplicate_key(&error) => {}
                Err(error) => return Err(error.into()),
            }
            let Some(held) = self.run(keys.find_one(doc! { "_id": id })).await? else {
                continue; // deleted by the TTL monitor meanwhile: insert again
            };
            let expired_before = now.timestamp_millis() - KEY_LIFETIME.as_millis() as i64;
            let expired = held.at.timestamp_millis() <= expired_before;
            // Another request under a key whose task was never stored (its create failed, or
            // crashed between the two inserts): nothing was created for the key, so it is free.
            let orphaned =
                held.request_hash != request_hash && self.find(&held.task_id).await?.is_none();
            if expired || orphaned {
                // Fenced on the `at` read: of two creates taking over the same key, one
                // matches; the other reads the record again and answers the winner's task.
                let take_over = doc! { "$set": {
                "taskId": task_id.as_str(), "requestHash": request_hash, "at": now } };
                let taken = self
                    .run(keys.update_one(doc! { "_id": id, "at": held.at }, take_over))
                    .await?;
                if taken.matched_count == 1 {
                    tracing::info!(task_id = %task_id, expired, "idempotency key taken over");
                    return Ok(Reservation::Reserved);
                }
                continue;
            }
            if held.request_hash != request_hash {
                return Err(JobsError::IdempotencyKeyReused);
            }
            return Ok(Reservation::Taken(held.task_id));
        }
        Err(JobsError::internal(
            "an idempotency key record kept changing while it was reserved",
        ))
    }
}

/// `task` under another id, with a hand-off of its own.
fn with_id(task: Task, task_id: TaskId) -> Task {
    Task {
        handoff: Some(Handoff::new(&task_id, task.created_at, false)),
        task_id,
        ..task
    }
}
