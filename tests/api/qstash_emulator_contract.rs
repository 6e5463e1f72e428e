//! The emulator's own contract, driven through the production QStash client (qstash-rs 0.6
//! `Client`): `POST /v2/batch`, `Upstash-Not-Before` / `Upstash-Delay`, and deduplication in a
//! batch. No `jobs` binary and no database: the destination is a small local server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use qstash_rs::{
    BatchRequest, Client, Destination, Error, PublishRequest, Receiver, ReceiverConfig,
    VerifyRequest,
};
use serde_json::json;
use tokio::net::TcpListener;

use crate::qstash_emulator::{DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN, QStash};

/// A request the target received.
#[derive(Debug, Clone)]
struct Seen {
    /// The full URL it was sent to (what the signature's `sub` names).
    url: String,
    headers: HashMap<String, String>,
    body: Bytes,
    at: SystemTime,
}

/// A destination that records every request; a path containing `fail` answers 500, any
/// other 200.
struct Target {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Target {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (base, shared) = (url.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (base, shared) = (base.clone(), shared.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (base, shared) = (base.clone(), shared.clone());
                    async move {
                        let at = SystemTime::now();
                        let target = req.uri().path_and_query().unwrap().as_str().to_owned();
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = if target.contains("fail") { 500 } else { 200 };
                        shared.lock().unwrap().push(Seen {
                            url: format!("{base}{target}"),
                            headers,
                            body,
                            at,
                        });
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most `within`) until `count` requests have arrived.
    async fn wait_for(&self, count: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= count || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn client(qstash: &QStash) -> Client {
    Client::builder(DEV_TOKEN)
        .base_url(&qstash.url)
        .build()
        .unwrap()
}

fn verify(seen: &Seen) {
    Receiver::new(ReceiverConfig {
        current_signing_key: DEV_CURRENT_SIGNING_KEY.into(),
        next_signing_key: DEV_NEXT_SIGNING_KEY.into(),
    })
    .verify(VerifyRequest {
        signature: &seen.headers["upstash-signature"],
        body: &seen.body,
        url: Some(&seen.url),
        clock_tolerance_seconds: 0,
    })
    .unwrap_or_else(|e| panic!("{}: {e}", seen.url));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_batch_is_one_request_and_each_message_a_signed_delivery() {
    let qstash = QStash::start().await;
    let target = Target::start().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let requests = (0..3).map(|n| {
        let request = BatchRequest::new(
            PublishRequest::builder(
                Destination::url(format!("{}/hook?n={n}", target.url)).unwrap(),
            )
            .json_body(&json!({ "n": n, "text": "é \"quoted\"" }))
            .unwrap()
            .method(reqwest::Method::POST)
            .deduplication_id(format!("{run}-{n}"))
            .retries(2)
            .failure_callback(format!("{}/callback", target.url))
            .header("x-test", &format!("forwarded-{n}"))
            .unwrap()
            .build(),
        );
        // A queue changes nothing in the emulator's delivery; it is recorded.
        if n == 2 {
            request.queue_name("critical")
        } else {
            request
        }
    });

    let answer = client(&qstash).batch(requests).await.unwrap();

    assert_eq!(answer.len(), 3);
    let ids: Vec<String> = answer
        .iter()
        .map(|m| {
            assert_eq!((m.deduplicated, &m.error), (None, &None), "{m:?}");
            m.message_id.clone().unwrap()
        })
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);

    // One batch request, in the format qstash-rs sends: a JSON array of
    // {destination, headers (lower-case names), body (the raw body as a string)}.
    let batches = qstash.batches();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.headers["content-type"], "application/json");
    assert_eq!(batch.messages.len(), 3);
    let item = &batch.items[1];
    assert_eq!(item["destination"], format!("{}/hook?n=1", target.url));
    assert_eq!(
        item["body"],
        json!({ "n": 1, "text": "é \"quoted\"" }).to_string()
    );
    assert_eq!(item["headers"]["content-type"], "application/json");
    assert_eq!(item["headers"]["upstash-method"], "POST");
    assert_eq!(item["headers"]["upstash-retries"], "2");
    assert_eq!(
        item["headers"]["upstash-deduplication-id"],
        format!("{run}-1")
    );
    assert_eq!(item["headers"]["upstash-forward-x-test"], "forwarded-1");
    assert_eq!(item.get("queue"), None);
    assert_eq!(batch.items[2]["queue"], "critical");
    assert_eq!(
        batch.answer,
        json!([
            { "messageId": ids[0] },
            { "messageId": ids[1] },
            { "messageId": ids[2] },
        ])
    );

    // Every message is in published(), marked as from batch 0.
    let published = qstash.published();
    assert_eq!(published.len(), 3);
    for (n, message) in published.iter().enumerate() {
        assert_eq!(message.batch, Some(0));
        assert_eq!(message.message_id, ids[n]);
        assert_eq!(message.destination, format!("{}/hook?n={n}", target.url));
        assert_eq!(
            message.headers["upstash-failure-callback"],
            format!("{}/callback", target.url)
        );
        assert!(!message.deduplicated);
        assert_eq!(message.queue.as_deref(), (n == 2).then_some("critical"));
    }

    // Three deliveries, each signed over its own URL and body, as a single publish is.
    let seen = target.wait_for(3, Duration::from_secs(2)).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (n, id) in ids.iter().enumerate() {
        let url = format!("{}/hook?n={n}", target.url);
        let delivery = seen.iter().find(|s| s.url == url).unwrap();
        verify(delivery);
        assert_eq!(&delivery.headers["upstash-message-id"], id);
        assert_eq!(delivery.headers["upstash-retried"], "0");
        assert_eq!(delivery.headers["content-type"], "application/json");
        assert_eq!(delivery.headers["x-test"], format!("forwarded-{n}"));
        let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(body, json!({ "n": n, "text": "é \"quoted\"" }));
    }
}

#[tokio::test]
async fn not_before_and_delay_hold_the_first_attempt() {
    let qstash = QStash::start().await;
    let target = Target::start().await;
    let client = client(&qstash);
    let not_before = unix_now() + 2;
    let due = UNIX_EPOCH + Duration::from_secs(not_before);

    // In a batch, and in a single publish.
    client
        .batch([BatchRequest::new(
            PublishRequest::builder(Destination::url(format!("{}/batched", target.url)).unwrap())
                .body("batched")
                .not_before(not_before)
                .build(),
        )])
        .await
        .unwrap();
    client
        .publish(
            PublishRequest::builder(Destination::url(format!("{}/single", target.url)).unwrap())
                .body("single")
                .not_before(not_before)
                .build(),
        )
        .await
        .unwrap();
    let delayed_at = SystemTime::now();
    client
        .publish(
            PublishRequest::builder(Destination::url(format!("{}/delayed", target.url)).unwrap())
                .body("delayed")
                .delay_seconds(1)
                .build(),
        )
        .await
        .unwrap();

    let published = qstash.published();
    assert_eq!(published.len(), 3);
    assert_eq!(published[0].not_before, Some(not_before));
    assert_eq!(
        published[0].headers["upstash-not-before"],
        not_before.to_string()
    );
    assert_eq!(published[0].batch, Some(0));
    assert_eq!(published[1].not_before, Some(not_before));
    assert_eq!(published[1].batch, None);
    assert_eq!(published[2].not_before, None);
    assert_eq!(published[2].delay, Some(Duration::from_secs(1)));
    assert_eq!(published[2].headers["upstash-delay"], "1s");

    let seen = target.wait_for(3, Duration::from_secs(4)).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    for delivery in &seen {
        verify(delivery);
        if delivery.url.ends_with("/delayed") {
            assert!(
                delivery.at >= delayed_at + Duration::from_secs(1),
                "{delivery:?}"
            );
        } else {
            assert!(delivery.at >= due, "{delivery:?} before {not_before}");
        }
    }
    assert!(
        qstash.delivered().iter().all(|d| d.at >= delayed_at),
        "delivered() records when"
    );
}

#[tokio::test]
async fn a_deduplicated_message_in_a_batch_keeps_its_id_and_is_delivered_once() {
    let qstash = QStash::start().await;
    let target = Target::start().await;
    let client = client(&qstash);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let message = |path: &str, dedup: &str| {
        BatchRequest::new(
            PublishRequest::builder(Destination::url(format!("{}/{path}", target.url)).unwrap())
                .body(path.to_owned())
                .deduplication_id(format!("{run}-{dedup}"))
                .build(),
        )
    };

    // A single publish, then a batch that repeats it, and repeats one of its own messages.
    let first = client
        .publish(
            PublishRequest::builder(Destination::url(format!("{}/a", target.url)).unwrap())
                .body("a")
                .deduplication_id(format!("{run}-a"))
                .build(),
        )
        .await
        .unwrap();
    let first = first[0].message_id.clone().unwrap();
    let answer = client
        .batch([message("a", "a"), message("b", "b"), message("b", "b")])
        .await
        .unwrap();

    assert_eq!(answer[0].message_id.as_deref(), Some(first.as_str()));
    assert_eq!(answer[0].deduplicated, Some(true));
    assert_eq!(answer[1].deduplicated, None);
    assert_eq!(answer[2].message_id, answer[1].message_id);
    assert_eq!(answer[2].deduplicated, Some(true));
    let flags: Vec<(bool, Option<usize>)> = qstash
        .published()
        .iter()
        .map(|p| (p.deduplicated, p.batch))
        .collect();
    assert_eq!(
        flags,
        [
            (false, None),
            (true, Some(0)),
            (false, Some(0)),
            (true, Some(0))
        ]
    );

    target.wait_for(2, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut paths: Vec<String> = target.seen().iter().map(|s| s.url.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [format!("{}/a", target.url), format!("{}/b", target.url)]
    );
}

#[tokio::test]
async fn a_batch_message_is_redelivered_then_called_back_like_a_publish() {
    let qstash = QStash::start().await;
    let target = Target::start().await;
    let answer = client(&qstash)
        .batch([
            BatchRequest::new(
                PublishRequest::builder(Destination::url(format!("{}/fail", target.url)).unwrap())
                    .body("doomed")
                    .retries(1)
                    .failure_callback(format!("{}/callback", target.url))
                    .build(),
            ),
            // Not a URL: a URL Group the emulator does not know; only this item fails.
            BatchRequest::new(
                PublishRequest::builder(Destination::url_group("no-such-group"))
                    .body("lost")
                    .build(),
            ),
        ])
        .await
        .unwrap();
    assert!(answer[0].message_id.is_some());
    assert!(answer[1].message_id.is_none() && answer[1].error.is_some());
    assert_eq!(qstash.published().len(), 1);

    let seen = target.wait_for(3, Duration::from_secs(2)).await;
    let retried: Vec<&str> = seen
        .iter()
        .filter(|s| s.url.ends_with("/fail"))
        .map(|s| s.headers["upstash-retried"].as_str())
        .collect();
    assert_eq!(retried, ["0", "1"]);
    let callback = seen.iter().find(|s| s.url.ends_with("/callback")).unwrap();
    verify(callback);
    let body: serde_json::Value = serde_json::from_slice(&callback.body).unwrap();
    assert_eq!(body["sourceMessageId"], json!(answer[0].message_id));
    assert_eq!(body["status"], 500);

    // What QStash refuses whole: a wrong token, a body that is not an array of messages.
    let refused = Client::builder("not-the-token")
        .base_url(&qstash.url)
        .build()
        .unwrap()
        .batch([BatchRequest::new(
            PublishRequest::builder(Destination::url(&target.url).unwrap()).build(),
        )])
        .await;
    assert!(
        matches!(&refused, Err(Error::Api { status, .. }) if status.as_u16() == 401),
        "{refused:?}"
    );
    for bad in [json!({}), json!([]), json!([{ "body": "no destination" }])] {
        let status = reqwest::Client::new()
            .post(format!("{}/v2/batch", qstash.url))
            .bearer_auth(DEV_TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(qstash.batches().len(), 1);
}
