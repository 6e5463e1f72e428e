//! A QStash emulator following docs/spec.md §10 closely enough that the production code cannot
//! tell: `POST /v2/publish/<destination>` with a bearer token, `{"messageId"}` answers, a
//! deduplication window, delivery of the body byte-for-byte with `Upstash-Message-Id`,
//! `Upstash-Retried` and a real HS256 `Upstash-Signature`, redelivery on non-2xx, and, when
//! the retries are exhausted, the signed `Upstash-Failure-Callback` with QStash's documented
//! callback body.
//! It records what it received so tests can assert on headers and destinations.
//!
//! The token and signing keys are those of `npx @upstash/qstash-cli dev`, so the same
//! configuration works against the real development server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub const DEV_TOKEN: &str =
    "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=";
pub const DEV_CURRENT_SIGNING_KEY: &str = "sig_7RvLjqfZBvP5KEUimQCE1pvpLuou";
pub const DEV_NEXT_SIGNING_KEY: &str = "sig_7W3ZNbfKWk5NWwEs3U4ixuQ7fxwE";
const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Published {
    pub destination: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub message_id: String,
    pub deduplicated: bool,
}

/// A failure callback the emulator made after giving up on a message.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub body: serde_json::Value,
    /// The service's answer, or `None` when it could not be reached.
    pub status: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Delivered {
    pub message_id: String,
    pub destination: String,
    pub retried: u32,
    /// The destination's status, or `None` when it could not be reached.
    pub status: Option<u16>,
}

/// How the emulator behaves; tests change it between steps.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Answer publishes with this status instead of accepting them.
    pub publish_status: Option<u16>,
    /// Hold every publish this long before answering.
    pub publish_delay: Duration,
    /// Wait this long before the first delivery attempt.
    pub delivery_delay: Duration,
    /// Pause between delivery attempts of a message (QStash backs off; tests are quick).
    pub retry_delay: Duration,
    /// Deliver every message this many times (QStash is at-least-once).
    pub copies: u32,
    /// Sign deliveries with this key.
    pub signing_key: String,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            publish_status: None,
            publish_delay: Duration::ZERO,
            delivery_delay: Duration::ZERO,
            retry_delay: Duration::from_millis(50),
            copies: 1,
            signing_key: DEV_CURRENT_SIGNING_KEY.into(),
        }
    }
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    published: Vec<Published>,
    delivered: Vec<Delivered>,
    callbacks: Vec<Callback>,
    dedup: HashMap<String, (String, Instant)>,
}

pub struct QStash {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl QStash {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| publish(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, state, server }
    }

    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.lock().unwrap().behaviour);
    }

    pub fn published(&self) -> Vec<Published> {
        self.state.lock().unwrap().published.clone()
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.state.lock().unwrap().delivered.clone()
    }

    pub fn callbacks(&self) -> Vec<Callback> {
        self.state.lock().unwrap().callbacks.clone()
    }

    /// The environment that points `jobs` at this emulator, QStash enabled in development.
    pub fn env(&self, base_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("QSTASH_TOKEN", DEV_TOKEN.into()),
            ("QSTASH_URL", self.url.clone()),
            ("QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT_SIGNING_KEY.into()),
            ("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT_SIGNING_KEY.into()),
            ("USE_QSTASH_IN_DEV", "true".into()),
            ("QSTASH_BASE_URL", base_url.into()),
        ]
    }

    /// Stops accepting connections: QStash is down.
    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for QStash {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: u16, body: serde_json::Value) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

async fn publish(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(destination) = target.strip_prefix("/v2/publish/") else {
        return reply(404, json!({ "error": "not found" }));
    };
    let destination = destination.to_owned();
    if req.method() != hyper::Method::POST {
        return reply(405, json!({ "error": "method not allowed" }));
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {DEV_TOKEN}"));
    if !authorized {
        return reply(401, json!({ "error": "Unauthorized" }));
    }
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = state.lock().unwrap().behaviour.publish_delay;
    tokio::time::sleep(delay).await;

    let mut guard = state.lock().unwrap();
    if let Some(status) = guard.behaviour.publish_status {
        return reply(status, json!({ "error": "emulated failure" }));
    }
    let now = Instant::now();
    guard
        .dedup
        .retain(|_, (_, at)| now.duration_since(*at) < DEDUPLICATION_WINDOW);
    let existing = headers
        .get("upstash-deduplication-id")
        .and_then(|id| guard.dedup.get(id))
        .map(|(message_id, _)| message_id.clone());
    let deduplicated = existing.is_some();
    let message_id = existing.unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
    if let (false, Some(id)) = (deduplicated, headers.get("upstash-deduplication-id")) {
        guard.dedup.insert(id.clone(), (message_id.clone(), now));
    }
    guard.published.push(Published {
        destination: destination.clone(),
        headers: headers.clone(),
        body: body.clone(),
        message_id: message_id.clone(),
        deduplicated,
    });
    let behaviour = guard.behaviour.clone();
    drop(guard);

    if !deduplicated {
        let retries: u32 = headers
            .get("upstash-retries")
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        for _ in 0..behaviour.copies {
            let delivery = Delivery {
                state: state.clone(),
                message_id: message_id.clone(),
                destination: destination.clone(),
                headers: headers.clone(),
                body: body.clone(),
                retries,
                behaviour: behaviour.clone(),
            };
            tokio::spawn(delivery.run());
        }
    }
    let mut answer = json!({ "messageId": message_id });
    if deduplicated {
        answer["deduplicated"] = json!(true);
    }
    reply(201, answer)
}

struct Delivery {
    state: Arc<Mutex<State>>,
    message_id: String,
    destination: String,
    headers: HashMap<String, String>,
    body: Bytes,
    retries: u32,
    behaviour: Behaviour,
}

impl Delivery {
    async fn run(self) {
        tokio::time::sleep(self.behaviour.delivery_delay).await;
        let http = reqwest::Client::new();
        for retried in 0..=self.retries {
            let method = self
                .headers
                .get("upstash-method")
                .map_or("POST", String::as_str);
            let mut request = http
                .request(method.parse().unwrap(), &self.destination)
                .header("upstash-message-id", &self.message_id)
                .header("upstash-retried", retried.to_string())
                .header(
                    "upstash-signature",
                    sign(&self.behaviour.signing_key, &self.destination, &self.body),
                )
                .body(self.body.clone());
            if let Some(content_type) = self.headers.get("content-type") {
                request = request.header("content-type", content_type);
            }
            for (name, value) in &self.headers {
                if let Some(forwarded) = name.strip_prefix("upstash-forward-") {
                    request = request.header(forwarded, value);
                }
            }
            let response = request.send().await.ok();
            let status = response.as_ref().map(|r| r.status().as_u16());
            let answer = match response {
                Some(r) => r.bytes().await.unwrap_or_default(),
                None => Bytes::new(),
            };
            self.state.lock().unwrap().delivered.push(Delivered {
                message_id: self.message_id.clone(),
                destination: self.destination.clone(),
                retried,
                status,
            });
            if status.is_some_and(|s| (200..300).contains(&s)) {
                return;
            }
            if retried == self.retries {
                self.call_failure_callback(&http, status, &answer).await;
                return;
            }
            tokio::time::sleep(self.behaviour.retry_delay).await;
        }
    }

    /// QStash's failure callback, when the publish named one: a signed POST whose JSON body
    /// carries the last status, the destination's answer and the original body (base64).
    async fn call_failure_callback(
        &self,
        http: &reqwest::Client,
        status: Option<u16>,
        answer: &[u8],
    ) {
        let Some(url) = self.headers.get("upstash-failure-callback") else {
            return;
        };
        let body = json!({
            "status": status,
            "header": {},
            "body": STANDARD.encode(answer),
            "retried": self.retries,
            "maxRetries": self.retries,
            "sourceMessageId": self.message_id,
            "url": self.destination,
            "method": self.headers.get("upstash-method").map_or("POST", String::as_str),
            "sourceHeader": {},
            "sourceBody": STANDARD.encode(&self.body),
            "createdAt": SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
        });
        let bytes = body.to_string();
        let answered = http
            .post(url)
            .header("content-type", "application/json")
            .header(
                "upstash-signature",
                sign(&self.behaviour.signing_key, url, bytes.as_bytes()),
            )
            .body(bytes)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        self.state.lock().unwrap().callbacks.push(Callback {
            url: url.clone(),
            body,
            status: answered,
        });
    }
}

/// An `Upstash-Signature`: HS256 JWT over the destination URL and the body's SHA-256.
pub fn sign(key: &str, destination: &str, body: &[u8]) -> String {
    sign_with(key, destination, body, 0)
}

/// As [`sign`], issued `age` seconds ago (an old enough one is expired).
pub fn sign_with(key: &str, destination: &str, body: &[u8], age: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - age;
    let claims = json!({
        "iss": "Upstash",
        "sub": destination,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": format!("jwt_{}", uuid::Uuid::new_v4().simple()),
        "body": URL_SAFE_NO_PAD.encode(Sha256::digest(body)),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}
