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

    /// Runs ONE `update` command with many statements (each its own filter and update), with
    /// the client's write concern. The Rust driver sends one statement per command; bulk
    /// retry needs many in one round trip.
    async fn update_many_statements(&self, statements: Vec<Document>) -> Result<u64> {
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
}
