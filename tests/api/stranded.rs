//! Nothing stranded, nothing misreported (docs/spec.md §11): hand-offs lost to a killed
//! function are re-sent by `sweep`, QStash's failure callback fails a task at once, `create`
//! and `retry` answer what is true after a late hand-off, the worker outlives a slow step and
//! a database blip, and the database's own failures are 503.

use std::time::{Duration, Instant};

use mongodb::bson::doc;
use serde_json::json;

use crate::qstash_emulator::{DEV_CURRENT_SIGNING_KEY, QStash, sign};
use crate::stubs::{Blackhole, OnProcess, Proxy};
use crate::support::{OwnDatabase, Service, free_port};

/// Waits until a task of `user` is stored with `status`; returns its id.
async fn wait_for_task_of(jobs: &Service, user: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(task) = jobs
            .tasks
            .find_one(doc! { "userId": user, "status": status })
            .await
            .unwrap()
        {
            return task.get_str("taskId").unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no {status} task of {user}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL between the database write and the hand-off, for a `create` and a `retry`: the
/// restarted function's `sweep` re-sends both (once), both complete, and the retry counts once.
#[tokio::test]
async fn a_function_killed_before_its_handoff_strands_nothing() {
    let plain = Service::start().await;
    let failed = plain.failed_task("bob", 1, 1).await;

    let blackhole = Blackhole::start().await;
    let mut doomed = plain
        .start_sharing_db(&[("JOBS_PUBLIC_URL", &blackhole.url)])
        .await;
    let create = {
        let url = doomed.url("action=create");
        tokio::spawn(async move {
            let body = json!({ "type": "demo", "userId": "alice", "payload": { "steps": 1, "stepMs": 0 } });
            reqwest::Client::new().post(url).json(&body).send().await
        })
    };
    let retry = {
        let url = doomed.url("action=retry");
        let body = json!({ "taskId": failed, "userId": "bob" });
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
    };
    let created = wait_for_task_of(&doomed, "alice", "queued").await;
    wait_for_task_of(&doomed, "bob", "queued").await;
    doomed.kill();
    assert!(
        create.await.unwrap().is_err() && retry.await.unwrap().is_err(),
        "no answers"
    );
    for id in [&created, &failed] {
        let task = plain.task(id).await;
        assert_eq!(
            task.get_str("status").unwrap(),
            "queued",
            "stranded: {task}"
        );
        assert!(
            task.get_document("handoff").is_ok(),
            "its hand-off is recorded: {task}"
        );
    }

    let restarted = plain
        .start_sharing_db(&[("JOBS_REDISPATCH_SECONDS", "1")])
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sweep = restarted.get("action=sweep").await;
    assert_eq!(
        (sweep.status, &sweep.body["redispatched"]),
        (200, &json!(2)),
        "{}",
        sweep.body
    );
    plain.wait_for_status(&created, "completed").await;
    plain.wait_for_status(&failed, "completed").await;
    assert_eq!(
        plain.state(&failed).await,
        ("completed".into(), 1, 2),
        "one retry, counted once, despite the lost hand-off"
    );
    let again = restarted.get("action=sweep").await;
    assert_eq!(again.body["redispatched"], 0, "a hand-off is re-sent once");
}

/// QStash gives up (the destination answers 500 every time): its failure callback fails the
/// task at once with the callback's message; a forged or unsigned callback changes nothing.
#[tokio::test]
async fn qstash_giving_up_fails_the_task_at_once() {
    let qstash = QStash::start().await;
    let port = free_port();
    let proxy = Proxy::start(&format!("http://127.0.0.1:{port}"), OnProcess::Refuse).await;
    let mut env = qstash.env(&proxy.url);
    env.push(("JOBS_QSTASH_RETRIES", "2".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let jobs = Service::start_on(
        port,
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &env,
    )
    .await;

    let started = Instant::now();
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    let task = jobs.wait_for_status(&id, "failed").await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "failed when QStash gave up, not after the queue timeout"
    );
    assert_eq!(
        task.get_str("lastError").unwrap(),
        "Delivery failed after 3 attempts (HTTP 500)."
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while qstash.callbacks().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await; // recorded once answered
    }
    let callbacks = qstash.callbacks();
    assert_eq!(callbacks.len(), 1);
    assert_eq!(callbacks[0].status, Some(200));
    assert_eq!(
        callbacks[0].url,
        format!("{}/api/jobs?action=deliveryFailed", proxy.url)
    );
    assert_eq!(qstash.delivered().len(), 3);

    // The same callback, forged or unsigned, against a task that is queued again (its new
    // message waits in QStash meanwhile).
    qstash.behave(|b| b.delivery_delay = Duration::from_secs(60));
    let retried = jobs.retry(&id, "alice").await;
    assert_eq!(retried.status, 200);
    let before = jobs.task(&id).await;
    let body = callbacks[0].body.to_string();
    let url = format!("{}/api/jobs?action=deliveryFailed", proxy.url);
    for signature in [Some(sign("sig_forged", &url, body.as_bytes())), None] {
        let mut request = jobs
            .request(reqwest::Method::POST, "action=deliveryFailed")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("upstash-signature", signature);
        }
        assert_eq!(jobs.send(request).await.status, 401);
    }
    // A genuine callback about the earlier hand-off leaves the new one alone.
    let stale = jobs
        .send(
            jobs.request(reqwest::Method::POST, "action=deliveryFailed")
                .header(
                    "upstash-signature",
                    sign(DEV_CURRENT_SIGNING_KEY, &url, body.as_bytes()),
                )
                .body(body.clone()),
        )
        .await;
    assert_eq!(
        (stale.status, &stale.body),
        (200, &json!({ "failed": false }))
    );
    let after = jobs.task(&id).await;
    assert_eq!(after.get_str("status"), before.get_str("status"));
    assert_eq!(
        after.get_document("handoff"),
        before.get_document("handoff")
    );
}

/// A hand-off whose 202 arrives after the 10 s timeout: `create` answers 201 with the real
/// status instead of "could not be queued"; a `retry` whose task the owner cancelled while its
/// hand-off hung answers 409, not 200.
#[tokio::test]
async fn create_and_retry_answer_what_is_true_after_a_late_handoff() {
    let port = free_port();
    let proxy = Proxy::start(
        &format!("http://127.0.0.1:{port}"),
        OnProcess::Delay(Duration::from_secs(11)),
    )
    .await;
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    let late = Service::start_on(port, db, &[("JOBS_PUBLIC_URL", &proxy.url)]).await;

    let blackhole = Blackhole::start().await;
    let plain = late.start_sharing_db(&[]).await;
    let failed = plain.failed_task("bob", 1, 3).await;
    let hung = late
        .start_sharing_db(&[("JOBS_PUBLIC_URL", &blackhole.url)])
        .await;

    let (create, retry) = tokio::join!(
        late.post(
            "create",
            json!({ "type": "demo", "userId": "alice", "payload": { "steps": 1, "stepMs": 0 } })
        ),
        async {
            let retry = tokio::spawn({
                let url = hung.url("action=retry");
                let body = json!({ "taskId": failed, "userId": "bob" });
                async move { reqwest::Client::new().post(url).json(&body).send().await }
            });
            wait_for_task_of(&hung, "bob", "queued").await;
            let cancel = hung
                .post("cancel", json!({ "taskId": failed, "userId": "bob" }))
                .await;
            assert_eq!(cancel.status, 200);
            let reply = retry.await.unwrap().unwrap();
            (
                reply.status().as_u16(),
                reply.json::<serde_json::Value>().await.unwrap(),
            )
        }
    );
    assert_eq!(create.status, 201, "{}", create.body);
    assert_ne!(create.body["status"], "queued", "{}", create.body);
    late.wait_for_status(&create.task_id(), "completed").await;
    assert_eq!(
        retry,
        (
            409,
            json!({ "error": "The task was cancelled while it was being re-queued.", "code": "TASK_CANCELLED" })
        )
    );
}

/// The worker's writes meet a database that is down for a moment: the step's record (the
/// demo's work is a memoised step, docs/spec.md §16) or the final `complete`, whichever the
/// outage meets, is retried with backoff, and the task completes in its first attempt.
#[tokio::test]
async fn the_final_write_survives_a_database_blip() {
    let mut db = OwnDatabase::start().await;
    let uri = db.uri();
    let jobs = Service::start_with(&[("MONGODB_URI", uri.as_str())]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 500 }))
        .await;
    jobs.wait_for_status(&id, "processing").await;
    db.stop();
    // Down long enough for the last progress report and then the first `complete` to give up
    // (each waits about 6 s for a server, the driver's own retries included).
    tokio::time::sleep(Duration::from_secs(14)).await;
    db.resume().await;
    let done = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(done.get_i32("attempts").unwrap(), 1);
    let logs = jobs.logs();
    assert!(
        logs.contains("step record failed; retrying")
            || logs.contains("final write failed; retrying"),
        "{logs}"
    );
}

/// A `mongodb+srv` name that does not resolve at cold start: the function starts and answers
/// 503 `DB_UNAVAILABLE` (it used to exit).
#[tokio::test]
async fn a_dns_failure_at_cold_start_is_503() {
    let jobs = Service::start_with(&[
        (
            "MONGODB_URI",
            "mongodb+srv://cluster0.does-not-exist.invalid/?serverSelectionTimeoutMS=500",
        ),
        ("JOBS_DB_TIMEOUT_MS", "2000"),
    ])
    .await;
    let list = jobs.get("action=list&userId=alice").await;
    assert_eq!(
        (list.status, &list.body),
        (
            503,
            &json!({ "error": "Database unavailable", "code": "DB_UNAVAILABLE" })
        )
    );
    assert_eq!(jobs.get("action=health").await.status, 503);
}

/// `list` leaves payloads out (`get` has them) and its query shape is one an index serves in
/// order: the index exists with exactly `list`'s sort.
#[tokio::test]
async fn list_has_no_payloads_and_an_index_in_its_sort_order() {
    let jobs = Service::start().await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    let list = jobs.get("action=list&userId=alice").await;
    assert!(
        list.body["tasks"][0].get("payload").is_none(),
        "{}",
        list.body
    );
    let get = jobs
        .get(&format!("action=get&userId=alice&taskId={id}"))
        .await;
    assert_eq!(
        get.body["task"]["payload"],
        json!({ "steps": 1, "stepMs": 0 })
    );

    let mut keys = Vec::new();
    let mut cursor = jobs.tasks.list_indexes().await.unwrap();
    while cursor.advance().await.unwrap() {
        keys.push(cursor.deserialize_current().unwrap().keys);
    }
    assert!(
        keys.contains(&doc! { "userId": 1, "createdAt": -1, "taskId": -1 }),
        "{keys:?}"
    );
    assert!(
        keys.contains(&doc! { "userId": 1, "status": 1, "createdAt": -1, "taskId": -1 }),
        "{keys:?}"
    );
}

/// A database that accepts connections and never answers: each operation gives up after
/// `JOBS_DB_TIMEOUT_MS` with 503 `DB_TIMEOUT`, saying how long it waited, instead of hanging the
/// request.
#[tokio::test]
async fn a_hung_database_is_503_within_the_operation_timeout() {
    let silent = Blackhole::start().await;
    let address = silent.url.trim_start_matches("http://");
    let uri = format!(
        "mongodb://{address}/?directConnection=true&serverSelectionTimeoutMS=30000&connectTimeoutMS=30000"
    );
    let jobs =
        Service::start_with(&[("MONGODB_URI", uri.as_str()), ("JOBS_DB_TIMEOUT_MS", "300")]).await;
    let list = jobs.get("action=list&userId=alice").await;
    assert_eq!(
        (list.status, &list.body),
        (
            503,
            &json!({ "error": "The database did not answer within 0.3 s", "code": "DB_TIMEOUT" })
        )
    );
    assert!(
        jobs.logs().contains("database operation timed out"),
        "{}",
        jobs.logs()
    );
}

/// One processor step three times longer than the lease: the worker renews the lease on its
/// own, so `sweep` never mistakes it for a lost worker, and it runs once.
#[tokio::test]
async fn a_step_longer_than_the_lease_completes_once_without_being_swept() {
    let jobs = Service::start_with(&[("JOBS_LEASE_SECONDS", "1")]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 3000 }))
        .await;
    jobs.wait_for_status(&id, "processing").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs.task(&id).await.get_str("status").unwrap() == "processing" {
        let sweep = jobs.get("action=sweep").await;
        assert_eq!(
            sweep.body["timedOut"], 0,
            "swept while alive: {}",
            sweep.body
        );
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(jobs.state(&id).await, ("completed".into(), 0, 1));
}

/// The destination stays down: every sweep's re-send fails. The task is sent again by each
/// sweep, yet the never-picked-up clock runs from the first re-send, so it ends `failed` (not
/// queued for ever), with one `redispatched` event, not one per sweep.
#[tokio::test]
async fn a_long_outage_still_ends_in_never_picked_up() {
    let down = format!("http://127.0.0.1:{}", crate::support::closed_port());
    let jobs = Service::start_with(&[
        ("JOBS_PUBLIC_URL", down.as_str()),
        ("JOBS_REDISPATCH_SECONDS", "1"),
        ("JOBS_QUEUE_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let store = jobs_core::testing::store_on(&crate::support::db_uri(), &jobs.db_name);
    let seeded = jobs_core::testing::task()
        .updated_secs_ago(5)
        .insert(&store)
        .await;
    let id = seeded.task_id.to_string();
    let mut not_sent = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while jobs.state(&id).await.0 != "failed" {
        assert!(
            Instant::now() < deadline,
            "never failed: {}",
            jobs.task(&id).await
        );
        let sweep = jobs.get("action=sweep").await;
        not_sent += sweep.body["notSent"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(not_sent >= 2, "re-sent by more than one sweep: {not_sent}");
    let task = jobs.task(&id).await;
    jobs_core::testing::assert_legal_document(&task);
    assert!(
        task.get_str("lastError")
            .unwrap()
            .starts_with("The task was never picked up"),
        "{task}"
    );
    let redispatched = task
        .get_array("events")
        .unwrap()
        .iter()
        .filter(|e| e.as_document().unwrap().get_str("kind") == Ok("redispatched"))
        .count();
    assert_eq!(redispatched, 1, "{task}");
}

/// A re-send flagged for another try but already past the queue timeout is failed by the
/// sweep, not sent once more first (which would deliver a message to a task it then fails).
#[tokio::test]
async fn a_resend_past_the_queue_timeout_is_failed_not_sent() {
    let jobs = Service::start_with(&[
        ("JOBS_REDISPATCH_SECONDS", "1"),
        ("JOBS_QUEUE_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let store = jobs_core::testing::store_on(&crate::support::db_uri(), &jobs.db_name);
    let seeded = jobs_core::testing::task()
        .updated_secs_ago(20)
        .redispatched_secs_ago(10)
        .insert(&store)
        .await;
    let id = seeded.task_id.to_string();
    jobs.tasks
        .update_one(
            doc! { "taskId": &id },
            doc! { "$set": { "handoff.resend": true } },
        )
        .await
        .unwrap();
    let sweep = jobs.get("action=sweep").await;
    assert_eq!(
        (
            sweep.body["redispatched"].as_u64(),
            sweep.body["neverPickedUp"].as_u64()
        ),
        (Some(0), Some(1)),
        "{}",
        sweep.body
    );
    assert_eq!(jobs.state(&id).await.0, "failed");
}

/// A sweep with more stale hand-offs than one batch still works through every chunk of the
/// batch (not only the first), and says there is more.
#[tokio::test]
async fn a_full_batch_of_stale_handoffs_is_sent_chunk_after_chunk() {
    let down = format!("http://127.0.0.1:{}", crate::support::closed_port());
    let jobs = Service::start_with(&[
        ("JOBS_PUBLIC_URL", down.as_str()),
        ("JOBS_REDISPATCH_SECONDS", "1"),
    ])
    .await;
    let stale = jobs_core::testing::task().updated_secs_ago(5).build();
    let documents: Vec<_> = (0..501)
        .map(|_| {
            let mut task = stale.clone();
            task.task_id = jobs_core::task::TaskId::generate();
            let handoff = task.handoff.as_mut().unwrap();
            handoff.dedup_id = format!("{}-x", task.task_id);
            task
        })
        .collect();
    let client = mongodb::Client::with_uri_str(crate::support::db_uri())
        .await
        .unwrap();
    client
        .database(&jobs.db_name)
        .collection::<jobs_core::task::Task>("tasks")
        .insert_many(documents)
        .await
        .unwrap();
    let sweep = jobs.get("action=sweep").await;
    assert_eq!(sweep.status, 200, "{}", sweep.body);
    assert_eq!(
        (sweep.body["notSent"].as_u64(), sweep.body["more"].as_bool()),
        (Some(500), Some(true)),
        "{}",
        sweep.body
    );
}
