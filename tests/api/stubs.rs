//! Small HTTP stand-ins for the far side of a hand-off: a target that records what it was
//! sent, one that accepts connections and never answers, and a proxy in front of `jobs` that
//! can hold or refuse `process` calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Reply = Result<Response<Full<Bytes>>, Infallible>;

/// Serves `handle` on a free local port; returns its base URL.
async fn serve<F, Fut>(handle: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle)),
            );
        }
    });
    url
}

fn answer(status: u16, body: impl Into<Bytes>) -> Reply {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap())
}

/// A hand-off target that records the headers it was sent and answers 202.
pub struct Recorder {
    pub url: String,
    pub seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl Recorder {
    pub async fn start() -> Self {
        Self::start_with_status(202).await
    }

    /// A recorder that answers every request with `status`.
    pub async fn start_with_status(status: u16) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = seen.clone();
        let url = serve(move |req: Request<Incoming>| {
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            shared.lock().unwrap().push(headers);
            async move { answer(status, "{}") }
        })
        .await;
        Self { url, seen }
    }
}

/// A hand-off target that accepts every connection and request and never answers: the
/// hand-off is in flight for as long as the caller waits.
pub struct Blackhole {
    pub url: String,
}

impl Blackhole {
    pub async fn start() -> Self {
        let url = serve(|_req: Request<Incoming>| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            answer(504, "{}")
        })
        .await;
        Self { url }
    }
}

/// What the proxy does with `action=process`; every other request is passed through.
#[derive(Clone, Copy)]
pub enum OnProcess {
    /// Answer 500 without passing it on: the destination fails every delivery.
    Refuse,
    /// Pass it on, and hold the answer this long (a 202 that arrives after the caller's
    /// timeout).
    Delay(Duration),
}

/// A proxy in front of `jobs` at `target`; point `JOBS_PUBLIC_URL` at `url`.
pub struct Proxy {
    pub url: String,
}

impl Proxy {
    pub async fn start(target: &str, on_process: OnProcess) -> Self {
        let target = target.to_owned();
        let http = reqwest::Client::new();
        let url = serve(move |req: Request<Incoming>| {
            let (target, http) = (target.clone(), http.clone());
            async move {
                let path = req.uri().path_and_query().unwrap().as_str().to_owned();
                let process = path.contains("action=process");
                if process && let OnProcess::Refuse = on_process {
                    return answer(500, r#"{"error":"refused by the test proxy"}"#);
                }
                let method = req.method().clone();
                let headers = req.headers().clone();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut forward = http.request(method, format!("{target}{path}")).body(body);
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name, value);
                    }
                }
                let response = forward.send().await.unwrap();
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap();
                if let (true, OnProcess::Delay(hold)) = (process, on_process) {
                    tokio::time::sleep(hold).await;
                }
                answer(status, bytes)
            }
        })
        .await;
        Self { url }
    }
}
