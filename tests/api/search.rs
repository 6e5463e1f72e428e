//! Search (docs/spec.md §19): tags set at `create`, and `list` and `retryMany`'s filter by
//! tag, type, creation window and top-level payload fields, over HTTP and SecantusDB.

use std::collections::BTreeSet;

use mongodb::bson::{DateTime, doc};
use serde_json::{Value, json};

use crate::support::{OwnDatabase, Service};

async fn create(jobs: &Service, user: &str, payload: Value, tags: Value) -> String {
    let reply = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": user, "payload": payload, "tags": tags }),
        )
        .await;
    assert_eq!(reply.status, 201, "create: {}", reply.body);
    reply.task_id()
}

/// The ids `list` answers for `query` (one page).
async fn found(jobs: &Service, user: &str, query: &str) -> BTreeSet<String> {
    let reply = jobs
        .get(&format!("action=list&userId={user}&limit=100&{query}"))
        .await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    ids(&reply.body["tasks"])
}

fn ids(tasks: &Value) -> BTreeSet<String> {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_owned())
        .collect()
}

fn set<const N: usize>(ids: [&String; N]) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

#[tokio::test]
async fn list_finds_tasks_by_tag_type_creation_window_and_payload_fields() {
    let jobs = Service::start().await;
    let quick = |extra: Value| {
        let mut payload = json!({ "steps": 1, "stepMs": 0 });
        payload
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        payload
    };
    let launch_b1 = create(
        &jobs,
        "ivy",
        quick(json!({ "brandId": "b1", "count": 3 })),
        json!(["launch", "q4"]),
    )
    .await;
    let launch_b2 = create(
        &jobs,
        "ivy",
        quick(json!({ "brandId": "b2", "count": 3 })),
        json!(["launch"]),
    )
    .await;
    let plain_b1 = create(
        &jobs,
        "ivy",
        quick(json!({ "brandId": "b1", "urgent": true })),
        json!([]),
    )
    .await;
    // Another user's task with the same tag and fields never shows.
    create(
        &jobs,
        "mallory",
        quick(json!({ "brandId": "b1" })),
        json!(["launch"]),
    )
    .await;

    let view = jobs.view(&launch_b1, "ivy").await;
    assert_eq!(view["tags"], json!(["launch", "q4"]));
    let listed = jobs.get("action=list&userId=ivy").await;
    assert!(
        listed.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["tags"].is_array())
    );

    let middle = jobs
        .task(&launch_b2)
        .await
        .get_datetime("createdAt")
        .unwrap()
        .try_to_rfc3339_string()
        .unwrap();
    let rows: Vec<(&str, BTreeSet<String>)> = vec![
        ("tag=launch", set([&launch_b1, &launch_b2])),
        ("tag=q4", set([&launch_b1])),
        ("tag=none", set([])),
        ("type=demo", set([&launch_b1, &launch_b2, &plain_b1])),
        ("type=webhook", set([])),
        ("payload.brandId=b1", set([&launch_b1, &plain_b1])),
        ("payload.count=3", set([&launch_b1, &launch_b2])),
        ("payload.urgent=true", set([&plain_b1])),
        ("tag=launch&payload.brandId=b1", set([&launch_b1])),
        (
            "tag=launch&payload.brandId=b1&payload.count=3",
            set([&launch_b1]),
        ),
        (
            &*Box::leak(format!("createdAfter={middle}").into_boxed_str()),
            set([&launch_b2, &plain_b1]),
        ),
        (
            &*Box::leak(format!("createdBefore={middle}").into_boxed_str()),
            set([&launch_b1]),
        ),
        (
            &*Box::leak(format!("createdAfter={middle}&tag=launch").into_boxed_str()),
            set([&launch_b2]),
        ),
    ];
    for (query, expected) in rows {
        let query = query.replace('+', "%2B");
        assert_eq!(found(&jobs, "ivy", &query).await, expected, "{query}");
    }
    // Each search is its own page: its own ETag.
    let a = jobs.get("action=list&userId=ivy&tag=launch").await;
    let b = jobs.get("action=list&userId=ivy&tag=q4").await;
    assert_ne!(a.header("etag"), b.header("etag"));
}

/// Bad search input: a clear 400, nothing created or changed.
#[tokio::test]
async fn bad_tags_and_searches_are_refused_with_a_clear_400() {
    let jobs = Service::start().await;
    let tags = [
        (json!("launch"), "invalid type"),
        (json!([1]), "invalid type"),
        (json!([""]), "a tag is 1 to 64 characters"),
        (json!(["x".repeat(65)]), "a tag is 1 to 64 characters"),
        (json!(["a\u{7}b"]), "without control characters"),
        (
            json!((0..11).map(|n| n.to_string()).collect::<Vec<_>>()),
            "tags holds at most 10 tags",
        ),
    ];
    for (tags, message) in tags {
        let reply = jobs
            .post(
                "create",
                json!({ "type": "demo", "userId": "jo", "payload": {}, "tags": tags }),
            )
            .await;
        assert_eq!(
            reply.refusal(),
            (400, Some("INVALID_BODY")),
            "{tags}: {}",
            reply.body
        );
        assert!(
            reply.body["error"].as_str().unwrap().contains(message),
            "{tags}: {}",
            reply.body
        );
    }
    assert_eq!(jobs.snapshot().await.len(), 0, "nothing was created");

    let searches = [
        (
            "payload.a=1&payload.b=2&payload.c=3&payload.d=4",
            "at most 3 payload conditions",
        ),
        ("payload.a.b=1", "one top-level payload field"),
        ("payload.%24where=1", "one top-level payload field"),
        ("payload.=1", "one top-level payload field"),
        (
            &*Box::leak(format!("payload.a={}", "v".repeat(257)).into_boxed_str()),
            "at most 256 characters",
        ),
        (
            "createdAfter=yesterday",
            "createdAfter must be an RFC 3339 time",
        ),
        (
            "createdBefore=2026-13-01T00:00:00Z",
            "createdBefore must be an RFC 3339 time",
        ),
        (
            "createdAfter=2026-12-02T00:00:00Z&createdBefore=2026-12-01T00:00:00Z",
            "createdAfter must be earlier than createdBefore",
        ),
        (
            &*Box::leak(format!("tag={}", "t".repeat(65)).into_boxed_str()),
            "a tag is 1 to 64 characters",
        ),
    ];
    for (query, message) in searches {
        let reply = jobs.get(&format!("action=list&userId=jo&{query}")).await;
        assert_eq!(
            reply.refusal(),
            (400, Some("INVALID_QUERY")),
            "{query}: {}",
            reply.body
        );
        assert!(
            reply.body["error"].as_str().unwrap().contains(message),
            "{query}: {}",
            reply.body
        );
    }
    let filters = [
        (
            json!({ "payload": { "a": { "$ne": 1 } } }),
            "filter.payload.a must be a string, number or boolean",
        ),
        (
            json!({ "payload": { "a": [1] } }),
            "filter.payload.a must be a string, number or boolean",
        ),
        (
            json!({ "payload": { "a.b": "1" } }),
            "one top-level payload field",
        ),
        (
            json!({ "tag": "" , "createdAfter": "soon" }),
            "filter.createdAfter must be an RFC 3339 time",
        ),
    ];
    for (filter, message) in filters {
        let reply = jobs
            .post("retryMany", json!({ "userId": "jo", "filter": filter }))
            .await;
        assert_eq!(
            reply.refusal(),
            (400, Some("INVALID_BODY")),
            "{filter}: {}",
            reply.body
        );
        assert!(
            reply.body["error"].as_str().unwrap().contains(message),
            "{filter}: {}",
            reply.body
        );
    }
}

/// A search on payload fields examines at most 5,000 tasks a page: a match older than that is
/// found by following `nextCursor`, never by an unbounded scan.
#[tokio::test]
async fn a_payload_search_examines_a_bounded_window_and_pages_on_from_it() {
    // 5,100 tasks and reads that examine 5,000 of them: on a server of its own, so the suite's
    // other tests neither wait for it nor slow it past the operation timeout.
    let db = OwnDatabase::start().await;
    let jobs = Service::start_with(&[("MONGODB_URI", &db.uri())]).await;
    let rare = create(
        &jobs,
        "kim",
        json!({ "steps": 1, "stepMs": 0, "brandId": "rare" }),
        json!(["old"]),
    )
    .await;
    jobs.wait_for_status(&rare, "completed").await;
    // 5,100 newer tasks, written directly (as many creates would): copies of a common one.
    let common = create(
        &jobs,
        "kim",
        json!({ "steps": 1, "stepMs": 0, "brandId": "common" }),
        json!(["bulk"]),
    )
    .await;
    jobs.wait_for_status(&common, "completed").await;
    let template = jobs.task(&common).await;
    let base = template
        .get_datetime("createdAt")
        .unwrap()
        .timestamp_millis();
    let copies: Vec<_> = (1..=5100)
        .map(|n| {
            let mut copy = template.clone();
            copy.remove("_id");
            copy.insert("taskId", format!("{common}-{n:05}"));
            copy.insert("createdAt", DateTime::from_millis(base + n));
            copy
        })
        .collect();
    jobs.tasks.insert_many(copies).await.unwrap();

    let first = jobs
        .get("action=list&userId=kim&payload.brandId=rare")
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body["tasks"],
        json!([]),
        "the newest 5,000 hold no match"
    );
    assert_eq!(first.body["windowEnded"], true);
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("the search goes on")
        .to_owned();
    let next = jobs
        .get(&format!(
            "action=list&userId=kim&payload.brandId=rare&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&next.body["tasks"]), set([&rare]), "{}", next.body);
    assert_eq!(next.body["nextCursor"], Value::Null);
    assert!(next.body.get("windowEnded").is_none());
    // Status and tag: no one index serves both, so the page walks the tag's and stops at the
    // 5,000th task of that walk too (not a scan of every completed or every tagged task).
    let mixed = jobs
        .get("action=list&userId=kim&status=failed&tag=bulk")
        .await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    assert_eq!(mixed.body["tasks"], json!([]));
    assert_eq!(mixed.body["windowEnded"], true);
    // The tag is indexed: no window.
    let tagged = jobs.get("action=list&userId=kim&tag=old").await;
    assert_eq!(ids(&tagged.body["tasks"]), set([&rare]));
    assert!(
        tagged.db_commands() <= 1,
        "one read: {}",
        tagged.db_commands()
    );
    assert!(
        first.db_commands() <= 2,
        "the window's end, then the page: {}",
        first.db_commands()
    );
    // The stored documents are intact.
    assert_eq!(
        jobs.tasks
            .count_documents(doc! { "userId": "kim" })
            .await
            .unwrap(),
        5102
    );
}

/// `retryMany`'s filter takes the same search: only the matching failed tasks are retried.
#[tokio::test]
async fn retry_many_retries_only_the_failed_tasks_a_search_selects() {
    let jobs = Service::start().await;
    let fails =
        |brand: &str| json!({ "steps": 1, "stepMs": 0, "failAttempts": 1, "brandId": brand });
    let launch_b1 = create(&jobs, "lea", fails("b1"), json!(["launch"])).await;
    let launch_b2 = create(&jobs, "lea", fails("b2"), json!(["launch"])).await;
    let other_b1 = create(&jobs, "lea", fails("b1"), json!(["other"])).await;
    for id in [&launch_b1, &launch_b2, &other_b1] {
        jobs.wait_for_status(id, "failed").await;
    }
    let filter = json!({ "tag": "launch", "payload": { "brandId": "b1" } });
    let dry = jobs
        .post(
            "retryMany",
            json!({ "userId": "lea", "filter": filter, "dryRun": true }),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["dryRun"]["wouldRetry"], 1, "{}", dry.body);
    let done = jobs
        .post("retryMany", json!({ "userId": "lea", "filter": filter }))
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let retried: BTreeSet<String> = done.body["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(retried, set([&launch_b1]));
    jobs.wait_for_status(&launch_b1, "completed").await;
    for untouched in [&launch_b2, &other_b1] {
        assert_eq!(jobs.state(untouched).await.0, "failed");
    }
}
