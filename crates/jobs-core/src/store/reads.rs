//! What actions read from `tasks`, each read named after the question it answers.

use futures_util::TryStreamExt;
use mongodb::action::Action;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::Hint;

use super::{PRIMARY, Store};
use crate::chart::{ChartEvent, Counted};
use crate::error::Result;
use crate::selection::{BulkFilter, Cursor, ListQuery, SCAN_WINDOW, Search};
use crate::task::{Handoff, Task, TaskId, TaskStatus, UserId};

/// The aggregation of `groups` (docs/spec.md §14): a user's tasks in `status` grouped by
/// `errorGroup`, largest groups first, at most 50, each with its newest task's template and id.
/// The `$match` is exactly a prefix of an index (`{userId, status, ...}`): a test on
/// `errorGroup` there (`$type`, `$ne: null`) makes secantusd-rs examine every document for it,
/// about five times slower, so tasks without a cause are grouped under `null` and that group
/// dropped after. The newest of a group is the `$max` of a document that starts with
/// `updatedAt` (ties: the greater `taskId`), so only the groups are sorted.
fn error_groups_pipeline(user: &UserId, status: TaskStatus) -> [Document; 6] {
    [
        doc! { "$match": { "userId": user.as_str(), "status": status } },
        doc! { "$group": {
            "_id": "$errorGroup",
            "count": { "$sum": 1 },
            "newest": { "$max": {
                "at": "$updatedAt", "taskId": "$taskId", "template": "$errorTemplate",
            } },
        } },
        doc! { "$match": { "_id": { "$ne": Bson::Null } } },
        doc! { "$sort": { "count": -1, "newest.at": -1 } },
        doc! { "$limit": 50 },
        doc! { "$project": { "count": 1, "template": "$newest.template",
        "lastAt": "$newest.at", "exampleTaskId": "$newest.taskId" } },
    ]
}

/// What a summary of a task leaves out (`list` and `watch`): its payload with its versions, its
/// timeline and its steps (`get` has them). `prefix` is `""` for a task, `"fullDocument."` for a
/// change event.
pub(crate) fn summary_projection(prefix: &str) -> Document {
    [
        "payload",
        "payloadHistory",
        "payloadBase",
        "events",
        "steps",
    ]
    .into_iter()
    .map(|field| (format!("{prefix}{field}"), Bson::Int32(0)))
    .collect()
}

/// Newest first, after `after`: `createdAt` older, or the same and a smaller `taskId`.
fn after_cursor(after: &Cursor) -> Vec<Document> {
    vec![
        doc! { "createdAt": { "$lt": after.created_at } },
        doc! { "createdAt": after.created_at, "taskId": { "$lt": after.task_id.as_str() } },
    ]
}

/// The tasks whose current hand-off is one of `handoffs`. Dedup ids are unique per hand-off,
/// so `$in` on both fields cannot pair one task's id with another's hand-off.
pub(crate) fn carrying(handoffs: &[(TaskId, Handoff)]) -> Document {
    let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
    let dedup: Vec<&str> = handoffs.iter().map(|(_, h)| h.dedup_id.as_str()).collect();
    doc! { "taskId": { "$in": ids }, "handoff.dedupId": { "$in": dedup } }
}

/// A search's conditions (docs/spec.md §19), added to `query`: the tag and the type, which an
/// index serves with the user, the creation window, and each payload field equal to its value
/// as text or as the number or boolean the text spells.
fn add_search(query: &mut Document, search: &Search) {
    if let Some(tag) = &search.tag {
        query.insert("tags", tag.as_str());
    }
    if let Some(kind) = &search.kind {
        query.insert("type", kind.as_str());
    }
    let mut created = Document::new();
    if let Some(after) = search.created_after {
        // `$gt` a millisecond before: the same tasks (BSON dates are whole milliseconds), and
        // secantusd-py's bounds on a descending index drop the boundary itself for `$gte`.
        let just_before = DateTime::from_millis(after.timestamp_millis() - 1);
        created.insert("$gt", just_before);
    }
    if let Some(before) = search.created_before {
        created.insert("$lt", before);
    }
    if !created.is_empty() {
        query.insert("createdAt", created);
    }
    for (field, value) in &search.fields {
        let mut equal = vec![Bson::String(value.clone())];
        if let Ok(n) = value.parse::<i64>() {
            equal.extend([Bson::Int64(n), Bson::Double(n as f64)]);
        } else if let Ok(x) = value.parse::<f64>().map(Bson::Double) {
            equal.push(x);
        }
        if let Ok(b) = value.parse::<bool>() {
            equal.push(Bson::Boolean(b));
        }
        query.insert(format!("payload.{field}"), doc! { "$in": equal });
    }
}

/// The equality fields of the `tasks` indexes a page can walk newest first, each between
/// `userId` and `createdAt, taskId` (`upkeep.rs` creates them), the most selective first; the
/// last, the user alone, serves any query.
const WALKS: [&[&str]; 5] = [
    &["status", "errorGroup"],
    &["tags"],
    &["type"],
    &["status"],
    &[],
];

/// How a search's page walks `tasks` (docs/spec.md §19): the index it is told to use (`hint`),
/// the conditions of the query that index serves, and whether that is all of them. When it is
/// not, the page is bounded by the [`SCAN_WINDOW`]-th task of the walk.
struct Walk {
    hint: Document,
    served: Document,
    exact: bool,
}

/// The walk of `query`: the user, the creation window and the cursor are served by every
/// index; of its equality conditions, the most selective index serves what it can.
fn walk(query: &Document) -> Walk {
    let everywhere = |key: &str| matches!(key, "userId" | "createdAt" | "$or");
    let equal: Vec<&str> = query
        .keys()
        .map(String::as_str)
        .filter(|key| !everywhere(key))
        .collect();
    let fields = WALKS
        .iter()
        .find(|fields| fields.iter().all(|field| equal.contains(field)))
        .expect("the user's own index serves any query");
    let mut hint = doc! { "userId": 1 };
    for field in *fields {
        hint.insert(*field, 1);
    }
    hint.insert("createdAt", -1);
    hint.insert("taskId", -1);
    let served = query
        .iter()
        .filter(|(key, _)| everywhere(key) || fields.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Walk {
        hint,
        served,
        exact: equal.len() == fields.len(),
    }
}

/// Narrows `query`'s `createdAt` range: `$gt` or `$lt` `at`, kept with the bounds already
/// there (the tighter wins). A plain range on `createdAt` is one every index walk can start or
/// stop at; the `$or`s of a cursor or a window beside it only break ties within a millisecond.
fn narrow_created(query: &mut Document, op: &str, at: DateTime) {
    let created = match query.get_document_mut("createdAt") {
        Ok(created) => created,
        Err(_) => {
            query.insert("createdAt", Document::new());
            query.get_document_mut("createdAt").expect("just inserted")
        }
    };
    let tighter = match (op, created.get_datetime(op)) {
        (_, Err(_)) => true,
        ("$gt", Ok(kept)) => at > *kept,
        (_, Ok(kept)) => at < *kept,
    };
    if tighter {
        created.insert(op, at);
    }
}

/// Before `after` in newest-first order, added to `query`: the `$or` that breaks ties, and the
/// plain range (at or before its millisecond, written as `$lt` the next one).
fn add_after(query: &mut Document, after: &Cursor) {
    query.insert("$or", after_cursor(after));
    let next_ms = DateTime::from_millis(after.created_at.timestamp_millis() + 1);
    narrow_created(query, "$lt", next_ms);
}

/// At or after `end` in newest-first order: the tasks up to and including it.
fn within(end: &Cursor) -> Document {
    doc! { "$or": [
        { "createdAt": { "$gt": end.created_at } },
        { "createdAt": end.created_at, "taskId": { "$gte": end.task_id.as_str() } },
    ] }
}

/// A user's `failed` tasks that `filter` selects (bulk retry by filter).
pub(crate) fn failed_selection(user: &UserId, filter: &BulkFilter) -> Document {
    let mut query = doc! { "userId": user.as_str(), "status": TaskStatus::Failed };
    if let Some(kind) = &filter.kind {
        query.insert("type", kind.as_str());
    }
    if let Some(group) = &filter.error_group {
        query.insert("errorGroup", group.as_str());
    }
    if let Some(brand) = &filter.brand_id {
        query.insert("brandId", brand.as_str());
    }
    add_search(&mut query, &filter.search);
    query
}

/// What a bulk re-queue did, read back ([`Store::requeued_with`]).
#[derive(Debug, Default, PartialEq)]
pub struct ReadBack {
    /// The tasks that carry the batch's hand-off.
    pub moved: Vec<TaskId>,
    /// Tasks not moved whose counts leave no retry.
    pub out_of_retries: Vec<TaskId>,
}

/// A page of `list`: its tasks and, when more follow, where the next page starts.
pub struct Page {
    /// At most the requested number of tasks, newest first, payloads left out.
    pub tasks: Vec<Task>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    /// The page ended at the search's window ([`SCAN_WINDOW`] tasks examined), not at its
    /// limit: `next` continues the search after the window.
    pub window_ended: bool,
}

/// Most events the chart counts (docs/spec.md §22): a day of a very busy user is cut there.
const CHART_EVENTS: usize = 20_000;
/// Most tasks the chart reads the events of (each keeps at most 50).
const CHART_TASKS: i64 = 5_000;

impl Store {
    /// The events of `user`'s last day the failure chart counts (docs/spec.md §22), newest
    /// tasks first, and whether the day held more (tasks past [`CHART_TASKS`], events past
    /// [`CHART_EVENTS`]): ONE aggregation over the tasks changed since `since` (the `{userId,
    /// updatedAt}` index) that have such an event since then, keeping those events: the
    /// failures (`failed`, `swept`, `deliveryFailed`), the retries (`retried`, `scheduled`) and
    /// the completions of tasks that were retried (recoveries). A task that only completed is
    /// not read beyond its index entry and match.
    pub async fn chart_events(
        &self,
        user: &UserId,
        since: DateTime,
    ) -> Result<(Vec<ChartEvent>, bool)> {
        let tasks = self.database().await?.collection::<Document>("tasks");
        let retried = doc! { "$or": [
            { "retryCount": { "$gt": 0 } }, { "autoRetries": { "$gt": 0 } },
        ] };
        let kinds = ["failed", "swept", "deliveryFailed", "retried", "scheduled"];
        let counted = doc! { "$or": [
            { "events.kind": { "$in": kinds.to_vec() } },
            { "events.kind": "completed", "$and": [retried.clone()] },
        ] };
        let day_of = |kind: Bson| doc! { "$elemMatch": { "at": { "$gte": since }, "kind": kind } };
        let has_counted = doc! { "$or": [
            { "events": day_of(doc! { "$in": kinds.to_vec() }.into()) },
            { "events": day_of("completed".into()), "$and": [retried] },
        ] };
        let pipeline = vec![
            doc! { "$match": { "userId": user.as_str(), "updatedAt": { "$gte": since },
            "$and": [has_counted] } },
            doc! { "$sort": { "updatedAt": -1 } },
            doc! { "$limit": CHART_TASKS },
            doc! { "$project": { "_id": 0, "taskId": 1, "retryCount": 1, "autoRetries": 1, "events.at": 1,
            "events.kind": 1, "events.message": 1, "events.errorGroup": 1 } },
            doc! { "$unwind": "$events" },
            doc! { "$match": { "events.at": { "$gte": since }, "$and": [counted] } },
            doc! { "$limit": CHART_EVENTS as i64 + 1 },
        ];
        let rows: Vec<Document> = self
            .run(async { tasks.aggregate(pipeline).await?.try_collect().await })
            .await?;
        // As many tasks as the limit: there may have been more.
        let tasks_read: std::collections::HashSet<&str> = rows
            .iter()
            .filter_map(|r| r.get_str("taskId").ok())
            .collect();
        let truncated = tasks_read.len() as i64 >= CHART_TASKS || rows.len() > CHART_EVENTS;
        let mut events = Vec::with_capacity(rows.len().min(CHART_EVENTS));
        for row in rows.into_iter().take(CHART_EVENTS) {
            let Ok(event) = row.get_document("events") else {
                continue;
            };
            let Ok(at) = event.get_datetime("at").copied() else {
                continue;
            };
            let kind = match event.get_str("kind").unwrap_or("") {
                "failed" | "swept" | "deliveryFailed" => Counted::Failure {
                    group: event.get_str("errorGroup").ok().map(str::to_owned),
                    message: event.get_str("message").unwrap_or("").to_owned(),
                },
                "scheduled" | "retried" => Counted::Retry,
                "completed" => Counted::Recovery,
                _ => continue,
            };
            events.push(ChartEvent { at, kind });
        }
        Ok((events, truncated))
    }

    /// A task by id, whoever owns it.
    pub async fn find(&self, task_id: &TaskId) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(tasks.find_one(doc! { "taskId": task_id.as_str() }))
            .await
    }

    /// A task of this user; another user's task is indistinguishable from a missing one.
    pub async fn find_owned(&self, task_id: &TaskId, user_id: &UserId) -> Result<Option<Task>> {
        let tasks = self.tasks().await?;
        self.run(tasks.find_one(doc! { "taskId": task_id.as_str(), "userId": user_id.as_str() }))
            .await
    }

    /// One page of a user's tasks, newest first, in one `find` round trip: one task more than
    /// the page is read to know whether another page follows. Without `brandId` or
    /// `errorGroup` the filter is a prefix of an index and the sort its order; payloads and
    /// timelines are left out (`get` has them).
    pub async fn list_for(&self, user: &UserId, query: &ListQuery) -> Result<Page> {
        let mut filter = doc! { "userId": user.as_str() };
        if let Some(status) = query.status {
            filter.insert("status", status);
        }
        if let Some(brand) = &query.brand_id {
            filter.insert("brandId", brand.as_str());
        }
        if let Some(group) = &query.error_group {
            filter.insert("errorGroup", group.as_str());
        }
        add_search(&mut filter, &query.search);
        if let Some(after) = &query.after {
            add_after(&mut filter, after);
        }
        let (hint, window) = self.bounded(&mut filter).await?;
        let tasks = self.tasks().await?;
        let find = tasks
            .find(filter)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .optional(hint, |find, hint| find.hint(Hint::Keys(hint)))
            .projection(summary_projection(""))
            .limit(query.limit + 1)
            .batch_size(query.limit as u32 + 1);
        let mut tasks: Vec<Task> = self.run(async { find.await?.try_collect().await }).await?;
        let next = (tasks.len() as i64 > query.limit).then(|| {
            tasks.truncate(query.limit as usize);
            let last = tasks.last().expect("a full page has a last task");
            Cursor {
                created_at: last.created_at,
                task_id: last.task_id.clone(),
            }
        });
        let window_ended = next.is_none() && window.is_some();
        Ok(Page {
            next: next.or(window),
            tasks,
            window_ended,
        })
    }

    /// A page's bound (docs/spec.md §19), added to `query`: when no one index serves every
    /// condition, the page walks the index that serves the most of it (a hint) and stops at the
    /// [`SCAN_WINDOW`]-th task of that walk. The index to hint (`None` when one index serves it
    /// all: the planner then takes that one, and a hint only costs, as on secantusd-py), and
    /// where the walk stops (`None` too when fewer tasks are in the walk).
    async fn bounded(&self, query: &mut Document) -> Result<(Option<Document>, Option<Cursor>)> {
        let walk = walk(query);
        if walk.exact {
            return Ok((None, None));
        }
        // The hinted index must exist: a process that has not inserted yet (a rolling deploy
        // that added it) creates the indexes first, once.
        self.ensure_indexes().await?;
        let window = self.window_end(&walk).await?;
        if let Some(end) = &window {
            query.insert("$and", vec![within(end)]);
            // At or after its millisecond, written as `$gt` the one before (secantusd-py's
            // bounds on a descending index drop the boundary itself for `$gte`).
            let ms_before = DateTime::from_millis(end.created_at.timestamp_millis() - 1);
            narrow_created(query, "$gt", ms_before);
        }
        Ok((Some(walk.hint), window))
    }

    /// Where a walk stops this page: its [`SCAN_WINDOW`]-th task, newest first (ONE `find` that
    /// skips, on the walk's index); `None` when fewer are in the walk.
    async fn window_end(&self, walk: &Walk) -> Result<Option<Cursor>> {
        let tasks = self.database().await?.collection::<Document>("tasks");
        let find = tasks
            .find(walk.served.clone())
            .hint(Hint::Keys(walk.hint.clone()))
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .projection(doc! { "_id": 0, "createdAt": 1, "taskId": 1 })
            .skip((SCAN_WINDOW - 1) as u64)
            .limit(1);
        let found = self
            .run(async { find.await?.try_collect::<Vec<_>>().await })
            .await?;
        Ok(found.first().and_then(|end| {
            Some(Cursor {
                created_at: end.get_datetime("createdAt").ok().copied()?,
                task_id: TaskId::parse(end.get_str("taskId").ok()?.to_owned()).ok()?,
            })
        }))
    }

    /// Tasks by id, whoever owns them, in ONE `find` (bulk retry reads its candidates).
    pub async fn find_many(&self, task_ids: &[TaskId]) -> Result<Vec<Task>> {
        let ids: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        self.scan(doc! { "taskId": { "$in": ids } }, task_ids.len() as i64)
            .await
    }

    /// Up to `limit` of a user's `failed` tasks matching `filter`, newest first, after
    /// `after`, without payloads, timelines and error histories: one page of a bulk retry by
    /// filter, in ONE `find` served by the `{userId, status, errorGroup, createdAt, taskId}`
    /// index (by group) or the `{userId, status, createdAt, taskId}` one.
    pub async fn failed_page(
        &self,
        user: &UserId,
        filter: &BulkFilter,
        (after, limit): (Option<&Cursor>, i64),
        with_payload: bool,
    ) -> Result<(Vec<Task>, Option<Cursor>)> {
        let mut query = failed_selection(user, filter);
        if let Some(after) = after {
            add_after(&mut query, after);
        }
        let (hint, window) = self.bounded(&mut query).await?;
        let tasks = self.tasks().await?;
        let find = tasks
            .find(query)
            .sort(doc! { "createdAt": -1, "taskId": -1 })
            .optional(hint, |find, hint| find.hint(Hint::Keys(hint)))
            .projection(match with_payload {
                // A correction (docs/spec.md §17) reads each payload and its versions.
                true => doc! { "events": 0, "errorHistory": 0, "steps": 0 },
                false => doc! { "payload": 0, "payloadHistory": 0, "payloadBase": 0, "events": 0,
                "errorHistory": 0, "steps": 0 },
            })
            .limit(limit)
            .batch_size(limit as u32);
        let page = self.run(async { find.await?.try_collect().await }).await?;
        Ok((page, window))
    }

    /// What a bulk re-queue did with `handoffs`' tasks, in ONE `find` of four fields a task:
    /// the tasks that now carry their hand-off (moved), and among the others those whose counts
    /// leave no retry (the re-queue matched them on a stale `retriesLeft` and left them as
    /// they were).
    pub async fn requeued_with(&self, handoffs: &[(TaskId, Handoff)]) -> Result<ReadBack> {
        let tasks = self.database().await?.collection::<Document>("tasks");
        let ids: Vec<&str> = handoffs.iter().map(|(id, _)| id.as_str()).collect();
        let projection =
            doc! { "_id": 0, "taskId": 1, "handoff.dedupId": 1, "retryCount": 1, "maxRetries": 1 };
        let find = tasks
            .find(doc! { "taskId": { "$in": ids } })
            .projection(projection)
            .limit(handoffs.len() as i64)
            .batch_size(handoffs.len().max(1) as u32);
        let found: Vec<Document> = self.run(async { find.await?.try_collect().await }).await?;
        let mut read_back = ReadBack::default();
        for task in &found {
            let Some(id) = task
                .get_str("taskId")
                .ok()
                .and_then(|id| TaskId::parse(id).ok())
            else {
                continue;
            };
            let carries = task
                .get_document("handoff")
                .and_then(|h| h.get_str("dedupId"));
            let ours = handoffs
                .iter()
                .any(|(t, h)| *t == id && Ok(h.dedup_id.as_str()) == carries);
            // Any number type: a count another writer stored as Int64 or Double still counts.
            let count = |key| match task.get(key) {
                Some(Bson::Int32(n)) => Some(f64::from(*n)),
                Some(Bson::Int64(n)) => Some(*n as f64),
                Some(Bson::Double(n)) => Some(*n),
                _ => None,
            };
            if ours {
                read_back.moved.push(id);
            } else if count("retryCount") >= count("maxRetries") {
                read_back.out_of_retries.push(id);
            }
        }
        Ok(read_back)
    }

    /// The tasks that still carry one of `handoffs`, without payloads and timelines, in ONE
    /// `find`: how a bulk retry's undo left them.
    pub async fn carrying_tasks(&self, handoffs: &[(TaskId, Handoff)]) -> Result<Vec<Task>> {
        let tasks = self.tasks().await?;
        let find = tasks
            .find(carrying(handoffs))
            .projection(doc! { "payload": 0, "payloadHistory": 0, "payloadBase": 0, "events": 0, "steps": 0 })
            .limit(handoffs.len() as i64)
            .batch_size(handoffs.len().max(1) as u32);
        self.run(async { find.await?.try_collect().await }).await
    }

    /// A user's failures grouped by cause, largest first, at most 50, in ONE aggregation.
    pub async fn error_groups(&self, user: &UserId, status: TaskStatus) -> Result<Vec<Document>> {
        let pipeline = error_groups_pipeline(user, status);
        let tasks = self.tasks().await?;
        let mut aggregate = tasks.aggregate(pipeline);
        if status == TaskStatus::Failed {
            // `failed_groups` pairs it with a version read there.
            aggregate = aggregate.selection_criteria(PRIMARY);
        }
        self.run(async { aggregate.await?.try_collect().await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::{narrow_created, walk};

    /// A cursor's or window's plain range joins the search's own: the tighter bound of each
    /// kind wins, so the walk starts and stops in the index.
    #[test]
    fn created_ranges_keep_the_tighter_bound() {
        let at = mongodb::bson::DateTime::from_millis;
        let mut query = doc! { "userId": "u", "createdAt": { "$gt": at(100), "$lt": at(900) } };
        narrow_created(&mut query, "$lt", at(500));
        narrow_created(&mut query, "$gt", at(50));
        narrow_created(&mut query, "$gt", at(200));
        narrow_created(&mut query, "$lt", at(950));
        assert_eq!(
            query.get_document("createdAt").unwrap(),
            &doc! { "$gt": at(200), "$lt": at(500) }
        );
        let mut bare = doc! { "userId": "u" };
        narrow_created(&mut bare, "$lt", at(7));
        assert_eq!(bare, doc! { "userId": "u", "createdAt": { "$lt": at(7) } });
    }

    /// Which index a search page walks, and whether it serves the whole query.
    #[test]
    fn a_walk_takes_the_most_selective_index_that_serves_part_of_the_query() {
        let after = doc! { "$gt": mongodb::bson::DateTime::MIN };
        let cases = [
            (
                doc! { "userId": "u", "tags": "t" },
                doc! { "tags": 1 },
                true,
            ),
            (doc! { "userId": "u", "createdAt": after }, doc! {}, true),
            (
                doc! { "userId": "u", "status": "failed", "type": "x" },
                doc! { "type": 1 },
                false,
            ),
            (
                doc! { "userId": "u", "status": "failed", "tags": "t" },
                doc! { "tags": 1 },
                false,
            ),
            (
                doc! { "userId": "u", "status": "failed", "errorGroup": "g", "tags": "t" },
                doc! { "status": 1, "errorGroup": 1 },
                false,
            ),
            (
                doc! { "userId": "u", "status": "failed" },
                doc! { "status": 1 },
                true,
            ),
            (doc! { "userId": "u", "payload.b": "x" }, doc! {}, false),
            (
                doc! { "userId": "u", "brandId": "b", "$or": [] },
                doc! {},
                false,
            ),
        ];
        for (query, fields, exact) in cases {
            let walked = walk(&query);
            let mut hint = doc! { "userId": 1 };
            hint.extend(fields);
            hint.extend(doc! { "createdAt": -1, "taskId": -1 });
            assert_eq!((walked.hint, walked.exact), (hint, exact), "{query}");
            let kept = |key: &str| walked.served.contains_key(key);
            assert!(
                kept("userId") && !kept("payload.b") && !kept("brandId"),
                "{query}"
            );
        }
    }
}
