//! A QStash publish endpoint that accepts every message at once and delivers nothing, so the
//! benchmark measures the service's own work on production's dispatch path (QStash, switched on
//! in development with `USE_QSTASH_IN_DEV`) without a processor running behind each request.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub struct Sink {
    pub url: String,
}

async fn accept(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = request.into_body().collect().await;
    let body = format!(r#"{{"messageId":"msg_{}"}}"#, uuid::Uuid::new_v4().simple());
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

pub async fn start() -> anyhow::Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(accept)),
            );
        }
    });
    Ok(Sink { url })
}
