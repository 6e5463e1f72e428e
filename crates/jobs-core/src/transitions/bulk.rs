//! The bulk retry's transitions (docs/spec.md §13): a page of tasks re-queued in ONE
//! `updateMany` that stamps one batch hand-off, and the failed hand-offs of that batch put back
//! in ONE more.

use super::*;

/// The most statement bytes one `update` command of a group correction carries: well below
/// MongoDB's 16 MiB for a command, whatever the payloads.
pub const STATEMENTS_BYTES: usize = 8 * 1024 * 1024;
use crate::selection::BulkFilter;
use crate::store::{carrying, failed_selection};

impl Store {
    /// failed -> queued for many tasks of `user` at once (bulk retry, docs/spec.md §13): those
    /// of `task_ids` that are still in `selection`, `failed` and with `retriesLeft > 0`, in ONE
    /// `updateMany` served by the `taskId` index, each with `requeue_for_retry`'s effect (the
    /// same pipeline) and its hand-off in `batch` ([`Handoff::in_batch`]). Which tasks it moved is read back by their
    /// hand-offs ([`Store::requeued_with`]): a task raced by another retry matched nothing.
    /// Returns how many it moved.
    pub async fn requeue_many(
        &self,
        user: &UserId,
        selection: &BulkFilter,
        task_ids: &[TaskId],
        batch: &str,
        (at, from): (DateTime, Resume),
    ) -> Result<u64> {
        if task_ids.is_empty() {
            return Ok(0);
        }
        // `taskId` first: SecantusDB's Python server picks the index led by the first field.
        let ids: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        let mut filter = doc! { "taskId": { "$in": ids } };
        filter.extend(failed_selection(user, selection));
        filter.insert("retriesLeft", doc! { "$gt": 0 });
        // Each task's hand-off is `Handoff::in_batch(task, batch, at, true)`.
        let dedup_id = doc! { "$concat": ["$taskId", "-", { "$literal": batch }] };
        let pipeline = requeue_pipeline(at, dedup_id.into(), &format!("bulk:{user}"), (from, None));
        let tasks = self.tasks().await?;
        let outcome = self.run(tasks.update_many(filter, pipeline)).await;
        let outcome = outcome.map(|updated| updated.modified_count);
        let moved = self.noting_failed(user, outcome, |n| *n > 0).await?;
        tracing::info!(user = %user, batch, moved, transition = "requeue_many", "tasks re-queued in bulk");
        Ok(moved)
    }

    /// failed -> queued for many tasks of `user`, each with its own new payload version (a
    /// correction applied to a group, docs/spec.md §17): one statement per task, each
    /// `requeue_edited`'s guard (the counts and the payload version read, also for a task the
    /// correction leaves as it was) and effect, with its hand-off in `batch`, resuming `from`
    /// (when not given: the start for an edited task, the failed step for one left as it
    /// was). ONE `update` command per [`STATEMENTS_BYTES`] of statements (each carries its
    /// task's payloads). Returns how many moved; which ones is read back by their hand-offs, as
    /// for [`Store::requeue_many`].
    pub async fn requeue_edited_many(
        &self,
        user: &UserId,
        edits: &[(&Task, Option<Edit>)],
        batch: &str,
        (at, from): (DateTime, Option<Resume>),
    ) -> Result<u64> {
        if edits.is_empty() {
            return Ok(0);
        }
        let by = format!("bulk:{user}");
        let mut commands: Vec<Vec<Document>> = vec![Vec::new()];
        let mut bytes = 0;
        for (task, edit) in edits {
            let handoff = Handoff::in_batch(&task.task_id, batch, at, true);
            let dedup_id = doc! { "$literal": handoff.dedup_id }.into();
            let mut filter = requeue_filter(task, user);
            filter.insert("payloadVersion", version_read(task.payload_version));
            let from = from.unwrap_or(match edit {
                Some(_) => Resume::Start,
                None => Resume::FailedStep,
            });
            let update = requeue_pipeline(at, dedup_id, &by, (from, edit.as_ref()));
            let statement = doc! { "q": filter, "u": update, "multi": false };
            let size = bson::to_vec(&statement).map_or(0, |b| b.len());
            if bytes + size > STATEMENTS_BYTES && !commands.last().is_some_and(Vec::is_empty) {
                commands.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            commands
                .last_mut()
                .expect("one command at least")
                .push(statement);
        }
        let mut outcome = Ok(0);
        for statements in commands {
            outcome = match outcome {
                Ok(moved) => match self.update_many_statements(statements).await {
                    Ok(n) => Ok(moved + n),
                    // Earlier commands moved tasks: the caller must read back what moved (and
                    // hand those off), not answer as if nothing had.
                    Err(error) if moved > 0 && !error.may_have_applied() => {
                        tracing::warn!(%error, moved, "a later command of a group correction failed");
                        Err(JobsError::DbUnavailable)
                    }
                    Err(error) => Err(error),
                },
                error => error,
            };
        }
        let moved = self.noting_failed(user, outcome, |n| *n > 0).await?;
        tracing::info!(user = %user, batch, moved, transition = "requeue_edited_many", "tasks edited and re-queued in bulk");
        Ok(moved)
    }

    /// queued (just retried in bulk) -> failed, as `restore_after_failed_requeue` does, for
    /// `handoffs` (of one batch) that could not be sent: ONE `updateMany` fenced on those
    /// hand-offs. Returns how many were restored.
    pub async fn restore_many(&self, user: &UserId, handoffs: &[(TaskId, Handoff)]) -> Result<u64> {
        if handoffs.is_empty() {
            return Ok(0);
        }
        let mut filter = carrying(handoffs);
        filter.insert("status", TaskStatus::Queued);
        let tasks = self.tasks().await?;
        let update = restore_update(&format!("bulk:{user}"));
        let outcome = self.run(tasks.update_many(filter, update)).await;
        let outcome = outcome.map(|updated| updated.modified_count);
        let restored = self.noting_failed(user, outcome, |n| *n > 0).await?;
        tracing::info!(user = %user, restored, transition = "restore_many", "bulk re-queues undone");
        Ok(restored)
    }
}
