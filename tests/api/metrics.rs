//! `metrics` (docs/spec.md §20): the OpenMetrics text, read from MongoDB so every instance
//! reports the same numbers, behind `JOBS_METRICS_TOKEN`.

use serde_json::json;

use crate::support::{Reply, Service};

const TOKEN: &str = "metrics-token-for-tests";

async fn scrape(jobs: &Service, token: Option<&str>) -> Reply {
    let mut request = jobs.request(reqwest::Method::GET, "action=metrics");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    jobs.send(request).await
}

/// The value of the sample named exactly `name` (labels included), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_are_off_without_a_token_and_refuse_a_wrong_one() {
    let off = Service::start().await;
    assert_eq!(
        scrape(&off, Some(TOKEN)).await.refusal(),
        (404, Some("METRICS_OFF"))
    );
    let on = Service::start_with(&[("JOBS_METRICS_TOKEN", TOKEN)]).await;
    assert_eq!(
        scrape(&on, None).await.refusal(),
        (401, Some("UNAUTHENTICATED"))
    );
    let wrong = scrape(&on, Some("not-the-token")).await;
    assert_eq!(wrong.refusal(), (401, Some("UNAUTHENTICATED")));
    assert_eq!(wrong.body["error"], "Invalid metrics token");
    // Never in the URL: a query parameter is no credential.
    let in_url = on.get(&format!("action=metrics&token={TOKEN}")).await;
    assert_eq!(in_url.status, 401);
}

#[tokio::test]
async fn metrics_count_every_users_tasks_from_the_database_on_any_instance() {
    let jobs = Service::start_with(&[("JOBS_METRICS_TOKEN", TOKEN)]).await;
    // Two users: a completed task, one failed for good, one failed then retried to completion.
    let done = jobs
        .create_demo("olga", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    let failed = jobs.failed_task("piet", 5, 0).await;
    let recovered = jobs.failed_task("piet", 1, 3).await;
    jobs.wait_for_status(&done, "completed").await;
    assert_eq!(jobs.retry(&recovered, "piet").await.status, 200);
    jobs.wait_for_status(&recovered, "completed").await;
    let group = jobs.error_group(&failed).await;

    let reply = scrape(&jobs, Some(TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = reply.body.as_str().unwrap().to_owned();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let expected = [
        ("jobs_tasks{status=\"completed\",type=\"demo\"}", 2.0),
        ("jobs_tasks{status=\"failed\",type=\"demo\"}", 1.0),
        (&*format!("jobs_failed_by_group{{group=\"{group}\"}}"), 1.0),
        ("jobs_retries_total", 1.0),
        ("jobs_retry_success_ratio", 1.0),
        ("jobs_oldest_queued_seconds", 0.0),
    ];
    for (name, value) in expected {
        assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
    }
    let p50 = sample(&text, "jobs_attempt_duration_seconds{quantile=\"0.5\"}").expect(&text);
    let p95 = sample(&text, "jobs_attempt_duration_seconds{quantile=\"0.95\"}").expect(&text);
    assert!((0.0..5.0).contains(&p50) && p50 <= p95, "{p50} {p95}");
    for help in [
        "# HELP jobs_tasks ",
        "# TYPE jobs_retries counter",
        "# TYPE jobs_tasks gauge",
    ] {
        assert!(text.contains(help), "{help} in:\n{text}");
    }

    // Another instance on the same database reports the same tasks.
    let other = jobs
        .start_sharing_db(&[("JOBS_METRICS_TOKEN", TOKEN)])
        .await;
    let there = scrape(&other, Some(TOKEN))
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sample(&there, "jobs_tasks{status=\"completed\",type=\"demo\"}"),
        Some(2.0)
    );
}
