//! Memoised steps and resume (docs/spec.md §16) through the real binary: the demo
//! example, `{steps: 5, stepMs: 200, failAttempts: 1, failAtStep: 4}`, fails in step 4; a
//! `retry` runs only steps 4 and 5, and one `from: "start"` runs all five; and a host
//! application behind a `webhook` that reports its steps resumes at the one that failed.

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::support::Service;

const EXAMPLE: fn() -> Value =
    || json!({ "steps": 5, "stepMs": 200, "failAttempts": 1, "failAtStep": 4 });

async fn task(jobs: &Service, id: &str) -> Value {
    jobs.view(id, "alice").await
}

/// `(name, status, attempt)` of each stored step.
fn steps(task: &Value) -> Vec<(String, String, i64)> {
    let steps = task["steps"].as_array().expect("get returns steps");
    steps
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap().to_owned();
            (text("name"), text("status"), s["attempt"].as_i64().unwrap())
        })
        .collect()
}

fn expected(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    rows.iter()
        .map(|(n, s, a)| (n.to_string(), s.to_string(), *a))
        .collect()
}

/// The timeline's `(kind, step)` from the first event of `kind` `from` on.
fn timeline_from(task: &Value, from: &str) -> Vec<(String, Option<String>)> {
    let events = task["events"].as_array().unwrap();
    let start = events.iter().rposition(|e| e["kind"] == from).unwrap();
    events[start..]
        .iter()
        .map(|e| {
            let kind = e["kind"].as_str().unwrap().to_owned();
            (kind, e["step"].as_str().map(str::to_owned))
        })
        .collect()
}

async fn failed_in_step_4(jobs: &Service) -> (String, Value) {
    let id = jobs.create_demo("alice", EXAMPLE()).await;
    jobs.wait_for_status(&id, "failed").await;
    let failed = task(jobs, &id).await;
    assert_eq!(
        steps(&failed),
        expected(&[
            ("step-1", "completed", 1),
            ("step-2", "completed", 1),
            ("step-3", "completed", 1),
            ("step-4", "failed", 1),
        ])
    );
    assert_eq!(
        failed["steps"][3]["error"],
        "Simulated failure on attempt 1"
    );
    assert_eq!(
        failed["steps"][0]["output"],
        json!({ "step": 1, "attempt": 1 })
    );
    assert!(failed["steps"][0]["durationMs"].as_i64().unwrap() >= 200);
    (id, failed)
}

#[tokio::test]
async fn a_retry_runs_only_the_failed_step_and_the_ones_after_it() {
    let jobs = Service::start().await;
    let (id, failed) = failed_in_step_4(&jobs).await;

    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    jobs.wait_for_status(&id, "completed").await;
    let done = task(&jobs, &id).await;
    assert_eq!(
        steps(&done),
        expected(&[
            ("step-1", "completed", 1),
            ("step-2", "completed", 1),
            ("step-3", "completed", 1),
            ("step-4", "completed", 2),
            ("step-5", "completed", 2),
        ])
    );
    for k in 0..3 {
        assert_eq!(
            done["steps"][k]["finishedAt"],
            failed["steps"][k]["finishedAt"],
            "step {} keeps attempt 1's finishedAt",
            k + 1
        );
    }
    let resumed = [
        ("retried", None),
        ("claimed", None),
        ("resumed", Some("step-4")),
        ("stepCompleted", Some("step-4")),
        ("stepCompleted", Some("step-5")),
        ("completed", None),
    ];
    let resumed: Vec<(String, Option<String>)> = resumed
        .iter()
        .map(|(k, s)| (k.to_string(), s.map(str::to_owned)))
        .collect();
    assert_eq!(timeline_from(&done, "retried"), resumed);
    assert_eq!(done["result"], json!({ "steps": 5, "attempt": 2 }));

    // `list` leaves the steps out, as it does payloads and timelines.
    let list = jobs.get("action=list&userId=alice").await;
    let row = &list.body["tasks"][0];
    assert_eq!(row["taskId"], id.as_str());
    assert!(row.get("steps").is_none(), "{row}");
}

#[tokio::test]
async fn a_retry_from_the_start_runs_all_five_steps() {
    let jobs = Service::start().await;
    let (id, _) = failed_in_step_4(&jobs).await;

    let reply = jobs
        .post(
            "retry",
            json!({ "taskId": id, "userId": "alice", "from": "start" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    jobs.wait_for_status(&id, "completed").await;
    let done = task(&jobs, &id).await;
    let all: Vec<(String, String, i64)> = (1..=5)
        .map(|k| (format!("step-{k}"), "completed".to_owned(), 2))
        .collect();
    assert_eq!(steps(&done), all);
    let events = done["events"].as_array().unwrap();
    let retried = events.iter().rfind(|e| e["kind"] == "retried").unwrap();
    assert_eq!(retried["message"], "From the start: stored steps discarded");
    assert!(!events.iter().any(|e| e["kind"] == "resumed"));
}

#[tokio::test]
async fn retry_many_takes_from_too() {
    let jobs = Service::start().await;
    let (first, _) = failed_in_step_4(&jobs).await;
    let (second, _) = failed_in_step_4(&jobs).await;
    let reply = jobs
        .post(
            "retryMany",
            json!({ "taskIds": [first, second], "userId": "alice", "from": "start" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for id in [&first, &second] {
        jobs.wait_for_status(id, "completed").await;
        let done = task(&jobs, id).await;
        let attempts: Vec<i64> = steps(&done).into_iter().map(|(_, _, a)| a).collect();
        assert_eq!(attempts, [2, 2, 2, 2, 2], "{id}: all five ran again");
    }
}

/// A host application that does its work behind a webhook in three steps, `reserve`, `charge`
/// and `ship`, as docs/spec.md §16 "Steps behind a webhook" describes: it skips the steps the
/// request says are done (using their outputs), reports the ones it completed, and on its first
/// call fails in `charge`. It records every request body it was sent.
struct StepsHost {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
}

impl StepsHost {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = received.clone();
        let url = crate::stubs::serve(move |req: Request<Incoming>| {
            let shared = shared.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let request: Value = serde_json::from_slice(&body).unwrap();
                let calls = {
                    let mut received = shared.lock().unwrap();
                    received.push(request.clone());
                    received.len()
                };
                let (status, answer) = Self::work(&request, calls);
                crate::stubs::answer(status, answer.to_string())
            }
        })
        .await;
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Self { port, received }
    }

    /// The host's work for its `call`-th request.
    fn work(request: &Value, call: usize) -> (u16, Value) {
        let done: Vec<&str> = request["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let mut completed = Vec::new();
        for step in ["reserve", "charge", "ship"] {
            if done.contains(&step) {
                continue;
            }
            if step == "charge" && call == 1 {
                let failed = json!({ "name": "charge", "error": "card declined" });
                return (502, json!({ "steps": completed, "failedStep": failed }));
            }
            completed.push(json!({ "name": step, "output": { "did": step, "call": call } }));
        }
        (
            200,
            json!({ "steps": completed, "result": { "order": "o-1" } }),
        )
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_webhook_host_reports_its_steps_and_a_retry_resumes_it_at_the_failed_one() {
    let host = StepsHost::start().await;
    let listed = format!("127.0.0.1:{}", host.port);
    let jobs = Service::start_with(&[
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("JOBS_WEBHOOK_ALLOWED_HOSTS", &listed),
    ])
    .await;
    let payload = json!({ "url": format!("http://{listed}/order"), "body": { "sku": "s-1" },
                          "steps": true });
    let created = jobs
        .post(
            "create",
            json!({ "type": "webhook", "userId": "alice", "payload": payload }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.task_id();

    jobs.wait_for_status(&id, "failed").await;
    let failed = task(&jobs, &id).await;
    assert_eq!(
        failed["lastError"],
        "Webhook answered HTTP 502 in step \"charge\": card declined"
    );
    assert_eq!(
        steps(&failed),
        expected(&[("reserve", "completed", 1), ("charge", "failed", 1)])
    );
    assert_eq!(failed["steps"][1]["error"], "card declined");

    assert_eq!(jobs.retry(&id, "alice").await.status, 200);
    jobs.wait_for_status(&id, "completed").await;
    let done = task(&jobs, &id).await;
    assert_eq!(
        steps(&done),
        expected(&[
            ("reserve", "completed", 1),
            ("charge", "completed", 2),
            ("ship", "completed", 2),
        ])
    );
    assert_eq!(
        done["result"],
        json!({ "status": 200, "result": { "order": "o-1" } })
    );
    let resumed: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "resumed")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(resumed, ["charge"]);

    // What the host was sent: the body inside the envelope, and on the second call the step
    // the first one completed, with its output.
    let received = host.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["body"], json!({ "sku": "s-1" }));
    assert_eq!(received[0]["steps"], json!([]));
    assert_eq!(
        (
            received[0]["taskId"].as_str(),
            received[0]["attempt"].as_i64()
        ),
        (Some(id.as_str()), Some(1))
    );
    assert_eq!(
        received[1]["steps"],
        json!([{ "name": "reserve", "output": { "did": "reserve", "call": 1 } }])
    );
    assert_eq!(received[1]["attempt"], 2);
}
