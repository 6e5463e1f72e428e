//! A QStash endpoint that accepts every message at once and delivers nothing, so the benchmark
//! measures the service's own work on production's dispatch path (QStash, switched on in
//! development with `USE_QSTASH_IN_DEV`) without a processor running behind each request.
//! `POST /v2/publish/<destination>` is answered `201 {"messageId"}`, `POST /v2/batch` (a JSON
//! array of messages) `200 [{"messageId"}, ...]`, one answer per message in order, as QStash
//! does. It counts what it is sent, so a run can tell requests and publishes per task.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
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

pub struct Sink {
    pub url: String,
    counts: Arc<Mutex<Counts>>,
}

impl Sink {
    /// What the sink has been sent so far.
    pub fn counts(&self) -> Counts {
        *self.counts.lock().expect("the sink's counts")
    }
}

/// The answer to one request, counted.
fn answer(counts: &Mutex<Counts>, path: &str, body: &[u8]) -> (u16, Value) {
    let message_id = || json!({ "messageId": format!("msg_{}", uuid::Uuid::new_v4().simple()) });
    let mut counts = counts.lock().expect("the sink's counts");
    counts.requests += 1;
    if path == "/v2/batch" {
        let items = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| Some(v.as_array()?.len()));
        let Some(items) = items.filter(|n| *n > 0) else {
            counts.refused += 1;
            return (
                400,
                json!({ "error": "the body must be a non-empty JSON array" }),
            );
        };
        counts.batches += 1;
        counts.messages += items as u64;
        return (200, (0..items).map(|_| message_id()).collect());
    }
    if path.starts_with("/v2/publish/") {
        counts.single += 1;
        counts.messages += 1;
        return (201, message_id());
    }
    counts.refused += 1;
    (404, json!({ "error": "not found" }))
}

pub async fn start() -> anyhow::Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = shared.clone();
            let accept = move |request: Request<hyper::body::Incoming>| {
                let counts = counts.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect().await.map(|b| b.to_bytes());
                    let (status, body) = answer(&counts, &path, &body.unwrap_or_default());
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                }
            };
            let connection = hyper::server::conn::http1::Builder::new();
            tokio::spawn(connection.serve_connection(TokioIo::new(stream), service_fn(accept)));
        }
    });
    Ok(Sink { url, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_batches_item_by_item_and_counts() {
        let sink = start().await.unwrap();
        let http = reqwest::Client::new();
        let post =
            |path: &str, body: String| http.post(format!("{}{path}", sink.url)).body(body).send();
        let batch = post(
            "/v2/batch",
            json!([{ "destination": "a" }, { "destination": "b" }]).to_string(),
        );
        let batch = batch.await.unwrap();
        assert_eq!(batch.status(), 200);
        let answers: Vec<Value> = batch.json().await.unwrap();
        assert_eq!(answers.len(), 2);
        assert!(answers.iter().all(|a| a["messageId"].is_string()));
        assert_eq!(
            post("/v2/publish/http://a/api", "{}".into())
                .await
                .unwrap()
                .status(),
            201
        );
        assert_eq!(post("/v2/batch", "{}".into()).await.unwrap().status(), 400);
        let counts = sink.counts();
        let expected = Counts {
            requests: 3,
            single: 1,
            batches: 1,
            messages: 3,
            refused: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!((counts - counts).requests, 0);
    }
}
