//! Hardening: the `demo` work budget, the `webhook` processor's SSRF and header rules and the
//! redaction of its header values in API output, and the user-token time, issuer and audience
//! checks.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::Service;

// ---- demo: the work budget -------------------------------------------------------------------

#[tokio::test]
async fn demo_work_above_the_budget_is_refused_naming_the_budget() {
    let jobs = Service::start().await;
    let over = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice", "payload": { "steps": 60, "stepMs": 5000 } }),
        )
        .await;
    assert_eq!(over.status, 400, "{}", over.body);
    assert_eq!(over.body["code"], "INVALID_PAYLOAD");
    assert_eq!(
        over.body["error"],
        "Invalid payload: steps * stepMs is 300000 ms, above the work budget of 240 s \
         (JOBS_WORK_BUDGET_SECONDS)"
    );
    assert!(jobs.snapshot().await.is_empty(), "nothing stored");

    // Exactly the budget is accepted (cancelled at once: it would run for four minutes).
    let at_budget = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice", "payload": { "steps": 48, "stepMs": 5000 } }),
        )
        .await;
    assert_eq!(at_budget.status, 201, "{}", at_budget.body);
    jobs.post(
        "cancel",
        json!({ "taskId": at_budget.task_id(), "userId": "alice" }),
    )
    .await;
}

#[tokio::test]
async fn the_work_budget_comes_from_jobs_work_budget_seconds() {
    let jobs = Service::start_with(&[("JOBS_WORK_BUDGET_SECONDS", "1")]).await;
    let over = jobs
        .post(
            "create",
            json!({ "type": "demo", "userId": "alice", "payload": { "steps": 10, "stepMs": 101 } }),
        )
        .await;
    assert_eq!(over.status, 400, "{}", over.body);
    assert_eq!(
        over.body["error"],
        "Invalid payload: steps * stepMs is 1010 ms, above the work budget of 1 s \
         (JOBS_WORK_BUDGET_SECONDS)"
    );
    let id = jobs
        .create_demo("alice", json!({ "steps": 10, "stepMs": 100 }))
        .await;
    jobs.wait_for_status(&id, "completed").await;
}

// ---- webhook ---------------------------------------------------------------------------------

/// One request as the stub received it.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A webhook receiver on 127.0.0.1 that records every request and answers 200 (503 to the
/// first `failing` ones).
struct Stub {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Stub {
    async fn start() -> Self {
        Self::failing_first(0).await
    }

    async fn failing_first(failing: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let handle = move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let seen = {
                            let mut received = shared.lock().unwrap();
                            received.push(Received { headers, body });
                            received.len()
                        };
                        let status = if seen <= failing { 503 } else { 200 };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                };
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle)),
                );
            }
        });
        Self { port, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn create_webhook(jobs: &Service, payload: Value) -> crate::support::Reply {
    jobs.post(
        "create",
        json!({ "type": "webhook", "userId": "alice", "payload": payload }),
    )
    .await
}

/// The local stub is reachable only with private networks allowed and `127.0.0.1:<port>`
/// listed; the call carries the user's headers but not `Host` or the hop-by-hop and framing
/// ones, and `get` and `list` never show a header value.
#[tokio::test]
async fn webhook_drops_framing_headers_and_never_shows_header_values() {
    let stub = Stub::start().await;
    let listed = format!("127.0.0.1:{}", stub.port);
    let jobs = Service::start_with(&[
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("JOBS_WEBHOOK_ALLOWED_HOSTS", &listed),
    ])
    .await;
    let created = create_webhook(
        &jobs,
        json!({
            "url": format!("http://{listed}/hook"),
            "body": { "hello": "world" },
            "headers": {
                "Authorization": "Bearer xyz-secret-token",
                "X-Custom": "kept-value",
                "Host": "internal.example",
                "Connection": "upgrade",
                "Keep-Alive": "timeout=99",
                "Proxy-Authorization": "Basic cHJveHk=",
                "TE": "trailers",
                "Trailer": "X-Smuggled",
                "Transfer-Encoding": "chunked",
                "Upgrade": "websocket",
                "Content-Length": "1"
            }
        }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.task_id();
    jobs.wait_for_status(&id, "completed").await;

    let received = stub.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let call = &received[0];
    assert_eq!(call.header("authorization"), ["Bearer xyz-secret-token"]);
    assert_eq!(call.header("x-custom"), ["kept-value"]);
    assert_eq!(call.header("host"), [listed.as_str()]);
    assert_eq!(call.body.as_ref(), br#"{"hello":"world"}"#);
    assert_eq!(
        call.header("content-length"),
        [call.body.len().to_string().as_str()]
    );
    for dropped in [
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(call.header(dropped).is_empty(), "{dropped}: {call:?}");
    }
    assert!(!call.header("connection").contains(&"upgrade"), "{call:?}");

    // API output: the names are there, no value is.
    let got = jobs
        .get(&format!("action=get&taskId={id}&userId=alice"))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let headers = &got.body["task"]["payload"]["headers"];
    assert_eq!(headers["Authorization"], "[redacted]", "{}", got.body);
    assert_eq!(headers["X-Custom"], "[redacted]", "{}", got.body);
    assert_eq!(got.body["task"]["result"], json!({ "status": 200 }));
    assert_eq!(
        got.body["task"]["payload"]["url"],
        format!("http://{listed}/hook")
    );
    let listed_tasks = jobs.get("action=list&userId=alice").await;
    assert_eq!(listed_tasks.status, 200, "{}", listed_tasks.body);
    for reply in [&got, &listed_tasks] {
        let text = reply.body.to_string();
        assert!(
            !text.contains("xyz-secret-token") && !text.contains("kept-value"),
            "{text}"
        );
    }
    // The stored payload keeps the real value, so a retry sends it again.
    let stored = jobs.task(&id).await;
    let stored_headers = stored
        .get_document("payload")
        .unwrap()
        .get_document("headers")
        .unwrap();
    assert_eq!(
        stored_headers.get_str("Authorization"),
        Ok("Bearer xyz-secret-token")
    );
}

/// A retried webhook task sends its real header values again (redaction is output only).
#[tokio::test]
async fn a_retried_webhook_sends_its_real_header_values() {
    let stub = Stub::failing_first(1).await;
    let listed = format!("127.0.0.1:{}", stub.port);
    let jobs = Service::start_with(&[
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("JOBS_WEBHOOK_ALLOWED_HOSTS", &listed),
    ])
    .await;
    let created = create_webhook(
        &jobs,
        json!({
            "url": format!("http://{listed}/hook"),
            "method": "GET",
            "headers": { "Authorization": "Bearer again-secret" }
        }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.task_id();
    let failed = jobs.wait_for_status(&id, "failed").await;
    assert_eq!(failed.get_str("lastError"), Ok("Webhook answered HTTP 503"));
    let retried = jobs.retry(&id, "alice").await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    jobs.wait_for_status(&id, "completed").await;
    let received = stub.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for call in &received {
        assert_eq!(call.header("authorization"), ["Bearer again-secret"]);
    }
}

/// Without `JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS`, an IP literal that is not global is refused
/// at create; a name is resolved when the task runs, and one resolving to loopback fails the
/// task without calling it.
#[tokio::test]
async fn webhook_refuses_private_addresses_unless_allowed() {
    let stub = Stub::start().await;
    let hosts = format!("127.0.0.1:{0},localhost:{0},169.254.169.254", stub.port);
    let jobs = Service::start_with(&[("JOBS_WEBHOOK_ALLOWED_HOSTS", &hosts)]).await;

    for (url, kind) in [
        (format!("http://127.0.0.1:{}/", stub.port), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "link-local",
        ),
    ] {
        let refused = create_webhook(&jobs, json!({ "url": url })).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert_eq!(refused.body["code"], "INVALID_PAYLOAD");
        let host = url.split('/').nth(2).unwrap().split(':').next().unwrap();
        assert_eq!(
            refused.body["error"],
            format!(
                "Invalid payload: webhook host {host} is a {kind} address \
                 (set JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow)"
            )
        );
    }

    let created = create_webhook(
        &jobs,
        json!({ "url": format!("http://localhost:{}/", stub.port) }),
    )
    .await;
    assert_eq!(
        created.status, 201,
        "a name is checked when it runs: {}",
        created.body
    );
    let failed = jobs.wait_for_status(&created.task_id(), "failed").await;
    let error = failed.get_str("lastError").unwrap();
    assert!(
        error.starts_with("Refused: webhook host localhost resolves to ")
            && error.ends_with(
                ", a loopback address (set JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow)"
            ),
        "{error}"
    );
    assert!(stub.received().is_empty(), "the stub was never called");
}

/// Entries are `host[:port]`: without a port only the scheme's default port is allowed.
#[tokio::test]
async fn webhook_ports_must_be_listed() {
    let stub = Stub::start().await;
    let jobs = Service::start_with(&[
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        (
            "JOBS_WEBHOOK_ALLOWED_HOSTS",
            "127.0.0.1,hooks.example.com:8443",
        ),
    ])
    .await;
    let rows = [
        (
            format!("http://127.0.0.1:{}/", stub.port),
            format!(
                "Invalid payload: port {0} of host 127.0.0.1 is not allowed: \
                 JOBS_WEBHOOK_ALLOWED_HOSTS does not list 127.0.0.1:{0}",
                stub.port
            ),
        ),
        (
            "https://hooks.example.com/".to_owned(),
            "Invalid payload: port 443 of host hooks.example.com is not allowed: \
             JOBS_WEBHOOK_ALLOWED_HOSTS does not list hooks.example.com:443"
                .to_owned(),
        ),
        (
            "https://other.example.com/".to_owned(),
            "Invalid payload: host other.example.com is not in JOBS_WEBHOOK_ALLOWED_HOSTS"
                .to_owned(),
        ),
    ];
    for (url, message) in rows {
        let refused = create_webhook(&jobs, json!({ "url": url })).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert_eq!(refused.body["error"], message, "{url}");
    }
    let allowed = create_webhook(&jobs, json!({ "url": "https://hooks.example.com:8443/x" })).await;
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    assert!(stub.received().is_empty());
}

/// Header names and values that are not valid HTTP are refused at create, without echoing the
/// value; forbidden ones are accepted and dropped when sending.
#[tokio::test]
async fn webhook_headers_that_are_not_http_are_refused() {
    let jobs = Service::start_with(&[("JOBS_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com")]).await;
    for headers in [
        json!({ "Bad Name": "x" }),
        json!({ "X-Split": "secret-value\r\nX-Injected: 1" }),
    ] {
        let refused = create_webhook(
            &jobs,
            json!({ "url": "https://hooks.example.com/", "headers": headers }),
        )
        .await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(refused.body["code"], "INVALID_PAYLOAD");
        assert!(
            !refused.body.to_string().contains("secret-value"),
            "{}",
            refused.body
        );
    }
    let dropped = create_webhook(
        &jobs,
        json!({ "url": "https://hooks.example.com/", "headers": { "Host": "x", "Upgrade": "h2c" } }),
    )
    .await;
    assert_eq!(dropped.status, 201, "{}", dropped.body);
}

// ---- user tokens: times, issuer, audience ----------------------------------------------------

const SECRET: &str = "hardening-auth-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn list_with(jobs: &Service, token: &str) -> u16 {
    jobs.send(jobs.request(Method::GET, "action=list").bearer_auth(token))
        .await
        .status
}

#[tokio::test]
async fn token_nbf_and_exp_are_checked_with_a_30_s_leeway() {
    let jobs = Service::start_with(&[("JOBS_AUTH_SECRET", SECRET)]).await;
    let t = now();
    let rows = [
        (
            "nbf 60 s ahead",
            json!({ "sub": "alice", "exp": t + 600, "nbf": t + 60 }),
            401,
        ),
        (
            "nbf 20 s ahead",
            json!({ "sub": "alice", "exp": t + 600, "nbf": t + 20 }),
            200,
        ),
        (
            "nbf passed",
            json!({ "sub": "alice", "exp": t + 600, "nbf": t - 5 }),
            200,
        ),
        (
            "expired 20 s ago",
            json!({ "sub": "alice", "exp": t - 20 }),
            200,
        ),
        (
            "expired 60 s ago",
            json!({ "sub": "alice", "exp": t - 60 }),
            401,
        ),
        (
            "an audience, none configured",
            json!({ "sub": "alice", "exp": t + 600, "aud": "another-service", "iss": "anyone" }),
            200,
        ),
    ];
    for (name, claims, status) in rows {
        assert_eq!(list_with(&jobs, &token(claims)).await, status, "{name}");
    }
}

#[tokio::test]
async fn token_issuer_and_audience_are_pinned_when_configured() {
    let jobs = Service::start_with(&[
        ("JOBS_AUTH_SECRET", SECRET),
        ("JOBS_AUTH_ISSUER", "https://app.example.com"),
        ("JOBS_AUTH_AUDIENCE", "jobs"),
    ])
    .await;
    let exp = now() + 600;
    let iss = "https://app.example.com";
    let rows = [
        (
            "right iss and aud",
            json!({ "sub": "alice", "exp": exp, "iss": iss, "aud": "jobs" }),
            200,
        ),
        (
            "aud list containing it",
            json!({ "sub": "alice", "exp": exp, "iss": iss, "aud": ["jobs", "billing"] }),
            200,
        ),
        (
            "wrong iss",
            json!({ "sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "jobs" }),
            401,
        ),
        (
            "missing iss",
            json!({ "sub": "alice", "exp": exp, "aud": "jobs" }),
            401,
        ),
        (
            "wrong aud",
            json!({ "sub": "alice", "exp": exp, "iss": iss, "aud": "billing" }),
            401,
        ),
        (
            "missing aud",
            json!({ "sub": "alice", "exp": exp, "iss": iss }),
            401,
        ),
    ];
    for (name, claims, status) in rows {
        let reply = jobs
            .send(
                jobs.request(Method::GET, "action=list")
                    .bearer_auth(token(claims)),
            )
            .await;
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        if status == 401 {
            assert_eq!(reply.body["code"], "UNAUTHENTICATED", "{name}");
        }
    }
}
