//! Idempotent `create` (docs/spec.md §5): an `Idempotency-Key` (or `idempotencyKey`) answers
//! its first task for 24 h, never a second one; a different request under the same key is 409
//! `IDEMPOTENCY_KEY_REUSED`; concurrent creates, an expired key and a create that stopped
//! between its two inserts still leave exactly one task per key.

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Reply, Service};

fn demo(user: &str) -> Value {
    json!({ "type": "demo", "userId": user, "payload": { "steps": 1, "stepMs": 0 } })
}

/// A create of `body`, with `key` in the `Idempotency-Key` header when given.
async fn create(jobs: &Service, key: Option<&str>, body: &Value) -> Reply {
    let mut request = jobs.request(Method::POST, "action=create").json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    jobs.send(request).await
}

fn keys(jobs: &Service) -> mongodb::Collection<Document> {
    jobs.tasks
        .client()
        .database(&jobs.db_name)
        .collection("idempotency_keys")
}

async fn tasks_of(jobs: &Service, user: &str) -> Vec<String> {
    let mut ids: Vec<String> = jobs
        .snapshot()
        .await
        .iter()
        .filter(|t| t.get_str("userId") == Ok(user))
        .map(|t| t.get_str("taskId").unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn assert_replayed(reply: &Reply, task_id: &str) {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["taskId"], task_id, "{}", reply.body);
    assert_eq!(reply.body["replayed"], true, "{}", reply.body);
    assert_eq!(reply.body["success"], true, "{}", reply.body);
}

#[tokio::test]
async fn the_same_key_twice_answers_the_first_task_with_its_current_status() {
    let jobs = Service::start().await;
    let first = create(&jobs, Some("order-42"), &demo("alice")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body.get("replayed"), None, "{}", first.body);
    let id = first.task_id();

    let again = create(&jobs, Some("order-42"), &demo("alice")).await;
    assert_replayed(&again, &id);
    // Insert the key (duplicate), read its record, read its task.
    assert_eq!(again.db_commands(), 3);
    assert_eq!(tasks_of(&jobs, "alice").await, std::slice::from_ref(&id));

    // A TTL index removes expired records (SecantusDB, like mongod, runs its TTL monitor).
    let indexes: Vec<_> = keys(&jobs)
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ttl = indexes
        .iter()
        .find(|i| i.keys == doc! { "at": 1 })
        .expect("an index on at");
    let expire = ttl.options.as_ref().and_then(|o| o.expire_after);
    assert_eq!(expire, Some(std::time::Duration::from_secs(86_400)));

    jobs.wait_for_status(&id, "completed").await;
    let later = create(&jobs, Some("order-42"), &demo("alice")).await;
    assert_replayed(&later, &id);
    assert_eq!(later.body["status"], "completed", "{}", later.body);
    assert_eq!(tasks_of(&jobs, "alice").await, [id]);
}

#[tokio::test]
async fn the_body_field_is_a_key_too_and_may_repeat_the_header() {
    let jobs = Service::start().await;
    let mut body = demo("alice");
    body["idempotencyKey"] = json!("from-body");
    let first = create(&jobs, None, &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.task_id();
    assert_replayed(&create(&jobs, None, &body).await, &id);
    // The same key in the header alone, and in both places, is the same key.
    assert_replayed(&create(&jobs, Some("from-body"), &demo("alice")).await, &id);
    assert_replayed(&create(&jobs, Some("from-body"), &body).await, &id);
    assert_eq!(tasks_of(&jobs, "alice").await, [id]);
}

#[tokio::test]
async fn a_header_and_a_body_key_that_differ_are_400_and_create_nothing() {
    let jobs = Service::start().await;
    let mut body = demo("alice");
    body["idempotencyKey"] = json!("one");
    let reply = create(&jobs, Some("two"), &body).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["code"], "INVALID_BODY");
    assert!(
        reply.body["error"].as_str().unwrap().contains("differ"),
        "{}",
        reply.body
    );
    assert!(jobs.snapshot().await.is_empty());
}

#[tokio::test]
async fn the_same_key_with_another_request_is_409_and_creates_nothing() {
    let jobs = Service::start_with(&[("JOBS_WEBHOOK_ALLOWED_HOSTS", "example.com")]).await;
    let id = create(&jobs, Some("k1"), &demo("alice")).await.task_id();
    jobs.wait_for_status(&id, "completed").await;
    let before = jobs.snapshot().await;

    let mut other_payload = demo("alice");
    other_payload["payload"]["steps"] = json!(2);
    let mut other_budget = demo("alice");
    other_budget["maxRetries"] = json!(5);
    let mut other_type = demo("alice");
    other_type["type"] = json!("webhook");
    other_type["payload"] = json!({ "url": "https://example.com/hook" });
    for body in [other_payload, other_budget, other_type] {
        let reply = create(&jobs, Some("k1"), &body).await;
        assert_eq!(reply.status, 409, "{body}: {}", reply.body);
        assert_eq!(reply.body["code"], "IDEMPOTENCY_KEY_REUSED");
        assert_eq!(
            reply.body["error"],
            "This Idempotency-Key was already used with a different request body; use a new key for a new task."
        );
    }
    assert_eq!(jobs.snapshot().await, before);

    // The same request written differently (key order, an explicit default) is the same.
    let rewritten = json!({ "payload": { "stepMs": 0, "steps": 1 }, "maxRetries": 3,
        "userId": "alice", "type": "demo" });
    assert_replayed(&create(&jobs, Some("k1"), &rewritten).await, &id);
}

#[tokio::test]
async fn keys_are_per_user() {
    let jobs = Service::start().await;
    let alice = create(&jobs, Some("shared"), &demo("alice")).await;
    let bob = create(&jobs, Some("shared"), &demo("bob")).await;
    assert_eq!((alice.status, bob.status), (201, 201));
    // The key insert and the task insert (alice's create made the indexes).
    assert_eq!(bob.db_commands(), 2);
    assert_ne!(alice.task_id(), bob.task_id());
    assert_replayed(
        &create(&jobs, Some("shared"), &demo("alice")).await,
        &alice.task_id(),
    );
    assert_replayed(
        &create(&jobs, Some("shared"), &demo("bob")).await,
        &bob.task_id(),
    );
    assert_eq!(tasks_of(&jobs, "alice").await, [alice.task_id()]);
    assert_eq!(tasks_of(&jobs, "bob").await, [bob.task_id()]);
}

#[tokio::test]
async fn bad_keys_are_400_and_create_nothing() {
    let jobs = Service::start().await;
    let too_long = "k".repeat(256);
    let in_header = [
        ("empty", b"".to_vec()),
        ("256 characters", too_long.as_bytes().to_vec()),
        ("a space", b"two words".to_vec()),
        ("non-ASCII", "clé".as_bytes().to_vec()),
        ("not UTF-8", vec![b'k', 0xff]),
    ];
    for (name, key) in in_header {
        let request = jobs
            .request(Method::POST, "action=create")
            .header("Idempotency-Key", key)
            .json(&demo("alice"));
        let reply = jobs.send(request).await;
        assert_eq!(reply.status, 400, "header {name}: {}", reply.body);
        assert_eq!(reply.body["code"], "INVALID_BODY", "header {name}");
        assert_eq!(
            reply.body["error"],
            "Invalid request body: the Idempotency-Key header must be 1 to 255 visible ASCII characters (no spaces or control characters)",
            "header {name}"
        );
    }
    for (name, key) in [
        ("empty", ""),
        ("256 characters", too_long.as_str()),
        ("a control character", "a\u{1}b"),
        ("non-ASCII", "clé"),
    ] {
        let mut body = demo("alice");
        body["idempotencyKey"] = json!(key);
        let reply = create(&jobs, None, &body).await;
        assert_eq!(reply.status, 400, "body {name}: {}", reply.body);
        assert_eq!(
            reply.body["error"],
            "Invalid request body: idempotencyKey must be 1 to 255 visible ASCII characters (no spaces or control characters)",
            "body {name}"
        );
    }
    let two_headers = jobs
        .request(Method::POST, "action=create")
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .json(&demo("alice"));
    let reply = jobs.send(two_headers).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(jobs.snapshot().await.is_empty());
    assert_eq!(keys(&jobs).count_documents(doc! {}).await.unwrap(), 0);

    let longest = "~".repeat(255);
    assert_eq!(
        create(&jobs, Some(&longest), &demo("alice")).await.status,
        201
    );
}

#[tokio::test]
async fn twenty_concurrent_creates_with_one_key_make_one_task() {
    let jobs = Service::start().await;
    let url = jobs.url("action=create");
    let client = reqwest::Client::new();
    let creates = (0..20).map(|_| {
        let request = client
            .post(&url)
            .header("Idempotency-Key", "click-1")
            .json(&demo("alice"));
        async move { Reply::read(request.send().await.unwrap()).await }
    });
    let replies = futures_util::future::join_all(creates).await;
    let stored = tasks_of(&jobs, "alice").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [[200; 19].as_slice(), &[201]].concat());
    for reply in &replies {
        assert_eq!(reply.task_id(), stored[0], "{}", reply.body);
    }
    // The one task was handed off once and runs to completion.
    jobs.wait_for_status(&stored[0], "completed").await;
}

#[tokio::test]
async fn a_key_older_than_24_hours_creates_a_new_task() {
    let jobs = Service::start().await;
    let old = create(&jobs, Some("daily"), &demo("alice")).await.task_id();
    let day_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 24 * 3600 * 1000 - 1);
    let aged = keys(&jobs)
        .update_one(doc! {}, doc! { "$set": { "at": day_ago } })
        .await
        .unwrap();
    assert_eq!(aged.matched_count, 1);

    // Even with another body: an expired key is a new key.
    let mut other = demo("alice");
    other["payload"]["steps"] = json!(2);
    let new = create(&jobs, Some("daily"), &other).await;
    assert_eq!(new.status, 201, "{}", new.body);
    assert_ne!(new.task_id(), old);
    let mut both = vec![old, new.task_id()];
    both.sort();
    assert_eq!(tasks_of(&jobs, "alice").await, both);
    assert_replayed(&create(&jobs, Some("daily"), &other).await, &new.task_id());
    let record = keys(&jobs).find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(record.get_str("taskId").unwrap(), new.task_id());
}

#[tokio::test]
async fn a_key_whose_task_was_never_stored_creates_it_under_the_keys_id() {
    let jobs = Service::start().await;
    let id = create(&jobs, Some("crashed"), &demo("alice"))
        .await
        .task_id();
    jobs.wait_for_status(&id, "completed").await;
    // As if the create had died between inserting the key and inserting its task.
    jobs.tasks.delete_one(doc! { "taskId": &id }).await.unwrap();

    let reply = create(&jobs, Some("crashed"), &demo("alice")).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.task_id(), id);
    assert_eq!(tasks_of(&jobs, "alice").await, std::slice::from_ref(&id));
    let task = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(task.get_i32("attempts").unwrap(), 1);
    assert_replayed(&create(&jobs, Some("crashed"), &demo("alice")).await, &id);
}

/// A create whose key was stored but whose task never was (its answer was an error): the key
/// does not hold the corrected request hostage for 24 h. Another body with the same key
/// creates its task, since no task was ever created under it.
#[tokio::test]
async fn a_key_whose_create_failed_takes_a_corrected_request() {
    let jobs = Service::start_with(&[("FAILPOINTS", "create.key_admitted=1*return(error)")]).await;
    let first = json!({ "type": "demo", "userId": "alice", "idempotencyKey": "form-1",
                        "payload": { "steps": 1 } });
    let failed = jobs.post("create", first).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert!(jobs.snapshot().await.is_empty(), "no task");
    let corrected = json!({ "type": "demo", "userId": "alice", "idempotencyKey": "form-1",
                            "payload": { "steps": 2 } });
    let created = jobs.post("create", corrected.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let again = jobs.post("create", corrected).await;
    assert_eq!((again.status, again.task_id()), (200, created.task_id()));
    assert_eq!(jobs.snapshot().await.len(), 1);
}
