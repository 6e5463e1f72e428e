//! Small HTTP stand-ins for the far side of a hand-off: a target that records what it was
//! sent, one that accepts connections and never answers, a proxy in front of `jobs` that
//! can hold or refuse `process` calls, Vercel's Deployment Protection in front of a target, and
//! a domain that redirects.

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

pub type Reply = Result<Response<Full<Bytes>>, Infallible>;

/// Serves `handle` on a free local port; returns its base URL.
pub async fn serve<F, Fut>(handle: F) -> String
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

pub fn answer(status: u16, body: impl Into<Bytes>) -> Reply {
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

/// Passes `req` on to `target` (same method, path, query, headers and body); the status and
/// body of its answer.
async fn pass_on(http: &reqwest::Client, target: &str, req: Request<Incoming>) -> (u16, Bytes) {
    let path = req.uri().path_and_query().unwrap().as_str().to_owned();
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
    (status, response.bytes().await.unwrap())
}

impl Proxy {
    pub async fn start(target: &str, on_process: OnProcess) -> Self {
        let target = target.to_owned();
        let http = reqwest::Client::new();
        let url = serve(move |req: Request<Incoming>| {
            let (target, http) = (target.clone(), http.clone());
            async move {
                let process = req.uri().query().unwrap_or("").contains("action=process");
                if process && let OnProcess::Refuse = on_process {
                    return answer(500, r#"{"error":"refused by the test proxy"}"#);
                }
                let (status, bytes) = pass_on(&http, &target, req).await;
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

/// Vercel's Deployment Protection in front of `target`: a request without
/// `x-vercel-protection-bypass: <secret>` is answered 401 and goes no further. Records
/// `(query, status)` of every request.
pub struct Protection {
    pub url: String,
    pub seen: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Protection {
    pub async fn start(target: &str, secret: &str) -> Self {
        let (target, secret) = (target.to_owned(), secret.to_owned());
        let http = reqwest::Client::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = seen.clone();
        let url = serve(move |req: Request<Incoming>| {
            let (target, secret, http, seen) =
                (target.clone(), secret.clone(), http.clone(), shared.clone());
            async move {
                let query = req.uri().query().unwrap_or("").to_owned();
                let bypass = req.headers().get("x-vercel-protection-bypass");
                let (status, bytes) = if bypass.is_some_and(|v| v.as_bytes() == secret.as_bytes()) {
                    pass_on(&http, &target, req).await
                } else {
                    (401, Bytes::from_static(b"Authentication Required"))
                };
                seen.lock().unwrap().push((query, status));
                answer(status, bytes)
            }
        })
        .await;
        Self { url, seen }
    }
}

/// A domain that answers every request with `status` and `Location: <location><path>`, as
/// an apex domain redirecting to `www` does.
pub struct Redirect {
    pub url: String,
    pub hits: Arc<Mutex<u32>>,
}

impl Redirect {
    pub async fn start(status: u16, location: &str) -> Self {
        let location = location.to_owned();
        let hits = Arc::new(Mutex::new(0));
        let shared = hits.clone();
        let url = serve(move |req: Request<Incoming>| {
            *shared.lock().unwrap() += 1;
            let to = format!("{location}{}", req.uri().path_and_query().unwrap());
            async move {
                Ok(Response::builder()
                    .status(status)
                    .header("location", to)
                    .body(Full::new(Bytes::new()))
                    .unwrap())
            }
        })
        .await;
        Self { url, hits }
    }
}
