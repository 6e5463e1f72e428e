//! The floors: for each measured request, the cheapest direct way to get the same effect,
//! written here as plain MongoDB statements and issued with the same driver against the same
//! database by a client of its own ([`client`]). The runs compare them on the wire with what
//! the service sends (`check.rs`), so a drift between the two shows in the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use futures_util::TryStreamExt;
use jobs_core::task::Task;
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::event::{EventHandler, command::CommandEvent};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, Database};
use serde::de::DeserializeOwned;

use crate::calls::Call;
use crate::run::thousands;

/// The `appName` of the service's MongoDB client, and the floor's: the server's profiler
/// tells their commands apart by it.
pub const SERVICE_APP: &str = "jobs";
pub const FLOOR_APP: &str = "jobs-bench-floor";
/// A page of `list` in the Task Manager, and of a bulk retry (the service's `MAX_BULK`).
pub const PAGE: i64 = 20;
pub const BULK_PAGE: usize = 100;

/// MongoDB commands the floor's client has started (its command monitoring).
static COMMANDS: AtomicU64 = AtomicU64::new(0);

/// The floor's connection: the service's write concern (journaled, majority), its own
/// `appName`, and its commands counted.
pub async fn client(uri: &str) -> Result<Client> {
    let uri = format!("{uri}/?w=majority&journal=true&appName={FLOOR_APP}");
    let mut options = ClientOptions::parse(uri).await?;
    options.command_event_handler = Some(EventHandler::callback(|event| {
        if let CommandEvent::Started(_) = event {
            COMMANDS.fetch_add(1, Ordering::SeqCst);
        }
    }));
    Ok(Client::with_options(options)?)
}

/// Newest first, ties by `taskId`: the order of the `{userId, createdAt, taskId}` indexes.
pub fn newest_first() -> Document {
    doc! { "createdAt": -1, "taskId": -1 }
}

/// What a page of tasks leaves out: payloads and timelines.
pub fn page_projection() -> Document {
    doc! { "payload": 0, "events": 0 }
}

/// `list`: ONE `find` of the first page of `user`'s tasks, newest first, with the one task
/// more that tells whether another page follows, decoded as `T`. Whether the page was full.
pub async fn list<T>(tasks: &Collection<T>, user: &str) -> Result<Call>
where
    T: DeserializeOwned + Send + Sync,
{
    let started = Instant::now();
    let find = tasks.find(doc! { "userId": user }).sort(newest_first());
    let find = find.projection(page_projection()).limit(PAGE + 1);
    let page: Vec<T> = find
        .batch_size(PAGE as u32 + 1)
        .await?
        .try_collect()
        .await?;
    Ok(Call::since(started, page.len() >= PAGE as usize))
}

/// A retry of the failed task `task_id` of `user` by `by`, as one statement. The filter takes
/// the owner's task only while it is `failed` with retries left (`retriesLeft > 0`).
/// The update queues it again (progress, error, result and end cleared, one retry more, a
/// fresh automatic-retry budget), records its new hand-off (a fresh deduplication id, returned
/// too) and appends a `retried` event by `by` to its timeline, keeping the newest 50.
pub fn requeue(task_id: &str, user: &str, by: &str) -> (Document, Document, String) {
    let now = DateTime::now();
    let dedup = format!("{task_id}-{}", uuid::Uuid::now_v7().simple());
    let filter = doc! {
        "taskId": task_id, "userId": user, "status": "failed",
        "retriesLeft": { "$gt": 0 },
    };
    let update = doc! {
        "$set": { "status": "queued", "progress": 0, "lastError": Bson::Null,
                  "result": Bson::Null, "finishedAt": Bson::Null, "updatedAt": now,
                  "handoff": { "at": now, "dedupId": &dedup, "retry": true },
                  "autoRetries": 0, "nextAttemptAt": Bson::Null },
        "$inc": { "retryCount": 1, "retriesLeft": -1 },
        "$push": { "events": {
            "$each": [{ "at": now, "kind": "retried", "by": by }], "$slice": -50,
        } },
    };
    (filter, update, dedup)
}

/// `retry`: [`requeue`] by the owner as ONE `findAndModify` that hands back the task as it
/// was, decoded as `T`. Whether it was retried.
pub async fn retry<T>(tasks: &Collection<T>, task_id: &str, user: &str) -> Result<Call>
where
    T: DeserializeOwned + Send + Sync,
{
    let started = Instant::now();
    let (filter, update, _) = requeue(task_id, user, &format!("user:{user}"));
    let find = tasks.find_one_and_update(filter, update);
    let before = find.return_document(ReturnDocument::Before).await?;
    Ok(Call::since(started, before.is_some()))
}

/// Where a page of a bulk retry ended: its last task's `createdAt` and `taskId`.
pub type Cursor = (DateTime, String);

/// `retryMany` by `{errorGroup}`, one page: ONE `find` of `user`'s failed tasks of `group`
/// after `after` (newest first, one more to know whether another page follows), ONE `update`
/// command of a [`requeue`] statement for each with retries left, with the client's write
/// concern, and ONE `find` of the tasks that now carry the new hand-offs (the ones moved).
pub async fn bulk_page(
    db: &Database,
    user: &str,
    group: &str,
    after: Option<Cursor>,
) -> Result<(Call, Option<Cursor>)> {
    let concern = db.write_concern().context("the floor's write concern")?;
    let concern = bson::to_document(concern)?;
    let (started, commands_before) = (Instant::now(), COMMANDS.load(Ordering::SeqCst));
    let mut filter = doc! { "userId": user, "status": "failed", "errorGroup": group };
    if let Some((created, id)) = after {
        let older = doc! { "createdAt": { "$lt": created } };
        let tie = doc! { "createdAt": created, "taskId": { "$lt": id } };
        filter.insert("$or", vec![older, tie]);
    }
    let tasks = db.collection::<Task>("tasks");
    let find = tasks
        .find(filter)
        .sort(newest_first())
        .projection(page_projection());
    let mut page: Vec<Task> = find
        .limit(BULK_PAGE as i64 + 1)
        .await?
        .try_collect()
        .await?;
    let next = (page.len() > BULK_PAGE).then(|| {
        page.truncate(BULK_PAGE);
        let last = page.last().expect("a full page");
        (last.created_at, last.task_id.to_string())
    });
    let by = format!("bulk:{user}");
    let (mut ids, mut dedups, mut statements) = (Vec::new(), Vec::new(), Vec::new());
    for task in page.iter().filter(|t| t.retry_count < t.max_retries) {
        let (q, u, dedup) = requeue(task.task_id.as_str(), user, &by);
        statements.push(doc! { "q": q, "u": u, "multi": false });
        ids.push(task.task_id.to_string());
        dedups.push(dedup);
    }
    let mut moved = 0;
    if !statements.is_empty() {
        let mut update = doc! { "update": "tasks", "updates": statements, "ordered": false };
        update.insert("writeConcern", concern);
        let reply = db.run_command(update).await?;
        let failed = reply.contains_key("writeErrors") || reply.contains_key("writeConcernError");
        ensure!(!failed, "the floor's update failed: {reply}");
        let carrying = doc! { "taskId": { "$in": &ids }, "handoff.dedupId": { "$in": dedups } };
        let raw = db.collection::<Document>("tasks");
        let find = raw.find(carrying);
        let found = find.projection(doc! { "taskId": 1, "_id": 0 }).await?;
        moved = found.try_collect::<Vec<_>>().await?.len();
    }
    let mut call = Call::since(started, true);
    call.commands = Some(COMMANDS.load(Ordering::SeqCst) - commands_before);
    (call.retried, call.skipped) = (moved, page.len() - moved);
    Ok((call, next))
}

/// `groups`: `user`'s failed tasks grouped by cause (`errorGroup`), each group with its
/// template, size, latest failure and newest example, largest groups first, at most 50.
pub fn groups_pipeline(user: &str) -> Vec<Document> {
    vec![
        doc! { "$match": {
            "userId": user, "status": "failed", "errorGroup": { "$type": "string" },
        } },
        doc! { "$sort": { "updatedAt": -1 } },
        doc! { "$group": {
            "_id": "$errorGroup", "template": { "$first": "$errorTemplate" },
            "count": { "$sum": 1 }, "lastAt": { "$max": "$updatedAt" },
            "exampleTaskId": { "$first": "$taskId" },
        } },
        doc! { "$sort": { "count": -1, "lastAt": -1 } },
        doc! { "$limit": 50 },
    ]
}

/// ONE aggregation of [`groups_pipeline`]; it found the groups and their sizes.
pub async fn groups(tasks: &Collection<Task>, user: &str) -> Result<Call> {
    let started = Instant::now();
    let found: Vec<Document> = tasks
        .aggregate(groups_pipeline(user))
        .await?
        .try_collect()
        .await?;
    let mut call = Call::since(started, true);
    let count = |g: &Document| {
        g.get_i32("count")
            .map(i64::from)
            .or_else(|_| g.get_i64("count"))
    };
    let found = found
        .iter()
        .map(|g| (g.get_str("_id").unwrap_or_default(), count(g)));
    call.found = Some(groups_found(found.map(|(g, n)| (g, n.unwrap_or(-1)))));
    Ok(call)
}

/// Groups as `` `group` count, … ``, as both sides report what they found.
pub fn groups_found<'a>(groups: impl Iterator<Item = (&'a str, i64)>) -> String {
    let shown = groups.map(|(g, n)| format!("`{g}` {}", thousands(n.max(0) as usize)));
    shown.collect::<Vec<_>>().join(", ")
}
