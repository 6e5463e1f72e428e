//! Vercel's platform rules (docs/spec.md §6, 7 and 9): deployed start-up checks, the
//! Deployment Protection bypass on every hand-off, one normalised URL for publishing and
//! verifying, and signed QStash schedules calling `sweep`.

use serde_json::json;

use crate::qstash_emulator::{
    DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN, QStash, sign,
};
use crate::stubs::{OnProcess, Protection, Proxy, Recorder, Redirect};
use crate::support::{AUDIENCE, Service, free_port, user_token};

const SECRET: &str = "platform-auth-secret";

/// A deployed preview with every setting it needs, QStash included.
fn complete_preview(qstash_url: &str) -> Vec<(&'static str, String)> {
    [
        ("VERCEL_ENV", "preview"),
        ("VERCEL_URL", "app-git-x.vercel.app"),
        ("JOBS_AUTH_SECRET", SECRET),
        ("JOBS_AUTH_AUDIENCE", AUDIENCE),
        ("CRON_SECRET", "cron"),
        ("QSTASH_TOKEN", DEV_TOKEN),
        ("QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT_SIGNING_KEY),
        ("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT_SIGNING_KEY),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .chain([("QSTASH_URL", qstash_url.to_owned())])
    .collect()
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Each deployed setting, removed in turn (an empty value counts as unset): `health` answers
/// 503 naming exactly that one; complete, it answers 200.
#[tokio::test]
async fn health_names_each_missing_deployed_setting() {
    let qstash = QStash::start().await;
    let rows: [Option<&'static str>; 7] = [
        None,
        Some("JOBS_AUTH_SECRET"),
        Some("CRON_SECRET"),
        Some("JOBS_AUTH_AUDIENCE"),
        Some("QSTASH_CURRENT_SIGNING_KEY"),
        Some("QSTASH_NEXT_SIGNING_KEY"),
        Some("MONGODB_URI"),
    ];
    for unset in rows {
        let mut env = complete_preview(&qstash.url);
        env.extend(unset.map(|name| (name, String::new())));
        let jobs = Service::start_with(&refs(&env)).await;
        let health = jobs.get("action=health").await;
        let Some(missing) = unset else {
            assert_eq!(health.status, 200, "complete: {}", health.body);
            assert_eq!(health.body["ok"], true);
            continue;
        };
        assert_eq!(health.status, 503, "{missing}: {}", health.body);
        assert_eq!(health.body["ok"], false, "{missing}");
        assert_eq!(health.body["code"], "MISCONFIGURED", "{missing}");
        assert_eq!(health.body["missing"], json!([missing]), "{missing}");
        assert!(
            jobs.logs().contains(&format!("variable=\"{missing}\"")),
            "{missing}: one error line names it:\n{}",
            jobs.logs()
        );
    }
}

/// Today's bug: a deployed function without `MONGODB_URI` quietly used localhost.
#[tokio::test]
async fn deployed_without_mongodb_uri_refuses_instead_of_using_localhost() {
    let qstash = QStash::start().await;
    let mut env = complete_preview(&qstash.url);
    env.push(("MONGODB_URI", String::new()));
    let jobs = Service::start_with(&refs(&env)).await;
    let reply = jobs
        .send(
            jobs.request(reqwest::Method::GET, "action=list")
                .bearer_auth(user_token(SECRET, "alice", 300)),
        )
        .await;
    assert_eq!(
        (reply.status, &reply.body),
        (
            500,
            &json!({ "error": "The service is misconfigured: MONGODB_URI is not set", "code": "MISCONFIGURED" })
        )
    );
}

/// Deployed with QStash but no URL at all: a signature cannot be checked against anything,
/// so even a well-signed delivery is refused.
#[tokio::test]
async fn a_signature_without_a_url_to_check_is_refused() {
    let jobs = Service::start_with(&[
        ("NODE_ENV", "production"),
        ("QSTASH_TOKEN", DEV_TOKEN),
        ("QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT_SIGNING_KEY),
        ("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT_SIGNING_KEY),
    ])
    .await;
    let body = json!({ "taskId": "t-1" }).to_string();
    for url in [
        "http://localhost:3000/api/jobs?action=process".to_owned(),
        format!("{}/api/jobs?action=process", jobs.base),
    ] {
        let reply = jobs
            .send(
                jobs.request(reqwest::Method::POST, "action=process")
                    .header(
                        "upstash-signature",
                        sign(DEV_CURRENT_SIGNING_KEY, &url, body.as_bytes()),
                    )
                    .body(body.clone()),
            )
            .await;
        assert_eq!(reply.status, 401, "{url}: {}", reply.body);
    }
}

/// docs/spec.md §7's configuration error is what a user sees: 500 MISCONFIGURED with the
/// sentence, and nothing is left `queued` (nor written at all).
#[tokio::test]
async fn qstash_in_development_without_a_base_url_refuses_create_and_retry() {
    const SENTENCE: &str =
        "QStash is enabled in development, but QSTASH_BASE_URL (your ngrok URL) is not set.";
    let plain = Service::start().await;
    let failed = plain.failed_task("alice", 1, 3).await;
    let before = plain.snapshot().await;

    let qstash = QStash::start().await;
    let mut env = qstash.env("");
    env.retain(|(k, _)| *k != "QSTASH_BASE_URL");
    let jobs = plain.start_sharing_db(&refs(&env)).await;
    let expected = json!({ "error": SENTENCE, "code": "MISCONFIGURED" });
    let create = jobs
        .post("create", json!({ "type": "demo", "userId": "alice" }))
        .await;
    assert_eq!((create.status, &create.body), (500, &expected));
    let retry = jobs.retry(&failed, "alice").await;
    assert_eq!((retry.status, &retry.body), (500, &expected));
    assert_eq!(jobs.snapshot().await, before, "nothing was written");
    assert!(qstash.published().is_empty());

    let health = jobs.get("action=health").await;
    assert_eq!(health.status, 503);
    assert_eq!(
        (&health.body["code"], &health.body["error"]),
        (&json!("MISCONFIGURED"), &json!(SENTENCE))
    );
}

/// Deployment Protection: with `VERCEL_AUTOMATION_BYPASS_SECRET` set, a self-invocation
/// carries `x-vercel-protection-bypass`, and a QStash publish asks QStash to forward it.
#[tokio::test]
async fn the_protection_bypass_travels_with_every_handoff() {
    let recorder = Recorder::start().await;
    let jobs = Service::start_with(&[
        ("JOBS_PUBLIC_URL", &recorder.url),
        ("JOBS_INTERNAL_SECRET", "internal-1"),
        ("VERCEL_AUTOMATION_BYPASS_SECRET", "bypass-123"),
    ])
    .await;
    let create = jobs
        .post("create", json!({ "type": "demo", "userId": "alice" }))
        .await;
    assert_eq!(create.status, 201, "{}", create.body);
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["x-vercel-protection-bypass"], "bypass-123");
    assert_eq!(seen[0]["x-jobs-internal-secret"], "internal-1");

    let qstash = QStash::start().await;
    let port = free_port();
    let mut env = qstash.env(&format!("http://127.0.0.1:{port}"));
    env.push(("VERCEL_AUTOMATION_BYPASS_SECRET", "bypass-123".into()));
    let jobs = Service::start_on(
        port,
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &refs(&env),
    )
    .await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&id, "completed").await;
    let published = qstash.published();
    assert_eq!(
        published[0].headers["upstash-forward-x-vercel-protection-bypass"],
        "bypass-123"
    );
    assert!(jobs.logs().contains("task dispatched") && !jobs.logs().contains("bypass-123"));
}

/// The `url` crate lower-cases a host: QStash's client publishes to the normalised URL and
/// signs that, so `process` must check the signature against the same string.
#[tokio::test]
async fn a_mixed_case_base_url_is_published_and_verified_as_one_string() {
    let qstash = QStash::start().await;
    let port = free_port();
    let env = qstash.env(&format!("http://LocalHost:{port}/"));
    let jobs = Service::start_on(
        port,
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &refs(&env),
    )
    .await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&id, "completed").await;
    assert_eq!(
        qstash.published()[0].destination,
        format!("http://localhost:{port}/api/jobs?action=process")
    );
}

/// On Hobby, sweeping more often than daily is a QStash schedule calling `sweep` (method
/// GET): its signature is accepted for the sweep URL, a forged or misdirected one is not.
#[tokio::test]
async fn sweep_accepts_a_signed_qstash_schedule() {
    let qstash = QStash::start().await;
    let mut env = complete_preview(&qstash.url);
    env.push(("JOBS_PUBLIC_URL", "https://jobs.example.com".into()));
    let jobs = Service::start_with(&refs(&env)).await;
    let sweep_url = "https://jobs.example.com/api/jobs?action=sweep";
    let rows = [
        (sign(DEV_CURRENT_SIGNING_KEY, sweep_url, b""), 200),
        (sign(DEV_NEXT_SIGNING_KEY, sweep_url, b""), 200),
        (sign("sig_forged", sweep_url, b""), 401),
        (
            sign(
                DEV_CURRENT_SIGNING_KEY,
                "https://jobs.example.com/api/jobs?action=process",
                b"",
            ),
            401,
        ),
    ];
    for (signature, status) in rows {
        let reply = jobs
            .send(
                jobs.request(reqwest::Method::GET, "action=sweep")
                    .header("upstash-signature", signature),
            )
            .await;
        assert_eq!(reply.status, status, "{}", reply.body);
    }
    let cron = jobs
        .send(
            jobs.request(reqwest::Method::GET, "action=sweep")
                .bearer_auth("cron"),
        )
        .await;
    assert_eq!(cron.status, 200, "Vercel Cron's bearer still works");
}

/// An invalid value no longer stops the process before it serves: it starts, every action
/// answers 503 `MISCONFIGURED` before reading or writing anything, and `health` names each
/// variable with the rule it broke.
#[tokio::test]
async fn an_invalid_setting_starts_and_refuses_every_action() {
    let qstash = QStash::start().await;
    let mut env = complete_preview(&qstash.url);
    env.push(("JOBS_LEASE_SECONDS", "10".into()));
    env.push(("JOBS_PUBLIC_URL", "notaurl".into()));
    let jobs = Service::start_with(&refs(&env)).await;

    let health = jobs.get("action=health").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.body["ok"], false);
    assert_eq!(health.body["code"], "MISCONFIGURED");
    assert_eq!(
        health.body["invalid"],
        json!([
            {
                "variable": "JOBS_PUBLIC_URL",
                "problem": "expected an http(s) base URL (relative URL without a base), got \"notaurl\""
            },
            {
                "variable": "JOBS_LEASE_SECONDS",
                "problem": "expected a whole number in 30..=86400, got \"10\""
            },
        ])
    );
    let error = "The service is misconfigured: JOBS_PUBLIC_URL: expected an http(s) base URL \
                 (relative URL without a base), got \"notaurl\"; JOBS_LEASE_SECONDS: expected a \
                 whole number in 30..=86400, got \"10\"";
    assert_eq!(health.body["error"], error);

    let token = user_token(SECRET, "alice", 300);
    let user_body = json!({ "type": "demo", "taskId": "t-1" });
    let calls = [
        (
            reqwest::Method::POST,
            "action=create",
            json!({ "type": "demo" }),
        ),
        (reqwest::Method::GET, "action=get&taskId=t-1", json!(null)),
        (reqwest::Method::GET, "action=list", json!(null)),
        (reqwest::Method::GET, "action=groups", json!(null)),
        (
            reqwest::Method::POST,
            "action=retry",
            json!({ "taskId": "t-1" }),
        ),
        (
            reqwest::Method::POST,
            "action=retryMany",
            json!({ "taskIds": ["t-1"] }),
        ),
        (
            reqwest::Method::POST,
            "action=cancel",
            json!({ "taskId": "t-1" }),
        ),
        (
            reqwest::Method::POST,
            "action=process",
            json!({ "taskId": "t-1" }),
        ),
        (reqwest::Method::POST, "action=deliveryFailed", user_body),
        (reqwest::Method::GET, "action=sweep", json!(null)),
    ];
    for (method, query, body) in calls {
        let mut request = jobs.request(method.clone(), query).bearer_auth(&token);
        if method == reqwest::Method::POST {
            request = request.json(&body);
        }
        let reply = jobs.send(request).await;
        assert_eq!(
            (reply.status, &reply.body),
            (503, &json!({ "error": error, "code": "MISCONFIGURED" })),
            "{query}"
        );
    }
    assert!(jobs.snapshot().await.is_empty(), "nothing was written");
    for variable in ["JOBS_LEASE_SECONDS", "JOBS_PUBLIC_URL"] {
        assert!(
            jobs.logs().contains(&format!("variable=\"{variable}\"")),
            "one error line names {variable}:\n{}",
            jobs.logs()
        );
    }
}

/// The production domain redirecting (apex to www): hand-offs do not follow redirects, so
/// every one would fail. Deployed, `health` probes the destination once per process and
/// answers 503 `MISCONFIGURED` naming `JOBS_PUBLIC_URL` and where it redirects.
#[tokio::test]
async fn a_redirecting_destination_is_misconfigured() {
    let www = Redirect::start(308, "https://www.example.com").await;
    let qstash = QStash::start().await;
    let mut env = complete_preview(&qstash.url);
    env.push(("JOBS_PUBLIC_URL", www.url.clone()));
    env.push(("VERCEL_AUTOMATION_BYPASS_SECRET", "bypass-9".into()));
    let jobs = Service::start_with(&refs(&env)).await;
    let health = jobs.get("action=health").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.body["code"], "MISCONFIGURED");
    let error = health.body["error"].as_str().unwrap();
    assert!(
        error.contains("JOBS_PUBLIC_URL")
            && error.contains("HTTP 308")
            && error.contains("https://www.example.com/api/jobs?action=health"),
        "{error}"
    );
    assert_eq!(
        health.body["probe"],
        json!({
            "url": format!("{}/api/jobs?action=health", www.url),
            "status": 308,
            "location": "https://www.example.com/api/jobs?action=health"
        })
    );
    let again = jobs.get("action=health").await;
    assert_eq!((again.status, &again.body), (503, &health.body));
    let probes = *www.hits.lock().unwrap();
    assert_eq!(
        probes, 3,
        "a redirect may be fixed without a redeploy: asked again by each health (the start-up \
         wait's included)"
    );

    // A protected destination without the bypass, and a URL that is not this service.
    let protected = Protection::start("http://127.0.0.1:9", "bypass-9").await;
    let nothing_here = Redirect::start(404, "").await;
    for (destination, names) in [
        (&protected.url, "VERCEL_AUTOMATION_BYPASS_SECRET"),
        (&nothing_here.url, "JOBS_PUBLIC_URL"),
    ] {
        let mut env = complete_preview(&qstash.url);
        env.push(("JOBS_PUBLIC_URL", destination.clone()));
        let jobs = Service::start_with(&refs(&env)).await;
        let health = jobs.get("action=health").await;
        assert_eq!(health.status, 503, "{}", health.body);
        assert_eq!(health.body["code"], "MISCONFIGURED");
        let error = health.body["error"].as_str().unwrap();
        assert!(error.contains(names), "{error}");
    }

    // The destination answering: health is ok, the probe's answer shown.
    let own = free_port();
    let mut env = complete_preview(&qstash.url);
    env.push(("JOBS_PUBLIC_URL", format!("http://127.0.0.1:{own}")));
    let jobs = Service::start_on(own, jobs.db_name.clone(), &refs(&env)).await;
    let health = jobs.get("action=health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["probe"]["status"], 200);
}

/// Deployment Protection refuses whatever does not carry the bypass, QStash's failure callback
/// included: the publish asks QStash to forward the bypass to the callback too, so a task whose
/// deliveries all fail is failed at once on a protected deployment as well.
#[tokio::test]
async fn the_failure_callback_carries_the_protection_bypass() {
    let qstash = QStash::start().await;
    let port = free_port();
    let refuse = Proxy::start(&format!("http://127.0.0.1:{port}"), OnProcess::Refuse).await;
    let protection = Protection::start(&refuse.url, "bypass-123").await;
    let mut env = qstash.env(&protection.url);
    env.push(("VERCEL_AUTOMATION_BYPASS_SECRET", "bypass-123".into()));
    env.push(("JOBS_QSTASH_RETRIES", "0".into()));
    let jobs = Service::start_on(
        port,
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &refs(&env),
    )
    .await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while qstash.callbacks().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let callbacks = qstash.callbacks();
    assert_eq!(callbacks.len(), 1, "QStash gave up and called back");
    assert_eq!(
        callbacks[0].status,
        Some(200),
        "the callback passed Deployment Protection: {:?}",
        protection.seen.lock().unwrap()
    );
    let task = jobs.wait_for_status(&id, "failed").await;
    assert_eq!(
        task.get_str("lastError").unwrap(),
        "Delivery failed after 1 attempts (HTTP 500)."
    );
    assert_eq!(
        qstash.published()[0].headers["upstash-failure-callback-forward-x-vercel-protection-bypass"],
        "bypass-123"
    );
    assert!(!jobs.logs().contains("bypass-123"));
}

/// A deployment missing what deliveries or the rescuer need (the QStash signing key, the cron
/// secret) would queue tasks that can never run: `create` is refused before anything is
/// written, naming the setting, instead of answering 201 `queued`.
#[tokio::test]
async fn a_deployment_that_cannot_run_tasks_refuses_to_queue_them() {
    let qstash = QStash::start().await;
    for unset in ["QSTASH_CURRENT_SIGNING_KEY", "CRON_SECRET"] {
        let mut env = complete_preview(&qstash.url);
        env.push((unset, String::new()));
        let jobs = Service::start_with(&refs(&env)).await;
        let reply = jobs
            .send(
                jobs.request(reqwest::Method::POST, "action=create")
                    .bearer_auth(user_token(SECRET, "alice", 300))
                    .json(&json!({ "type": "demo" })),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body["code"].as_str()),
            (500, Some("MISCONFIGURED")),
            "{unset}: {}",
            reply.body
        );
        assert!(
            reply.body["error"].as_str().unwrap().contains(unset),
            "{}",
            reply.body
        );
        assert!(jobs.snapshot().await.is_empty(), "{unset}: nothing written");
        assert!(qstash.published().is_empty(), "{unset}: nothing published");
    }
}
