//! The change stream on `tasks` that `watch` fans out (docs/spec.md §18): inserts, updates and
//! replacements, each with the task as it is now (`updateLookup`) summarised as `list` shows it.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::error::ErrorKind;
use mongodb::options::FullDocumentType;

use super::PRIMARY;

use super::Store;
use super::reads::summary_projection;
use crate::error::JobsError;
use crate::task::{Task, UserId};

/// An open change stream of task summaries, each still a document: one that does not read as
/// a [`Task`] (written by a newer version, say) must not stop the stream ([`task_of`]).
pub type TaskChanges = ChangeStream<ChangeStreamEvent<Document>>;

/// The task a change carries, if it reads as one.
pub fn task_of(document: Document) -> Option<Task> {
    match mongodb::bson::from_document(document) {
        Ok(task) => Some(task),
        Err(error) => {
            tracing::warn!(%error, "a changed task does not read as a task; not sent");
            None
        }
    }
}

/// How long one `getMore` of an idle stream waits for a change before it answers empty (it
/// answers at once when one arrives): an idle stream costs one command per this period.
pub const CHANGE_AWAIT: Duration = Duration::from_secs(5);

/// Why a change stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// The position to resume from is unknown to the server: malformed, or older than what it
    /// keeps (the oplog moved past it). Changes since then cannot be replayed.
    #[error("the resume position is no longer available")]
    PositionLost,
    /// The server has no change streams (a standalone `mongod`, a proxy without them).
    #[error("the database has no change streams: {0}")]
    Unsupported(String),
    /// Anything else: the database is unreachable, slow, or refused for a passing reason.
    #[error(transparent)]
    Database(#[from] JobsError),
}

impl ChangesError {
    /// Sorts a driver error: server codes that mean "this position is gone" or "no change
    /// streams here"; anything else is a passing database error.
    fn of(error: mongodb::error::Error) -> Self {
        if let ErrorKind::Command(command) = error.kind.as_ref() {
            match command.code {
                // FailedToParse (a token it cannot read), CappedPositionLost,
                // ChangeStreamFatalError, ChangeStreamHistoryLost, and a token for another
                // collection or pipeline.
                9 | 136 | 280 | 286 | 40585 => return Self::PositionLost,
                // NotImplemented / CommandNotSupported, "only supported on replica sets",
                // "unrecognized pipeline stage".
                115 | 238 | 40573 | 40324 => {
                    return Self::Unsupported(command.message.clone());
                }
                _ => {}
            }
        }
        Self::Database(error.into())
    }
}

/// The pipeline of every task change stream: the three kinds of change that leave a task to
/// show, optionally one user's only, summarised. Deletions (the TTL's) carry no task and are
/// left out.
fn pipeline(user: Option<&UserId>) -> Vec<Document> {
    let mut filter = doc! { "operationType": { "$in": ["insert", "update", "replace"] } };
    if let Some(user) = user {
        filter.insert("fullDocument.userId", user.as_str());
    }
    let mut projection = summary_projection("fullDocument.");
    projection.insert("updateDescription", 0);
    vec![doc! { "$match": filter }, doc! { "$project": projection }]
}

impl Store {
    /// Opens a change stream of task summaries after `resume_after` (from now when `None`),
    /// of every user (`watch`'s one stream per instance) or of one (a reconnect catching up).
    /// Each of its `getMore`s waits up to `await_for` for a change ([`CHANGE_AWAIT`] for
    /// the process's stream).
    pub async fn task_changes(
        &self,
        resume_after: Option<ResumeToken>,
        user: Option<&UserId>,
        await_for: Duration,
    ) -> Result<TaskChanges, ChangesError> {
        let tasks = self.database().await?.collection::<Document>("tasks");
        let open = tasks
            .watch()
            // From the primary, as the writes: a lagging secondary could end a catch-up short
            // of where the process's stream stands.
            .selection_criteria(PRIMARY)
            .pipeline(pipeline(user))
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(await_for)
            .resume_after(resume_after);
        match self.run(async { Ok(open.await) }).await? {
            Ok(stream) => Ok(stream),
            Err(error) => Err(ChangesError::of(error)),
        }
    }

    /// The next change of `stream`, if one arrives within its await time (at most ONE
    /// `getMore`): `Ok(None)` when none did, and the stream's position has moved to now.
    pub async fn next_change(
        &self,
        stream: &mut TaskChanges,
    ) -> Result<Option<ChangeStreamEvent<Document>>, ChangesError> {
        let wait = CHANGE_AWAIT + self.operation_timeout;
        match tokio::time::timeout(wait, stream.next_if_any()).await {
            Ok(Ok(change)) => Ok(change),
            Ok(Err(error)) => Err(ChangesError::of(error)),
            Err(_) => Err(ChangesError::Database(JobsError::DbTimeout(wait))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::error::CommandError;

    fn command_error(code: i32) -> mongodb::error::Error {
        let command: CommandError =
            mongodb::bson::from_document(doc! { "code": code, "codeName": "X", "errmsg": "why" })
                .unwrap();
        mongodb::error::Error::from(ErrorKind::Command(command))
    }

    /// The server's answers to opening a stream, sorted as `watch` acts on them.
    #[test]
    fn open_errors_table() {
        let rows = [
            (286, "lost"),   // ChangeStreamHistoryLost: the oplog moved past it
            (9, "lost"),     // FailedToParse: not a token it can read
            (280, "lost"),   // ChangeStreamFatalError
            (40573, "none"), // only supported on replica sets
            (40324, "none"), // unrecognized pipeline stage
            (10107, "db"),   // NotWritablePrimary: passing
        ];
        for (code, expected) in rows {
            let sorted = match ChangesError::of(command_error(code)) {
                ChangesError::PositionLost => "lost",
                ChangesError::Unsupported(_) => "none",
                ChangesError::Database(_) => "db",
            };
            assert_eq!(sorted, expected, "code {code}");
        }
    }
}
