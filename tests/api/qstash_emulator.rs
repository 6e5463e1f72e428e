//! A QStash emulator (docs/spec.md §10), close enough that the production code cannot tell:
//! `POST /v2/publish/<destination>` with a bearer token, `{"messageId"}` answers, a 600 s
//! deduplication window on `Upstash-Deduplication-Id`, delivery of the body byte-for-byte with
//! `Upstash-Message-Id`, `Upstash-Retried` and a real HS256 `Upstash-Signature` (signed with the
//! current key: `iss: "Upstash"`, `sub` = the destination URL, `iat`, `nbf`, `exp = iat + 300`,
//! `jti`, `body` = base64url SHA-256 of the raw body), redelivery on non-2xx, and, when the
//! retries are exhausted, the signed `Upstash-Failure-Callback` with QStash's documented
//! callback body (`status`, `header`, `body`, `retried`, `maxRetries`, `sourceMessageId`, `url`,
//! `method`, `sourceHeader`, `sourceBody` base64, `createdAt`), carrying each
//! `Upstash-Failure-Callback-Forward-<name>` header of the publish as `<name>` (as
//! `Upstash-Forward-<name>` is carried to the destination).
//!
//! Also `POST /v2/batch` (a JSON array of `{destination, headers, body, queue?}`, `body` a
//! plain string, `headers` the same `Upstash-*` headers a publish takes; answered with an
//! array of `{messageId}` / `{messageId, deduplicated: true}` / `{error}` in request order,
//! each message then handled exactly like a single publish), and the delivery time headers
//! `Upstash-Not-Before: <unix seconds>` and `Upstash-Delay: <n><s|m|h|d>` (Not-Before wins
//! when both are sent): the first attempt is not made before then, unless a test sets
//! `ignore_not_before`. A malformed batch is refused whole with 400.
//!
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

/// One message QStash accepted, from a publish or from an item of a batch.
#[derive(Debug, Clone)]
pub struct Published {
    pub destination: String,
    /// The message's headers, names lower-cased (a batch item's `headers` object, or the
    /// publish request's own headers).
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub message_id: String,
    pub deduplicated: bool,
    /// `Upstash-Not-Before` as requested (unix seconds).
    pub not_before: Option<u64>,
    /// `Upstash-Delay` as requested.
    pub delay: Option<Duration>,
    /// When the message came in a `POST /v2/batch`: the index of that request in
    /// [`QStash::batches`].
    pub batch: Option<usize>,
    /// A batch item's `queue`, when it named one (delivered like any other message here).
    pub queue: Option<String>,
}

/// One `POST /v2/batch` request the emulator accepted.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The batch request's own headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// The JSON array exactly as it was sent.
    pub items: serde_json::Value,
    /// The accepted messages, in request order (they are in [`QStash::published`] too).
    pub messages: Vec<Published>,
    /// The JSON array the emulator answered with.
    pub answer: serde_json::Value,
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
    /// When the attempt was made.
    pub at: SystemTime,
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
    /// Deliver at once, whatever `Upstash-Not-Before` says: a delivery that comes early (clock
    /// skew, a re-published message), which the destination must not lose.
    pub ignore_not_before: bool,
    /// Deliver this much before `Upstash-Not-Before`: the clock of QStash's deliverer ahead of
    /// the function's.
    pub early_by: Duration,
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
            ignore_not_before: false,
            early_by: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    published: Vec<Published>,
    batches: Vec<Batch>,
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
                    let service = service_fn(move |req| handle(state.clone(), req));
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

    /// Every `POST /v2/batch` request accepted, in order.
    pub fn batches(&self) -> Vec<Batch> {
        self.state.lock().unwrap().batches.clone()
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

type Reply = Result<Response<Full<Bytes>>, Infallible>;

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Reply {
    if req.uri().path() == "/v2/batch" {
        batch(state, req).await
    } else if req.uri().path().starts_with("/v2/publish/") {
        publish(state, req).await
    } else {
        reply(404, json!({ "error": "not found" }))
    }
}

/// What every QStash API request goes through: the method, the bearer token, then the
/// request's headers (names lower-cased) and body, after the emulated publish delay.
async fn receive(
    state: &Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<(HashMap<String, String>, Bytes), Response<Full<Bytes>>> {
    let refuse = |status: u16, error: &str| reply(status, json!({ "error": error })).unwrap();
    if req.method() != hyper::Method::POST {
        return Err(refuse(405, "method not allowed"));
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {DEV_TOKEN}"));
    if !authorized {
        return Err(refuse(401, "Unauthorized"));
    }
    let headers = lower_case(
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default())),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = state.lock().unwrap().behaviour.publish_delay;
    tokio::time::sleep(delay).await;
    if let Some(status) = state.lock().unwrap().behaviour.publish_status {
        return Err(refuse(status, "emulated failure"));
    }
    Ok((headers, body))
}

fn lower_case<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> HashMap<String, String> {
    headers
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

async fn publish(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Reply {
    let destination = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default()
        .strip_prefix("/v2/publish/")
        .unwrap_or_default()
        .to_owned();
    let (headers, body) = match receive(&state, req).await {
        Ok(received) => received,
        Err(refused) => return Ok(refused),
    };
    let message = match Message::new(destination, headers, body, None) {
        Ok(message) => message,
        Err(error) => return reply(400, json!({ "error": error })),
    };
    let published = accept(&state, &mut state.lock().unwrap(), message, None);
    reply(201, answer(&published))
}

/// `POST /v2/batch`: a JSON array of `{destination, headers?, body?, queue?}`. A malformed
/// request (not an array, an item without a string `destination`, a header value that is
/// not a string, a bad `Upstash-Delay` / `Upstash-Not-Before`) is refused whole with 400
/// and accepts nothing; otherwise every item is answered in order. A destination that is
/// not an http(s) URL would be a URL Group, which the emulator does not know: that item
/// alone is answered `{"error"}`, as QStash documents for a message that fails in a batch.
async fn batch(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Reply {
    let (headers, body) = match receive(&state, req).await {
        Ok(received) => received,
        Err(refused) => return Ok(refused),
    };
    let items: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(items) => items,
        Err(error) => return reply(400, json!({ "error": format!("invalid json: {error}") })),
    };
    let messages = match parse_batch(&items) {
        Ok(messages) => messages,
        Err(error) => return reply(400, json!({ "error": error })),
    };
    let mut guard = state.lock().unwrap();
    let index = guard.batches.len();
    let mut accepted = Vec::new();
    let mut answers = Vec::new();
    for message in messages {
        if !(message.destination.starts_with("http://")
            || message.destination.starts_with("https://"))
        {
            answers.push(json!({
                "error": format!("url group `{}` not found", message.destination)
            }));
            continue;
        }
        let published = accept(&state, &mut guard, message, Some(index));
        answers.push(answer(&published));
        accepted.push(published);
    }
    let answer = serde_json::Value::Array(answers);
    guard.batches.push(Batch {
        headers,
        items,
        messages: accepted,
        answer: answer.clone(),
    });
    drop(guard);
    reply(200, answer)
}

fn parse_batch(items: &serde_json::Value) -> Result<Vec<Message>, String> {
    let items = items.as_array().ok_or("the body must be a JSON array")?;
    if items.is_empty() {
        return Err("the batch is empty".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item
                .as_object()
                .ok_or(format!("message {i} is not an object"))?;
            let destination = item
                .get("destination")
                .and_then(|d| d.as_str())
                .filter(|d| !d.is_empty())
                .ok_or(format!("message {i} has no destination"))?;
            let mut headers = Vec::new();
            if let Some(object) = item.get("headers").filter(|h| !h.is_null()) {
                let object = object
                    .as_object()
                    .ok_or(format!("message {i}: headers must be an object"))?;
                for (name, value) in object {
                    let value = value
                        .as_str()
                        .ok_or(format!("message {i}: header `{name}` must be a string"))?;
                    headers.push((name.as_str(), value));
                }
            }
            let body = match item.get("body") {
                None | Some(serde_json::Value::Null) => Bytes::new(),
                Some(serde_json::Value::String(body)) => Bytes::from(body.clone()),
                Some(_) => return Err(format!("message {i}: body must be a string")),
            };
            let queue = match item.get("queue") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(queue)) => Some(queue.clone()),
                Some(_) => return Err(format!("message {i}: queue must be a string")),
            };
            Message::new(
                destination.to_owned(),
                lower_case(headers.into_iter()),
                body,
                queue,
            )
            .map_err(|error| format!("message {i}: {error}"))
        })
        .collect()
}

/// A message as QStash takes it in, before deduplication.
struct Message {
    destination: String,
    headers: HashMap<String, String>,
    body: Bytes,
    queue: Option<String>,
    not_before: Option<u64>,
    delay: Option<Duration>,
}

impl Message {
    fn new(
        destination: String,
        headers: HashMap<String, String>,
        body: Bytes,
        queue: Option<String>,
    ) -> Result<Self, String> {
        let not_before = headers
            .get("upstash-not-before")
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid Upstash-Not-Before `{v}`: unix seconds"))
            })
            .transpose()?;
        let delay = headers
            .get("upstash-delay")
            .map(|v| parse_delay(v).ok_or(format!("invalid Upstash-Delay `{v}`")))
            .transpose()?;
        Ok(Self {
            destination,
            headers,
            body,
            queue,
            not_before,
            delay,
        })
    }

    /// When the first attempt may be made: `Upstash-Not-Before` overrides `Upstash-Delay`.
    fn deliver_at(&self, now: SystemTime) -> Option<SystemTime> {
        match (self.not_before, self.delay) {
            (Some(seconds), _) => Some(UNIX_EPOCH + Duration::from_secs(seconds)),
            (None, Some(delay)) => Some(now + delay),
            (None, None) => None,
        }
    }
}

/// `Upstash-Delay`: `<number><unit>`, unit `s`, `m`, `h` or `d` (`10s`, `1m`, `2h`, `7d`).
fn parse_delay(value: &str) -> Option<Duration> {
    let value = value.trim();
    let unit = value.chars().last()?;
    let number: u64 = value[..value.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

/// Deduplicates, records and, unless it is a duplicate, schedules the delivery of one
/// message: the single path of a publish and of every item of a batch.
fn accept(
    state: &Arc<Mutex<State>>,
    guard: &mut State,
    message: Message,
    batch: Option<usize>,
) -> Published {
    let now = Instant::now();
    guard
        .dedup
        .retain(|_, (_, at)| now.duration_since(*at) < DEDUPLICATION_WINDOW);
    let dedup_id = message.headers.get("upstash-deduplication-id");
    let existing = dedup_id
        .and_then(|id| guard.dedup.get(id))
        .map(|(message_id, _)| message_id.clone());
    let deduplicated = existing.is_some();
    let message_id = existing.unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
    if let (false, Some(id)) = (deduplicated, dedup_id) {
        guard.dedup.insert(id.clone(), (message_id.clone(), now));
    }
    let published = Published {
        destination: message.destination.clone(),
        headers: message.headers.clone(),
        body: message.body.clone(),
        message_id: message_id.clone(),
        deduplicated,
        not_before: message.not_before,
        delay: message.delay,
        batch,
        queue: message.queue.clone(),
    };
    guard.published.push(published.clone());

    if !deduplicated {
        let retries: u32 = message
            .headers
            .get("upstash-retries")
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        let deliver_at = message.deliver_at(SystemTime::now());
        for _ in 0..guard.behaviour.copies {
            let delivery = Delivery {
                state: state.clone(),
                message_id: message_id.clone(),
                destination: message.destination.clone(),
                headers: message.headers.clone(),
                body: message.body.clone(),
                retries,
                deliver_at,
                behaviour: guard.behaviour.clone(),
            };
            tokio::spawn(delivery.run());
        }
    }
    published
}

/// QStash's answer for one accepted message.
fn answer(published: &Published) -> serde_json::Value {
    let mut answer = json!({ "messageId": published.message_id });
    if published.deduplicated {
        answer["deduplicated"] = json!(true);
    }
    answer
}

struct Delivery {
    state: Arc<Mutex<State>>,
    message_id: String,
    destination: String,
    headers: HashMap<String, String>,
    body: Bytes,
    retries: u32,
    /// Not before this (`Upstash-Not-Before` / `Upstash-Delay`).
    deliver_at: Option<SystemTime>,
    behaviour: Behaviour,
}

impl Delivery {
    async fn run(self) {
        tokio::time::sleep(self.behaviour.delivery_delay).await;
        if let (Some(at), false) = (self.deliver_at, self.behaviour.ignore_not_before) {
            let at = at - self.behaviour.early_by;
            // The wall clock, not a monotonic one: the time is a unix timestamp.
            while let Ok(wait) = at.duration_since(SystemTime::now()) {
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
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
                at: SystemTime::now(),
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
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .header(
                "upstash-signature",
                sign(&self.behaviour.signing_key, url, bytes.as_bytes()),
            );
        for (name, value) in &self.headers {
            if let Some(forwarded) = name.strip_prefix("upstash-failure-callback-forward-") {
                request = request.header(forwarded, value);
            }
        }
        let answered = request
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
