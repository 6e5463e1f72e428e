//! The floors: for each measured request, the cheapest direct way to get the same effect,
//! written here as plain MongoDB statements and issued with the same driver against the same
//! database by a client of its own ([`client`]). The runs compare them on the wire with what
//! the service sends (`check.rs`), so a drift between the two shows in the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use futures_util::{StreamExt, TryStreamExt};
// Messages per QStash batch request and requests in flight: the service's.
use jobs_core::dispatch::{QSTASH_BATCH, QSTASH_BATCHES_IN_FLIGHT as QSTASH_IN_FLIGHT};
use jobs_core::task::Task;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::event::{EventHandler, command::CommandEvent};
use mongodb::options::ClientOptions;
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
pub const BULK_PAGE: usize = 1000;

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

/// A retry of the failed task `task_id` of `user` by `by`, the plainest way: the filter takes
/// the owner's task only while it is `failed` with retries left (`retriesLeft > 0`, the
/// stored field); the update queues it again (progress, error, result and end cleared, one
/// retry more and one left fewer, a fresh automatic-retry budget), records its new hand-off (a
/// fresh deduplication id) and appends a `retried` event by `by`, keeping the newest 50.
pub fn requeue(task_id: &str, user: &str, by: &str) -> (Document, Document) {
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
    (filter, update)
}

/// `retry`: [`requeue`] by the owner as ONE `updateOne`. Whether it was retried.
pub async fn retry<T>(tasks: &Collection<T>, task_id: &str, user: &str) -> Result<Call>
where
    T: DeserializeOwned + Send + Sync,
{
    let started = Instant::now();
    let (filter, update) = requeue(task_id, user, &format!("user:{user}"));
    let updated = tasks.update_one(filter, update).await?;
    Ok(Call::since(started, updated.matched_count == 1))
}

/// `retryMany` of a whole error group, the cheapest direct way to the same effect: ONE
/// `updateMany` with the plainest filter that selects the same tasks (`user`'s failed tasks of
/// `group` with retries left) and the re-queue as an update pipeline (one batch hand-off, each
/// task's dedup id `<taskId>-<batch>`, the `retried` event); ONE `find` of the tasks it
/// stamped (`handoff.at` is this call's); and their hand-offs published to QStash at `sink`
/// in batches of 100, 10 in flight. All tasks at once: no pages.
pub async fn bulk_all(db: &Database, user: &str, group: &str, sink: &str) -> Result<Call> {
    let (started, commands_before) = (Instant::now(), COMMANDS.load(Ordering::SeqCst));
    let (now, batch) = (DateTime::now(), uuid::Uuid::now_v7().simple().to_string());
    let by = format!("bulk:{user}");
    let retried = doc! { "at": { "$literal": now }, "kind": "retried", "by": { "$literal": &by } };
    let requeue = vec![
        doc! { "$unset": "handoff" },
        doc! { "$set": {
            "status": "queued", "progress": 0, "lastError": Bson::Null, "result": Bson::Null,
            "finishedAt": Bson::Null, "updatedAt": { "$literal": now }, "autoRetries": 0,
            "nextAttemptAt": Bson::Null,
            "handoff": { "at": { "$literal": now }, "dedupId": { "$concat": ["$taskId", "-", &batch] },
                         "retry": true },
            "retryCount": { "$add": ["$retryCount", 1] },
            "retriesLeft": { "$subtract": ["$retriesLeft", 1] },
            "events": { "$slice": [
                { "$concatArrays": [{ "$ifNull": ["$events", []] }, [retried]] }, -50,
            ] },
        } },
    ];
    let tasks = db.collection::<Document>("tasks");
    tasks.update_many(bulk_filter(user, group), requeue).await?;
    let stamped =
        doc! { "userId": user, "status": "queued", "errorGroup": group, "handoff.at": now };
    let find = tasks
        .find(stamped)
        .projection(doc! { "_id": 0, "taskId": 1, "handoff.dedupId": 1 })
        .batch_size(u32::MAX / 2);
    let moved: Vec<Document> = find.await?.try_collect().await?;
    let process = format!("{sink}/api/jobs?action=process");
    let messages: Vec<serde_json::Value> = moved
        .iter()
        .map(|task| {
            let task_id = task.get_str("taskId").unwrap_or_default();
            let handoff = task.get_document("handoff");
            let dedup = handoff
                .and_then(|h| h.get_str("dedupId"))
                .unwrap_or_default();
            let body = serde_json::json!({ "taskId": task_id, "handoffId": dedup });
            serde_json::json!({
                "destination": process,
                "headers": { "Content-Type": "application/json",
                             "Upstash-Deduplication-Id": dedup },
                "body": body.to_string(),
            })
        })
        .collect();
    let http = reqwest::Client::new();
    let batch_url = format!("{sink}/v2/batch");
    let publishes = messages.chunks(QSTASH_BATCH).map(|chunk| {
        let request = http.post(&batch_url).bearer_auth("bench-token").json(chunk);
        async move { request.send().await?.error_for_status().map(|_| ()) }
    });
    let sent: Vec<Result<(), reqwest::Error>> = futures_util::stream::iter(publishes)
        .buffered(QSTASH_IN_FLIGHT)
        .collect()
        .await;
    sent.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut call = Call::since(started, true);
    call.commands = Some(COMMANDS.load(Ordering::SeqCst) - commands_before);
    call.retried = moved.len();
    Ok(call)
}

/// The floor's filter: `user`'s failed tasks of `group` with retries left.
pub fn bulk_filter(user: &str, group: &str) -> Document {
    doc! { "userId": user, "status": "failed", "errorGroup": group, "retriesLeft": { "$gt": 0 } }
}

/// `groups`: `user`'s failed tasks grouped by cause (`errorGroup`), each group with its size
/// and its newest failure (when, the template, the task), largest groups first, at most 50:
/// written plainly, the `$match` a prefix of an index, tasks without a cause grouped under
/// `null` and dropped, the newest as the `$max` of a document that starts with `updatedAt`.
pub fn groups_pipeline(user: &str) -> Vec<Document> {
    vec![
        doc! { "$match": { "userId": user, "status": "failed" } },
        doc! { "$group": {
            "_id": "$errorGroup", "count": { "$sum": 1 },
            "newest": { "$max": { "at": "$updatedAt", "taskId": "$taskId",
                                  "template": "$errorTemplate" } },
        } },
        doc! { "$match": { "_id": { "$ne": Bson::Null } } },
        doc! { "$sort": { "count": -1, "newest.at": -1 } },
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
