//! The Vercel function `/api/jobs?action=...`: read the request, route on `action`, call one
//! `jobs-core` function, write JSON. Everything else lives in `crates/jobs-core`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;

use jobs_core::conditional::{ETag, IfNoneMatch};
use jobs_core::idempotency::KeySource;
use jobs_core::replies::Listed;
use jobs_core::watch::{Frames, Streaming};
use jobs_core::{Action, App, Config, Credentials, Delivery, JobsError, Processors, Query};
use serde::Serialize;
use serde_json::{Value, json};
use vercel_runtime::{AppState, Error, Request, Response, ResponseBody, run, service_fn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jobs_core::telemetry::init();
    jobs_core::failpoints::arm_from_env(); // test builds only
    // An invalid value does not stop the process: it serves, and says what is wrong (health).
    let config = Config::from_env();
    // Register an application's own processors here: `.register("resize", Resize)`.
    let app = Arc::new(
        App::new(config, Processors::builtin)
            .await
            .context("start-up failed")?,
    );
    // `vercel_runtime` 2.4.1 or newer: earlier 2.x ends the invocation before `wait_until` work
    // settles. Through `service_fn`, not its axum layer, which drops `AppState` and with it
    // `wait_until` (docs/spec.md §5, `process`).
    run(service_fn(move |req: Request, state: AppState| {
        let app = app.clone();
        async move { Ok::<_, Error>(handle(&app, req, state).await) }
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

async fn handle(app: &App, req: Request, state: AppState) -> Response<ResponseBody> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    if !parts.uri.path().starts_with("/api/") {
        return static_page(app, parts.uri.path()).await;
    }
    let ((action, outcome), db_commands) =
        jobs_core::store::count_commands(run_action(app, &parts, body, state)).await;

    let (mut frames, mut text) = (None, None);
    let (status, body, allow, etag) = match outcome {
        Ok(reply) => {
            frames = reply.stream;
            text = reply.text;
            (reply.status, reply.body, None, reply.etag)
        }
        Err(error) => {
            if let JobsError::Internal(detail) = &error {
                tracing::error!(detail, "internal error");
            }
            let mut body = json!({ "error": error.to_string(), "code": error.code() });
            if let Some(task_id) = error.task_id() {
                body["taskId"] = json!(task_id);
            }
            if let Some(version) = error.current_version() {
                body["currentVersion"] = json!(version);
            }
            let allow = match &error {
                JobsError::MethodNotAllowed { allow, .. } => Some(*allow),
                _ => None,
            };
            (error.status(), Some(body), allow, None)
        }
    };
    tracing::info!(
        action = action.map_or("-", Action::name),
        method = %parts.method,
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        db_commands,
        task_id = body.as_ref().and_then(|body| {
            body.get("taskId")
                .or_else(|| body.pointer("/task/taskId"))
                .and_then(serde_json::Value::as_str)
        }),
        "request"
    );
    // `no-store`: no cache keeps a reply, so an `ETag` serves only a client that sends it back.
    let mut response = Response::builder()
        .status(status)
        .header("cache-control", "no-store");
    if body.is_some() {
        response = response.header("content-type", "application/json");
    }
    if let Some(etag) = &etag {
        response = response.header("etag", etag.as_str());
    }
    // In development, the MongoDB commands a request issued (tests and the benchmark count
    // them); deployed, they stay in the request log.
    if !app.is_deployed() {
        response = response.header("x-jobs-db-commands", db_commands);
    }
    if let Some(allow) = allow {
        response = response.header("allow", allow);
    }
    if let Some(frames) = frames {
        return event_stream(response, frames);
    }
    if let Some((content_type, text)) = text {
        return response
            .header("content-type", content_type)
            .body(ResponseBody::from(text))
            .expect("valid response parts");
    }
    response
        .body(ResponseBody::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .expect("valid response parts")
}

/// A success to send: its status, its JSON body (none for a 304 or a stream), its `ETag`, if
/// any, and the frames of a `watch`.
struct Reply {
    status: u16,
    body: Option<Value>,
    etag: Option<ETag>,
    stream: Option<Frames>,
    /// A body that is not JSON, with its content type (`metrics`).
    text: Option<(&'static str, String)>,
}

/// `watch`'s 200: a `text/event-stream` that proxies must neither buffer nor transform.
fn event_stream(response: http::response::Builder, frames: Frames) -> Response<ResponseBody> {
    let frames = frames.map(|bytes| Ok(hyper::body::Frame::data(bytes)));
    response
        .header("content-type", "text/event-stream")
        .header("x-accel-buffering", "no")
        .body(ResponseBody::from(http_body_util::StreamBody::new(frames)))
        .expect("valid response parts")
}

/// Routes one API request to its `jobs-core` call and encodes the typed reply; returns the
/// action (when known) for the request log line.
async fn run_action(
    app: &App,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
    state: AppState,
) -> (Option<Action>, Result<Reply, JobsError>) {
    let query = match Query::parse(parts.uri.query()) {
        Ok(query) => query,
        Err(error) => return (None, Err(error)),
    };
    let action = match Action::route(query.get("action"), &parts.method) {
        Ok(action) => action,
        Err(error) => return (None, Err(error)),
    };
    if let (false, Err(error)) = (action == Action::Health, app.configured()) {
        return (Some(action), Err(error));
    }
    let credentials = Credentials::from_headers(&parts.headers);
    let body = if action.takes_body() {
        let length = parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        match jobs_core::http::read_body(body, length).await {
            Ok(body) => body,
            Err(error) => return (Some(action), Err(error)),
        }
    } else {
        Default::default()
    };
    let outcome = match action {
        Action::Create => match idempotency_key(&parts.headers) {
            Ok(key) => match app.create(&credentials, &body, key).await {
                // A replay created nothing: 200, the first answer was the 201.
                Ok(created) => encode(if created.replayed { 200 } else { 201 }, Ok(created)),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        },
        Action::Get => encode(200, app.get(&credentials, &query).await),
        Action::List => {
            let if_none_match = IfNoneMatch::from_headers(&parts.headers);
            match app.list(&credentials, &query, &if_none_match).await {
                Ok(Listed::Page { page, etag }) => encode(200, Ok(page)).map(|reply| Reply {
                    etag: Some(etag),
                    ..reply
                }),
                Ok(Listed::NotModified(etag)) => Ok(Reply {
                    status: 304,
                    body: None,
                    etag: Some(etag),
                    stream: None,
                    text: None,
                }),
                Err(error) => Err(error),
            }
        }
        Action::Retry => encode(200, app.retry(&credentials, &body).await),
        Action::Cancel => encode(200, app.cancel(&credentials, &body).await),
        Action::Sweep => encode(200, app.sweep(&credentials).await),
        Action::DeliveryFailed => encode(200, app.delivery_failed(&credentials, &body).await),
        Action::RetryMany => encode(200, app.retry_many(&credentials, &body).await),
        Action::Groups => encode(200, app.groups(&credentials, &query).await),
        Action::Failures => encode(200, app.failures(&credentials, &query).await),
        Action::Metrics => app.metrics(&credentials).await.map(|text| Reply {
            status: 200,
            body: None,
            etag: None,
            stream: None,
            text: Some((jobs_core::metrics::CONTENT_TYPE, text)),
        }),
        Action::Watch => {
            let last_event_id = parts
                .headers
                .get("last-event-id")
                .and_then(|value| value.to_str().ok());
            match app.watch(&credentials, &query, last_event_id).await {
                Ok(watcher) => {
                    let Streaming { frames, done } = watcher.stream();
                    // The invocation lasts as long as its stream, not only its first bytes.
                    state.wait_until(async move {
                        let _ = done.await;
                    });
                    Ok(Reply {
                        status: 200,
                        body: None,
                        etag: None,
                        stream: Some(frames),
                        text: None,
                    })
                }
                Err(error) => Err(error),
            }
        }
        Action::Health => match app
            .health(
                !parts
                    .headers
                    .contains_key(jobs_core::actions::HEALTH_PROBE_HEADER),
            )
            .await
        {
            Ok(up) => encode(200, Ok(up)),
            Err(down) => encode(503, Ok(down)),
        },
        Action::Process => match app.process(&credentials, &body).await {
            Ok(delivery) => {
                let status = match delivery {
                    Delivery::Claimed { .. } => 202,
                    Delivery::NotClaimed => 200,
                };
                let reply = delivery.reply();
                if let Delivery::Claimed { work, .. } = delivery {
                    state.wait_until(work);
                }
                encode(status, Ok(reply))
            }
            Err(error) => Err(error),
        },
    };
    (Some(action), outcome)
}

/// The `Idempotency-Key` header of a create, as text; a value that is not (one header of)
/// visible ASCII is a 400.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<&str>, JobsError> {
    let mut values = headers.get_all("idempotency-key").iter();
    match (values.next(), values.next()) {
        (_, Some(_)) => Err(JobsError::InvalidBody(
            "send at most one Idempotency-Key header".into(),
        )),
        (first, None) => first
            .map(|v| v.to_str().map_err(|_| KeySource::Header.invalid()))
            .transpose(),
    }
}

/// A success reply with its status, as JSON.
fn encode<T: Serialize>(status: u16, reply: Result<T, JobsError>) -> Result<Reply, JobsError> {
    let reply = reply?;
    serde_json::to_value(reply)
        .map(|body| Reply {
            status,
            body: Some(body),
            etag: None,
            stream: None,
            text: None,
        })
        .map_err(JobsError::internal)
}

/// Development only (`JOBS_STATIC_DIR`): the Task Manager page next to the API, with the
/// security headers Vercel adds from `vercel.json`. On Vercel, `public/` is served by the
/// platform and never reaches the function.
async fn static_page(app: &App, path: &str) -> Response<ResponseBody> {
    let file = match app.static_dir() {
        Some(dir) => jobs_core::http::static_file(dir, path).await,
        None => None,
    };
    let builder = jobs_core::http::PAGE_HEADERS
        .into_iter()
        .fold(Response::builder(), |b, (name, value)| {
            b.header(name, value)
        });
    match file {
        Some((content_type, bytes)) => builder
            .status(200)
            .header("content-type", content_type)
            .header("cache-control", "no-cache")
            .body(ResponseBody::from(bytes)),
        None => builder
            .status(404)
            .header("content-type", "application/json")
            .body(ResponseBody::from(
                json!({ "error": "Not found", "code": "NOT_FOUND" }).to_string(),
            )),
    }
    .expect("valid response parts")
}
