//! A QStash endpoint that accepts every message at once and delivers nothing, so the benchmark
//! measures the service's own work on production's dispatch path (QStash, switched on in
//! development with `USE_QSTASH_IN_DEV`) without a processor running behind each request.
//! `POST /v2/publish/<destination>` is answered `201 {"messageId"}`, `POST /v2/batch` (a JSON
//! array of messages) `200 [{"messageId"}, ...]`, one answer per message in order, as QStash
//! does. It counts what it is sent, so a run can tell requests and publishes per task.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the sink has been sent since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// HTTP requests of any kind.
    pub requests: u64,
    /// `POST /v2/publish/...` requests (one message each).
    pub single: u64,
    /// `POST /v2/batch` requests.
    pub batches: u64,
    /// Messages accepted: one per single publish, one per item of a batch.
    pub messages: u64,
    /// Requests answered with an error (a batch that is not a JSON array, an unknown path).
    pub refused: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;

    fn sub(self, before: Counts) -> Counts {
        Counts {
            requests: self.requests - before.requests,
            single: self.single - before.single,
            batches: self.batches - before.batches,
            messages: self.messages - before.messages,
            refused: self.refused - before.refused,
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    single: AtomicU64,
    batches: AtomicU64,
    messages: AtomicU64,
    refused: AtomicU64,
}

pub struct Sink {
    pub url: String,
    counters: Arc<Counters>,
}

impl Sink {
    /// What the sink has been sent so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            requests: c.requests.load(Ordering::SeqCst),
            single: c.single.load(Ordering::SeqCst),
            batches: c.batches.load(Ordering::SeqCst),
            messages: c.messages.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
        }
    }
}

fn message_id() -> serde_json::Value {
    serde_json::json!({ "messageId": format!("msg_{}", uuid::Uuid::new_v4().simple()) })
}

fn reply(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn accept(
    counters: Arc<Counters>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if path == "/v2/batch" {
        let items = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .filter(|n| *n > 0);
        let Some(items) = items else {
            counters.refused.fetch_add(1, Ordering::SeqCst);
            return Ok(reply(
                400,
                &serde_json::json!({ "error": "the body must be a non-empty JSON array" }),
            ));
        };
        counters.batches.fetch_add(1, Ordering::SeqCst);
        counters.messages.fetch_add(items as u64, Ordering::SeqCst);
        let answers: Vec<serde_json::Value> = (0..items).map(|_| message_id()).collect();
        return Ok(reply(200, &serde_json::Value::Array(answers)));
    }
    if path.starts_with("/v2/publish/") {
        counters.single.fetch_add(1, Ordering::SeqCst);
        counters.messages.fetch_add(1, Ordering::SeqCst);
        return Ok(reply(201, &message_id()));
    }
    counters.refused.fetch_add(1, Ordering::SeqCst);
    Ok(reply(404, &serde_json::json!({ "error": "not found" })))
}

pub async fn start() -> anyhow::Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counters = shared.clone();
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                service_fn(move |request| accept(counters.clone(), request)),
            ));
        }
    });
    Ok(Sink { url, counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_batches_item_by_item_and_counts() {
        let sink = start().await.unwrap();
        let http = reqwest::Client::new();
        let batch = http
            .post(format!("{}/v2/batch", sink.url))
            .json(
                &serde_json::json!([{ "destination": "http://a" }, { "destination": "http://b" }]),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(batch.status(), 200);
        let answers: Vec<serde_json::Value> = batch.json().await.unwrap();
        assert_eq!(answers.len(), 2);
        assert!(answers.iter().all(|a| a["messageId"].is_string()));
        let single = http
            .post(format!("{}/v2/publish/http://a/api", sink.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(single.status(), 201);
        let refused = http
            .post(format!("{}/v2/batch", sink.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let counts = sink.counts();
        assert_eq!(
            counts,
            Counts {
                requests: 3,
                single: 1,
                batches: 1,
                messages: 3,
                refused: 1
            }
        );
        assert_eq!((counts - counts).requests, 0);
    }
}
