//! Bulk retry (docs/spec.md §13): up to [`MAX_BULK`](crate::requests::MAX_BULK) failed tasks
//! of one user retried in one call, each with the guard and effect of `retry`, in a number of
//! MongoDB commands that does not depend on theirs: read the candidates, re-queue them in ONE
//! `updateMany` that stamps one batch hand-off (then the note for `groups`), read back which
//! were ours (only when the update did not move every candidate), and undo the ones whose
//! hand-off failed (then the note again): 3 in the common case, at most 6. One more command
//! only for tasks an earlier version stored without a true `retriesLeft`, and one more read
//! only when an undo did not apply to every task.

use mongodb::bson::{DateTime, Document};
use serde_json::Value;

use crate::dispatch::Dispatcher;
use crate::error::{REQUEUE_FAILED_MESSAGE, Result};
use crate::failpoints::{At, hit};
use crate::processors::Processors;
use crate::replies::{DryRun, RetriedMany, Skipped};
use crate::requests::{BulkRetry, BulkSelection, checked_payload};
use crate::selection::{BulkFilter, Cursor};
use crate::steps::Resume;
use crate::store::{ReadBack, Store};
use crate::task::{Handoff, Task, TaskId, TaskStatus, UserId, document_to_json};
use crate::transitions::retry_refusal;
use crate::versions::Edit;

/// Retries the selected tasks of `user`, each with `call.patch` applied to its payload when
/// given (validated by its processor: a refusal skips the task), or says what it would do
/// (`dry_run`); see the module documentation for the cost.
pub async fn retry_many(
    (store, dispatcher, processors): (&Store, &Dispatcher, &Processors),
    user: &UserId,
    call: BulkRetry,
) -> Result<RetriedMany> {
    let BulkRetry {
        selection,
        from,
        patch,
        dry_run,
    } = call;
    let mut reply = RetriedMany::default();
    let (read, selected): (Vec<(TaskId, Option<Task>)>, BulkFilter) = match selection {
        BulkSelection::Ids(ids) => {
            let found = store.find_many(&ids).await?;
            let ordered = ids
                .into_iter()
                .map(|id| {
                    let task = found.iter().find(|t| t.task_id == id).cloned();
                    (id, task)
                })
                .collect();
            (ordered, BulkFilter::default())
        }
        BulkSelection::Filter(filter, after, limit) => {
            let with_payload = patch.is_some();
            let (mut page, window) = store
                .failed_page(
                    user,
                    &filter,
                    (after.as_ref(), limit as i64 + 1),
                    with_payload,
                )
                .await?;
            if page.len() > limit {
                page.truncate(limit);
                let last = page.last().expect("a full page has a last task");
                let next = Cursor {
                    created_at: last.created_at,
                    task_id: last.task_id.clone(),
                };
                reply.next_cursor = Some(next.encode());
            } else if let Some(end) = window {
                // A search on payload fields examined its window: the next call goes on after it.
                reply.next_cursor = Some(end.encode());
            }
            let read = page
                .into_iter()
                .map(|t| (t.task_id.clone(), Some(t)))
                .collect();
            (read, filter)
        }
    };
    let mut candidates: Vec<Task> = Vec::new();
    for (task_id, task) in read {
        match retry_refusal(task.as_ref(), user) {
            Some(refusal) => {
                let code = refusal.skip_code(task_id.clone());
                reply.skipped.push(Skipped::new(task_id, code));
            }
            None => candidates.extend(task),
        }
    }
    // With a patch, each task's own next version; a payload its processor refuses is skipped.
    let now = DateTime::now();
    let edits: Vec<Option<Edit>> = match &patch {
        None => candidates.iter().map(|_| None).collect(),
        Some(patch) => {
            let by = format!("bulk:{user}");
            let mut edits = Vec::new();
            let mut accepted = Vec::new();
            for task in candidates {
                let edit = patched(processors, &task, patch)
                    .map(|payload| Edit::of(&task, payload, &by, now))
                    .and_then(|edit| match edit.as_ref().and_then(Edit::refusal) {
                        Some(refused) => Err(refused),
                        None => Ok(edit),
                    });
                match edit {
                    Ok(edit) => {
                        edits.push(edit);
                        accepted.push(task);
                    }
                    Err(message) => reply.skipped.push(Skipped::refused(task.task_id, message)),
                }
            }
            candidates = accepted;
            edits
        }
    };
    if dry_run {
        let examples = candidates.iter().zip(&edits).filter_map(|(task, edit)| {
            let edit = edit.as_ref()?;
            let before = document_to_json(task.payload.clone());
            let changes = json_patch::diff(&before, &document_to_json(edit.payload.clone()));
            let changes = serde_json::to_value(changes).unwrap_or_default();
            let changes = crate::processors::redact_patch(&task.kind, changes);
            Some(serde_json::json!({ "taskId": task.task_id, "changes": changes }))
        });
        reply.dry_run = Some(DryRun {
            would_retry: candidates.len(),
            examples: examples.take(3).collect(),
        });
        return Ok(reply);
    }
    if candidates.is_empty() {
        return Ok(reply);
    }

    let batch = Handoff::new_batch();
    let requeued = match patch {
        // ONE `updateMany` of the ids, guarded by `retriesLeft`. A task an earlier version
        // stored (or re-queued) without a true `retriesLeft` would fail that guard whatever
        // its budget: set from its counts first (one more command, only then).
        None => {
            if candidates
                .iter()
                .any(|t| t.stored_retries_left != Some(t.retries_left()))
            {
                store.fill_retries_left(&candidates).await?;
            }
            let ids: Vec<TaskId> = candidates.iter().map(|t| t.task_id.clone()).collect();
            let from = from.unwrap_or(Resume::FailedStep);
            store
                .requeue_many(user, &selected, &ids, &batch, (now, from))
                .await
        }
        // One statement per task: each its own new payload, pinned on the counts and the
        // version read; after a correction the completed steps ran on the old input, so an
        // edited task starts over unless `from` says otherwise.
        Some(_) => {
            let edited: Vec<(&Task, Option<Edit>)> = candidates.iter().zip(edits).collect();
            store
                .requeue_edited_many(user, &edited, &batch, (now, from))
                .await
        }
    }
    .at("retry_many.requeued");
    let ids: Vec<TaskId> = candidates.into_iter().map(|t| t.task_id).collect();
    let handoffs: Vec<(TaskId, Handoff)> = ids
        .iter()
        .map(|id| (id.clone(), Handoff::in_batch(id, &batch, now, true)))
        .collect();
    // An error that may hide an applied update: the read-back below says what moved, and the
    // tasks it does not show are answered with that error, not as lost to a race (the update
    // may still apply after the read; `sweep` then sends them).
    let (unsure, all_moved) = match requeued {
        Ok(moved) => (None, moved as usize == ids.len()),
        Err(error) if error.may_have_applied() => (Some(error.code()), false),
        Err(error) => return Err(error),
    };
    // Every candidate moved (the update's own count says so): no read-back. Otherwise, a read
    // is safe to repeat: once more before giving up on knowing what moved.
    let mut read_back = match all_moved && hit("retry_many.read_back").is_none() {
        true => Ok(ReadBack {
            moved: ids.clone(),
            out_of_retries: Vec::new(),
        }),
        false => store
            .requeued_with(&handoffs)
            .await
            .at("retry_many.read_back"),
    };
    if read_back.is_err() {
        read_back = store.requeued_with(&handoffs).await;
    }
    let read_back = match read_back {
        Ok(read_back) => read_back,
        Err(error) => {
            // What moved is unknown: hand them all off rather than leave re-queued tasks with
            // nothing sent (a hand-off of a task that did not move claims nothing).
            dispatcher.dispatch_many(&handoffs).await;
            return Err(error);
        }
    };
    let (ours, raced): (Vec<_>, Vec<_>) = handoffs
        .into_iter()
        .partition(|(id, _)| read_back.moved.contains(id));
    // Not moved: another retry won the race (exactly as `retry` would answer), or the task's
    // stored `retriesLeft` was stale and its counts leave no retry.
    reply.skipped.extend(raced.into_iter().map(|(task_id, _)| {
        let spent = read_back.out_of_retries.contains(&task_id);
        let code = match spent {
            true => "MAX_RETRIES",
            false => unsure.unwrap_or("NOT_FAILED"),
        };
        Skipped::new(task_id, code)
    }));

    let mut sent = dispatcher.dispatch_many(&ours).await;
    if hit("retry_many.handed_off").is_some() {
        sent.fill(false); // sent, but the answers lost
    }
    let mut undo = Vec::new();
    for ((task_id, handoff), sent) in ours.into_iter().zip(sent) {
        match sent {
            true => reply.retried.push(task_id),
            false => undo.push((task_id, handoff)),
        }
    }
    // Undo the retries whose hand-off failed. A hand-off reported failed may have arrived
    // after all, and an undo may fail: what was not undone is read back (one more command,
    // only then) and answered as it stands, as `retry` does.
    let restored = match undo.is_empty() {
        true => Ok(0),
        false => store.restore_many(user, &undo).await,
    };
    let all_undone = matches!(restored, Ok(n) if n as usize == undo.len());
    let standing = match all_undone {
        true => Vec::new(),
        false => match store.carrying_tasks(&undo).await {
            Ok(tasks) => tasks,
            Err(_) => store.carrying_tasks(&undo).await?, // a read: once more
        },
    };
    for (task_id, _) in undo {
        let now = standing.iter().find(|t| t.task_id == task_id);
        // Undone: failed with the re-queue error. Gone from `standing` (a newer hand-off):
        // it ran since, so the retry took effect.
        let undone = match now {
            None => all_undone,
            Some(t) => {
                t.status == TaskStatus::Failed
                    && t.last_error.as_deref() == Some(REQUEUE_FAILED_MESSAGE)
            }
        };
        match now.map(|t| t.status) {
            _ if undone => reply.skipped.push(Skipped::new(task_id, "REQUEUE_FAILED")),
            Some(TaskStatus::Cancelled) => {
                reply.skipped.push(Skipped::new(task_id, "TASK_CANCELLED"))
            }
            // Still queued (the undo did not apply: `sweep` re-sends it), or claimed since.
            _ => reply.retried.push(task_id),
        }
    }
    tracing::info!(
        user = %user,
        retried = reply.retried.len(),
        skipped = reply.skipped.len(),
        more = reply.next_cursor.is_some(),
        "bulk retry"
    );
    Ok(reply)
}

/// `task`'s payload with `patch` (RFC 7396) applied, checked as `create` checks a payload and by
/// the task's processor; `Err` is the message a skipped task carries.
fn patched(
    processors: &Processors,
    task: &Task,
    patch: &Value,
) -> std::result::Result<Document, String> {
    let mut payload = document_to_json(task.payload.clone());
    json_patch::merge(&mut payload, patch);
    let Value::Object(object) = payload else {
        return Err("the patched payload is not a JSON object".into());
    };
    let (payload, stored) = checked_payload(object).map_err(|error| error.to_string())?;
    let processor = processors
        .get(&task.kind)
        .ok_or_else(|| format!("Unknown task type: {}", task.kind))?;
    processor.validate(&payload)?;
    Ok(stored)
}
