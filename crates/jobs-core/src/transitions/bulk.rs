//! The bulk retry's transitions (docs/spec.md §13): many tasks re-queued, or put back, in
//! ONE multi-statement `update` command.

use super::*;

/// One statement of a multi-statement `update` command.
fn statement(filter: Document, update: Document) -> Document {
    doc! { "q": filter, "u": update, "multi": false }
}

impl Store {
    /// failed -> queued for many tasks of one user at once (bulk retry, docs/spec.md §13): each
    /// with exactly `requeue_for_retry`'s guard and effect and its own hand-off, in ONE
    /// `update` command of many statements. Which tasks it moved is read back by their
    /// hand-offs ([`Store::requeued_with`]): a task raced by another retry matched nothing.
    pub async fn requeue_many(&self, user: &UserId, handoffs: &[(TaskId, Handoff)]) -> Result<()> {
        let by = format!("bulk:{user}");
        let statements = handoffs
            .iter()
            .map(|(task_id, handoff)| {
                statement(requeue_filter(task_id, user), requeue_update(handoff, &by))
            })
            .collect();
        self.update_many_statements(statements).await?;
        for (task_id, _) in handoffs {
            tracing::debug!(task_id = %task_id, transition = "requeue_many", "bulk re-queue sent");
        }
        Ok(())
    }

    /// queued (just retried in bulk) -> failed, as `restore_after_failed_requeue` does, for
    /// the retries of `user` whose hand-off failed: ONE `update` command, each statement
    /// fenced on its own hand-off. Returns how many were restored.
    pub async fn restore_many(&self, user: &UserId, handoffs: &[(TaskId, Handoff)]) -> Result<u64> {
        let by = format!("bulk:{user}");
        let statements = handoffs
            .iter()
            .map(|(task_id, handoff)| {
                statement(
                    handoff_fence(task_id, &handoff.dedup_id),
                    restore_update(&by),
                )
            })
            .collect();
        self.update_many_statements(statements).await
    }
}
