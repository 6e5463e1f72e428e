//! Edit and retry (docs/spec.md §17) through the real binary: a new payload stored as the next
//! version, validated as at `create`, fenced on the version read; every attempt says which
//! version it ran; `get` shows the history and any kept version.

use serde_json::{Value, json};

use crate::support::Service;

async fn task(jobs: &Service, id: &str) -> Value {
    jobs.view(id, "alice").await
}

/// A demo task of alice that fails on every attempt, and fails in its second step.
async fn always_failing(jobs: &Service) -> String {
    let payload = json!({ "steps": 3, "stepMs": 0, "failAttempts": 100, "failAtStep": 2 });
    let id = jobs.create_demo("alice", payload).await;
    jobs.wait_for_status(&id, "failed").await;
    id
}

/// The attempt that ran each stored step, in order.
fn step_attempts(task: &Value) -> Vec<i64> {
    let steps = task["steps"].as_array().expect("get returns steps");
    steps
        .iter()
        .map(|s| s["attempt"].as_i64().unwrap())
        .collect()
}

fn edit(id: &str, payload: Value) -> Value {
    json!({ "taskId": id, "userId": "alice", "payload": payload })
}

#[tokio::test]
async fn an_edited_retry_runs_the_new_version_and_keeps_the_old_one() {
    let jobs = Service::start().await;
    let id = always_failing(&jobs).await;
    let before = task(&jobs, &id).await;
    assert_eq!(before["payloadVersion"], 1);
    assert_eq!(before["payloadHistory"], json!([]));

    let fixed = json!({ "steps": 3, "stepMs": 0 });
    let mut body = edit(&id, fixed.clone());
    body["expectedVersion"] = json!(1);
    let reply = jobs.post("retry", body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    jobs.wait_for_status(&id, "completed").await;

    let done = task(&jobs, &id).await;
    assert_eq!(done["payload"], fixed);
    assert_eq!(done["payloadVersion"], 2);
    let history = done["payloadHistory"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0]["version"].as_i64(), history[0]["by"].as_str()),
        (Some(2), Some("user:alice"))
    );
    assert_eq!(
        history[0]["patch"],
        json!([
            { "op": "remove", "path": "/failAttempts" },
            { "op": "remove", "path": "/failAtStep" },
        ])
    );
    // The attempt that failed ran version 1; the claims say which version each ran.
    assert_eq!(done["errorHistory"][0]["payloadVersion"], 1);
    let claimed: Vec<Value> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "claimed")
        .map(|e| e["payloadVersion"].clone())
        .collect();
    assert_eq!(claimed, [json!(1), json!(2)]);
    let retried = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "retried")
        .unwrap()
        .clone();
    assert_eq!(retried["payloadVersion"], 2);
    assert_eq!(
        retried["message"],
        "Payload edited: version 2; From the start: stored steps discarded"
    );
    // After an edit the run starts over: step-1 ran again, on the new input.
    let attempts = step_attempts(&done);
    assert_eq!(attempts, [2, 2, 2]);

    // Every kept version can be shown.
    let v1 = jobs
        .get(&format!("action=get&taskId={id}&userId=alice&version=1"))
        .await;
    assert_eq!(v1.status, 200, "{}", v1.body);
    assert_eq!(
        v1.body["payloadAt"],
        json!({ "version": 1, "payload": before["payload"] })
    );
    let v9 = jobs
        .get(&format!("action=get&taskId={id}&userId=alice&version=9"))
        .await;
    assert_eq!(v9.refusal(), (400, Some("INVALID_QUERY")));
    assert_eq!(
        v9.body["error"],
        "Invalid query: there is no payload version 9: the payload is at version 2"
    );
}

#[tokio::test]
async fn an_edit_that_keeps_the_completed_steps_when_asked() {
    let jobs = Service::start().await;
    let id = always_failing(&jobs).await;
    let mut body = edit(&id, json!({ "steps": 3, "stepMs": 0 }));
    body["from"] = json!("failedStep");
    assert_eq!(jobs.post("retry", body).await.status, 200);
    jobs.wait_for_status(&id, "completed").await;
    let done = task(&jobs, &id).await;
    let attempts = step_attempts(&done);
    assert_eq!(attempts, [1, 2, 2], "step-1 kept from attempt 1, as asked");
}

#[tokio::test]
async fn a_stale_edit_is_a_conflict_and_an_edit_of_a_task_that_is_not_failed_is_refused() {
    let jobs = Service::start().await;
    let id = always_failing(&jobs).await;
    // Two pages open on version 1: the first edit wins, the second is told the version now.
    let mut first = edit(&id, json!({ "steps": 3, "stepMs": 0, "failAttempts": 100 }));
    first["expectedVersion"] = json!(1);
    assert_eq!(jobs.post("retry", first).await.status, 200);
    jobs.wait_for_status(&id, "failed").await;
    let after_first = jobs.task(&id).await;
    let mut second = edit(&id, json!({ "steps": 1 }));
    second["expectedVersion"] = json!(1);
    let reply = jobs.post("retry", second).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["code"], "VERSION_CONFLICT");
    assert_eq!(reply.body["currentVersion"], 2);
    assert_eq!(
        reply.body["error"],
        "The payload was edited meanwhile: it is at version 2 now. Reload the task and edit it again."
    );
    assert_eq!(jobs.task(&id).await, after_first, "nothing changed");

    let completed = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&completed, "completed").await;
    let before = jobs.task(&completed).await;
    let reply = jobs
        .post("retry", edit(&completed, json!({ "steps": 2 })))
        .await;
    assert_eq!(reply.refusal(), (409, Some("NOT_FAILED")));
    assert_eq!(jobs.task(&completed).await, before);
}

#[tokio::test]
async fn a_webhook_edit_never_shows_a_header_value_in_its_history() {
    let jobs = Service::start_with(&[("JOBS_WEBHOOK_ALLOWED_HOSTS", "example.invalid")]).await;
    let created = jobs
        .post(
            "create",
            json!({ "type": "webhook", "userId": "alice",
                    "payload": { "url": "https://example.invalid/hook" } }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.task_id();
    jobs.wait_for_status(&id, "failed").await;
    let payload = json!({ "url": "https://user:pw@example.invalid/hook",
                          "headers": { "Authorization": "Bearer s3cret" } });
    assert_eq!(jobs.post("retry", edit(&id, payload)).await.status, 200);
    let shown = task(&jobs, &id).await;
    let text = shown.to_string();
    assert!(!text.contains("s3cret") && !text.contains(":pw@"), "{text}");
    assert_eq!(shown["payloadHistory"][0]["version"], 2);
    let v2 = jobs
        .get(&format!("action=get&taskId={id}&userId=alice&version=2"))
        .await;
    assert!(!v2.body.to_string().contains("s3cret"), "{}", v2.body);

    // The payload as `get` shows it, sent back with a change, would replace the secrets with
    // the placeholders: refused, nothing changed.
    jobs.wait_for_status(&id, "failed").await;
    let before = jobs.task(&id).await;
    let mut shown_payload = shown["payload"].clone();
    shown_payload["method"] = json!("PUT");
    let reply = jobs.post("retry", edit(&id, shown_payload)).await;
    assert_eq!(reply.refusal(), (400, Some("INVALID_PAYLOAD")));
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("that get shows"),
        "{}",
        reply.body
    );
    assert_eq!(jobs.task(&id).await, before);
}

#[tokio::test]
async fn an_edit_whose_hand_off_fails_keeps_its_version_and_gives_the_retry_back() {
    let jobs = Service::start().await;
    let id = always_failing(&jobs).await;
    let dead_end = format!("http://127.0.0.1:{}", crate::support::closed_port());
    let cut_off = jobs
        .start_sharing_db(&[("JOBS_PUBLIC_URL", &dead_end)])
        .await;
    let reply = cut_off
        .post("retry", edit(&id, json!({ "steps": 3, "stepMs": 0 })))
        .await;
    assert_eq!(reply.refusal(), (503, Some("REQUEUE_FAILED")));
    let now = task(&jobs, &id).await;
    assert_eq!(now["status"], "failed");
    assert_eq!(now["payloadVersion"], 2, "the edit is kept");
    assert_eq!(now["payload"], json!({ "steps": 3, "stepMs": 0 }));
    assert_eq!(now["retryCount"], 0, "the retry is given back");
    // Retried again from there (expectedVersion 2), it runs the new version.
    let mut again = edit(&id, json!({ "steps": 3, "stepMs": 0 }));
    again["expectedVersion"] = json!(2);
    assert_eq!(jobs.post("retry", again).await.status, 200);
    jobs.wait_for_status(&id, "completed").await;
}

/// A demo task of alice that always fails with the same cause, in `steps` steps.
async fn failing_with(jobs: &Service, steps: u32) -> String {
    let payload = json!({ "steps": steps, "stepMs": 0, "failAttempts": 100 });
    let id = jobs.create_demo("alice", payload).await;
    jobs.wait_for_status(&id, "failed").await;
    id
}

#[tokio::test]
async fn one_correction_for_a_whole_group_after_a_dry_run() {
    let jobs = Service::start().await;
    let mut fits = Vec::new();
    for _ in 0..3 {
        fits.push(failing_with(&jobs, 3).await);
    }
    let refused = failing_with(&jobs, 2).await;
    let group = task(&jobs, &refused).await["errorGroup"].clone();
    // Stop failing, and fail at step 3 only if it ever fails again: a step 3 the 2-step task
    // does not have, so its processor refuses the corrected payload.
    let patch = json!({ "failAttempts": null, "failAtStep": 3 });
    let call = |dry_run: bool| {
        json!({ "userId": "alice", "filter": { "errorGroup": group }, "patch": patch,
                "dryRun": dry_run })
    };

    let before = jobs.snapshot().await;
    let dry = jobs.post("retryMany", call(true)).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(jobs.snapshot().await, before, "a dry run changes nothing");
    assert_eq!(dry.db_commands(), 1, "a dry run is the page read");
    assert_eq!(dry.body["retried"], json!([]));
    assert_eq!(dry.body["dryRun"]["wouldRetry"], 3);
    assert_eq!(
        dry.body["skipped"],
        json!([{ "taskId": refused, "code": "INVALID_PAYLOAD",
                 "message": "failAtStep must be between 1 and steps (2)" }])
    );
    let examples = dry.body["dryRun"]["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 3);
    for example in examples {
        assert!(
            fits.iter().any(|id| example["taskId"] == id.as_str()),
            "{example}"
        );
        assert_eq!(
            example["changes"],
            json!([
                { "op": "add", "path": "/failAtStep", "value": 3 },
                { "op": "remove", "path": "/failAttempts" },
            ])
        );
    }

    let done = jobs.post("retryMany", call(false)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let mut retried: Vec<String> = serde_json::from_value(done.body["retried"].clone()).unwrap();
    retried.sort();
    fits.sort();
    assert_eq!(retried, fits);
    assert_eq!(done.body["skipped"][0]["code"], "INVALID_PAYLOAD");
    assert!(done.body.get("dryRun").is_none());
    assert_eq!(
        done.db_commands(),
        3,
        "page read, ONE update of the edits, the note for groups (every candidate moved: no \
         read-back)"
    );
    for id in &fits {
        jobs.wait_for_status(id, "completed").await;
        let now = task(&jobs, id).await;
        assert_eq!(now["payloadVersion"], 2);
        assert_eq!(
            now["payload"],
            json!({ "steps": 3, "stepMs": 0, "failAtStep": 3 })
        );
        assert_eq!(now["payloadHistory"][0]["by"], "bulk:alice");
    }
    let untouched = task(&jobs, &refused).await;
    assert_eq!(
        (
            untouched["status"].as_str(),
            untouched["payloadVersion"].as_i64()
        ),
        (Some("failed"), Some(1))
    );

    // A patch goes with a filter.
    let by_ids = json!({ "userId": "alice", "taskIds": [refused], "patch": patch });
    let reply = jobs.post("retryMany", by_ids).await;
    assert_eq!(reply.refusal(), (400, Some("INVALID_BODY")));
    assert_eq!(
        reply.body["error"],
        "Invalid request body: patch goes with filter, not with taskIds"
    );
}
