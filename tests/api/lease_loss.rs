//! A worker that can no longer renew its lease stops (docs/spec.md §11): its database
//! connection is cut (a proxy the test pauses) during a long webhook call; `sweep` fails the
//! task as lost and the owner retries it on another instance. The webhook server never sees
//! two calls of the task in flight at once: the first run dropped its request at 2/3 of the
//! lease, before the lease expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Service, db_uri, free_port};

/// A TCP proxy to the test's SecantusDB that stops passing bytes while paused.
struct PausableProxy {
    port: u16,
    paused: Arc<AtomicBool>,
}

impl PausableProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(AtomicBool::new(false));
        let gate = paused.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, gate.clone()));
                tokio::spawn(pipe(server_read, client_write, gate.clone()));
            }
        });
        Self { port, paused }
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A webhook that holds every call `hold` before answering 200, and counts calls in flight
/// (a call ends when it is answered or the caller drops the connection).
struct SlowWebhook {
    port: u16,
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl SlowWebhook {
    async fn start(hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = Self {
            port: listener.local_addr().unwrap().port(),
            calls: Arc::default(),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
        };
        let (calls, in_flight, most) = (
            hook.calls.clone(),
            hook.in_flight.clone(),
            hook.most_in_flight.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (calls, in_flight, most) = (calls.clone(), in_flight.clone(), most.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    let mut seen = Vec::new();
                    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buffer[..n]),
                        }
                    }
                    calls.fetch_add(1, Ordering::SeqCst);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let answered = Instant::now() + hold;
                    loop {
                        tokio::select! {
                            read = stream.read(&mut buffer) => match read {
                                Ok(0) | Err(_) => break, // the caller hung up
                                Ok(_) => {}              // the rest of the body
                            },
                            () = tokio::time::sleep_until(answered.into()) => {
                                let _ = stream
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                                    .await;
                                break;
                            }
                        }
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        hook
    }
}

#[tokio::test]
async fn a_worker_cut_off_from_the_database_stops_before_another_run_starts() {
    let webhook = SlowWebhook::start(Duration::from_secs(8)).await;
    let target = db_uri().trim_start_matches("mongodb://").to_owned();
    let proxy = PausableProxy::start(target).await;
    let listed = format!("127.0.0.1:{}", webhook.port);
    let settings = [
        ("JOBS_LEASE_SECONDS", "3"),
        ("JOBS_DB_TIMEOUT_MS", "500"),
        ("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("JOBS_WEBHOOK_ALLOWED_HOSTS", listed.as_str()),
    ];
    // Direct: a replica-set member would have the driver discover it and bypass the proxy.
    let proxied = format!("mongodb://127.0.0.1:{}/?directConnection=true", proxy.port);
    let mut env = settings.to_vec();
    env.push(("MONGODB_URI", proxied.as_str()));
    // A: the instance whose database connection will be cut.
    let a = Service::start_on(
        free_port(),
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &env,
    )
    .await;
    // B: another instance on the same database, directly.
    let b = a.start_sharing_db(&settings).await;

    let created = a
        .post(
            "create",
            json!({ "type": "webhook", "userId": "alice", "maxRetries": 1,
                    "payload": { "url": format!("http://{listed}/hook"), "body": { "n": 1 } } }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.task_id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while webhook.calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the webhook was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.pause();

    // The lease expires (3 s); B's sweep fails the task as lost, and the owner retries it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.state(&id).await.0 != "failed" {
        assert!(Instant::now() < deadline, "never swept:\n{}", a.logs());
        b.get("action=sweep").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let retried = b.retry(&id, "alice").await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while webhook.calls.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the retry never called the webhook"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        webhook.most_in_flight.load(Ordering::SeqCst),
        1,
        "two runs of the task called the webhook at once; A's log:\n{}",
        a.logs()
    );
    assert!(
        a.logs().contains("lease not renewed for 2/3 of its length"),
        "{}",
        a.logs()
    );
}
