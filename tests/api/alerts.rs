//! Alerts (docs/spec.md §21): a signed POST when a new error group appears, when a group's
//! failures pass the threshold in a window, and when a task fails with no retries left; one per
//! group per window across instances; never in the way of the failure itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use mongodb::bson::{DateTime, doc};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::stubs;
use crate::support::Service;

const SECRET: &str = "alert-signing-secret";

/// A receiver that records every alert (body and signature header) and answers 200.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    refusing_first(0).await
}

/// A receiver that answers 503 to its first `refused` alerts (not recorded), then as
/// [`receiver`].
async fn refusing_first(refused: usize) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = stubs::serve(move |request: hyper::Request<hyper::body::Incoming>| {
        let (record, asked) = (record.clone(), asked.clone());
        async move {
            if asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refused {
                return stubs::answer(503, "{}");
            }
            let signature = request
                .headers()
                .get("x-jobs-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            record
                .lock()
                .unwrap()
                .push((String::from_utf8(body.to_vec()).unwrap(), signature));
            stubs::answer(200, "{}")
        }
    })
    .await;
    (format!("{url}/hooks/jobs"), seen)
}

fn alerting(url: &str, threshold: &str) -> Vec<(&'static str, String)> {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    vec![
        ("JOBS_ALERT_WEBHOOK_URL", url.to_owned()),
        ("JOBS_ALERT_SECRET", SECRET.to_owned()),
        ("JOBS_ALERT_GROUP_THRESHOLD", threshold.to_owned()),
        ("JOBS_WEBHOOK_ALLOWED_HOSTS", host),
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
    ]
}

fn env<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The alerts received, each checked against its signature as a receiver would check it.
fn verified(seen: &Mutex<Vec<(String, String)>>) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(body, signature)| {
            let (t, v1) = signature
                .strip_prefix("t=")
                .and_then(|rest| rest.split_once(",v1="))
                .unwrap_or_else(|| panic!("signature {signature:?}"));
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            let expected: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(v1, expected, "the signature of {body}");
            let age = DateTime::now().timestamp_millis() / 1000 - t.parse::<i64>().unwrap();
            assert!((0..60).contains(&age), "a fresh timestamp: {t}");
            serde_json::from_str(body).unwrap()
        })
        .collect()
}

async fn wait_for_alerts(seen: &Mutex<Vec<(String, String)>>, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything more would have come by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    verified(seen)
}

/// A service without alerts, and the error group of a failure it wrote (the demo's).
async fn a_known_cause(user: &str) -> (Service, String) {
    let quiet = Service::start().await;
    let probe = quiet.failed_task(user, 5, 3).await;
    let group = quiet.error_group(&probe).await;
    (quiet, group)
}

/// Marks `group` as seen, as a failure of the last 30 days would have.
async fn known(jobs: &Service, group: &str) {
    let alerts = jobs
        .tasks
        .client()
        .database(&jobs.db_name)
        .collection("alerts");
    alerts
        .insert_one(doc! { "_id": format!("known:{group}"), "at": DateTime::now() })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_error_group_alerts_once_signed_with_a_slack_ready_text() {
    let (url, seen) = receiver().await;
    let settings = alerting(&url, "10");
    let jobs = Service::start_with(&env(&settings)).await;
    let first = jobs.failed_task("ann", 5, 3).await;
    let second = jobs.failed_task("bob", 5, 3).await;
    let alerts = wait_for_alerts(&seen, 1).await;
    assert_eq!(
        alerts.len(),
        1,
        "one alert for the group's window: {alerts:?}"
    );
    let alert = &alerts[0];
    assert_eq!(alert["kind"], "new_group");
    let group = jobs.error_group(&first).await;
    assert_eq!(alert["group"], group.as_str());
    assert_eq!(alert["template"], "Simulated failure on attempt <n>");
    assert_eq!(alert["task"]["taskId"], first.as_str());
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .starts_with("New failure in jobs: \"Simulated failure on attempt &lt;n&gt;\"")
    );
    assert_eq!(alert["windowMinutes"], 60);
    assert_eq!(jobs.state(&second).await.0, "failed");
}

#[tokio::test]
async fn a_task_failing_with_no_retries_left_alerts() {
    let (url, seen) = receiver().await;
    let settings = alerting(&url, "10");
    // The group is known already: its failure is no news, but this task is done for.
    let (quiet, group) = a_known_cause("cal").await;
    let jobs = quiet.start_sharing_db(&env(&settings)).await;
    known(&jobs, &group).await;
    let retriable = jobs.failed_task("cal", 5, 3).await;
    assert!(
        wait_for_alerts(&seen, 1).await.is_empty(),
        "a failure with retries left is no alert"
    );
    let exhausted = jobs.failed_task("cal", 5, 0).await;
    let alerts = wait_for_alerts(&seen, 1).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "retries_exhausted");
    assert_eq!(alerts[0]["task"]["taskId"], exhausted.as_str());
    assert!(
        alerts[0]["text"]
            .as_str()
            .unwrap()
            .contains("failed with no retries left")
    );
    assert_eq!(jobs.state(&retriable).await.0, "failed");
}

/// Failures on two instances count together; the one that passes the threshold sends, once.
#[tokio::test]
async fn a_group_past_its_threshold_alerts_once_across_instances() {
    let (url, seen) = receiver().await;
    let settings = alerting(&url, "2");
    let (quiet, group) = a_known_cause("dee").await;
    let one = quiet.start_sharing_db(&env(&settings)).await;
    let two = quiet.start_sharing_db(&env(&settings)).await;
    known(&one, &group).await;
    let failing = json!({ "steps": 1, "stepMs": 0, "failAttempts": 5 });
    let mut tasks = Vec::new();
    for (n, jobs) in [&one, &two, &one, &two, &one].into_iter().enumerate() {
        let reply = jobs
            .post("create", json!({ "type": "demo", "userId": format!("u{n}"), "payload": failing, "maxRetries": 3 }))
            .await;
        tasks.push(reply.task_id());
    }
    for task in &tasks {
        one.wait_for_status(task, "failed").await;
    }
    let alerts = wait_for_alerts(&seen, 1).await;
    assert_eq!(alerts.len(), 1, "one alert for the window: {alerts:?}");
    assert_eq!(alerts[0]["kind"], "group_threshold");
    assert_eq!(alerts[0]["failuresInWindow"], 3);
    assert!(
        alerts[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("3 failures of \"Simulated failure on attempt &lt;n&gt;\"")
    );
}

/// An alert the receiver refused is not lost: the window's next failure sends it.
#[tokio::test]
async fn a_refused_alert_is_sent_by_the_next_failure_of_its_window() {
    let (url, seen) = refusing_first(1).await;
    let settings = alerting(&url, "10");
    let jobs = Service::start_with(&env(&settings)).await;
    jobs.failed_task("fay", 5, 3).await;
    for _ in 0..100 {
        if jobs.logs().contains("alert not delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(wait_for_alerts(&seen, 1).await.is_empty(), "refused");
    let second = jobs.failed_task("fay", 5, 3).await;
    let alerts = wait_for_alerts(&seen, 1).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "new_group", "still news in its window");
    assert_eq!(alerts[0]["task"]["taskId"], second.as_str());
    jobs.failed_task("fay", 5, 3).await;
    assert_eq!(wait_for_alerts(&seen, 2).await.len(), 1, "sent once");
}

/// An alert URL that is down, or not allow-listed, changes nothing about the failure.
#[tokio::test]
async fn an_alert_that_cannot_be_sent_never_gets_in_the_way_of_the_failure() {
    let down = format!("http://127.0.0.1:{}/hooks", crate::support::closed_port());
    let (listed, seen) = receiver().await;
    let mut not_listed = alerting(&listed, "10");
    not_listed[3].1 = "elsewhere.example.com".into();
    for settings in [alerting(&down, "10"), not_listed] {
        let jobs = Service::start_with(&env(&settings)).await;
        let task = jobs.failed_task("eve", 5, 0).await;
        assert_eq!(jobs.state(&task).await.0, "failed");
        for _ in 0..100 {
            if jobs.logs().contains("alert not delivered") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            jobs.logs().contains("alert not delivered"),
            "{}",
            jobs.logs()
        );
    }
    assert!(seen.lock().unwrap().is_empty());
}
