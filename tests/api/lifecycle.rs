//! The production lifecycle, as Vercel's runtime drives the real binary (`vercel_runtime`
//! 2.4.1, whose own `tests/request_lifecycle.rs` this follows): with `VERCEL_IPC_PATH` set the
//! runtime connects to that Unix socket, says `server-started` with its port, and after each
//! request that carries `x-vercel-internal-invocation-id` and `x-vercel-internal-request-id`
//! sends `{"type":"end","payload":{"context":{invocationId, requestId},"error":null}}` once
//! the request's `wait_until` work has settled; every message is JSON ended by a NUL byte.
//! Vercel keeps the invocation (and its instance) alive until `end`: for `process` that must
//! come only after the worker's final write, for every other action right after the response.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::stubs::Recorder;
use crate::support::{AUDIENCE, Service, free_port, user_token};

const SECRET: &str = "lifecycle-auth-secret";
const INTERNAL: &str = "lifecycle-internal-secret";

/// The runtime's side of the IPC socket.
struct Ipc {
    stream: BufReader<UnixStream>,
    path: PathBuf,
}

impl Ipc {
    /// The next NUL-terminated JSON message, within 10 s.
    async fn frame(&mut self) -> Value {
        let mut frame = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            self.stream.read_until(0, &mut frame),
        )
        .await
        .expect("an IPC message within 10 s")
        .unwrap();
        assert_eq!(frame.pop(), Some(0), "a NUL-terminated IPC frame");
        serde_json::from_slice(&frame).unwrap()
    }

    /// The next message is the `end` of request `id`.
    async fn end(&mut self, id: u64) -> Instant {
        assert_eq!(self.frame().await, end_message(id));
        Instant::now()
    }
}

impl Drop for Ipc {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn end_message(id: u64) -> Value {
    json!({
        "type": "end",
        "payload": {
            "context": { "invocationId": format!("invocation-{id}"), "requestId": id },
            "error": null
        }
    })
}

/// A request as the runtime forwards it: with the invocation and request ids.
fn invocation(request: reqwest::RequestBuilder, id: u64) -> reqwest::RequestBuilder {
    request
        .header(
            "x-vercel-internal-invocation-id",
            format!("invocation-{id}"),
        )
        .header("x-vercel-internal-request-id", id.to_string())
}

/// The `jobs` binary in Vercel mode (`VERCEL_IPC_PATH`, so production: its deployed settings
/// are set), handing off by self-invocation to a recorder, so that the test delivers `process`
/// itself, as the runtime would.
async fn start() -> (Service, Ipc, Recorder) {
    let path =
        std::env::temp_dir().join(format!("jobs-ipc-{}.sock", uuid::Uuid::new_v4().simple()));
    let listener = UnixListener::bind(&path).unwrap();
    let recorder = Recorder::start().await;
    let port = free_port();
    let env = [
        ("VERCEL_IPC_PATH", path.to_str().unwrap()),
        ("JOBS_AUTH_SECRET", SECRET),
        ("JOBS_AUTH_AUDIENCE", AUDIENCE),
        ("CRON_SECRET", "lifecycle-cron"),
        ("JOBS_INTERNAL_SECRET", INTERNAL),
        ("JOBS_PUBLIC_URL", recorder.url.as_str()),
    ];
    let jobs = Service::start_on(
        port,
        format!("test_{}", uuid::Uuid::new_v4().simple()),
        &env,
    )
    .await;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the runtime connects to VERCEL_IPC_PATH")
        .unwrap();
    let mut ipc = Ipc {
        stream: BufReader::new(stream),
        path,
    };
    let started = ipc.frame().await;
    assert_eq!(started["type"], "server-started");
    assert_eq!(started["payload"]["httpPort"], port);
    (jobs, ipc, recorder)
}

/// `process` answers 202 once the task is claimed; its invocation ends only after the worker's
/// final write (the task is `completed` when `end` arrives). A `get` and a `health` sent while
/// the task runs end right after their responses, before the `process` invocation does.
#[tokio::test]
async fn process_ends_after_the_final_write_and_other_actions_after_their_response() {
    let (jobs, mut ipc, _recorder) = start().await;
    let health = jobs
        .send(invocation(
            jobs.request(reqwest::Method::GET, "action=health"),
            1,
        ))
        .await;
    assert_eq!(health.status, 200, "{}", health.body);
    ipc.end(1).await;

    let create = jobs
        .send(invocation(
            jobs.request(reqwest::Method::POST, "action=create")
                .bearer_auth(user_token(SECRET, "alice", 300))
                .json(&json!({ "type": "demo", "payload": { "steps": 4, "stepMs": 300 } })),
            2,
        ))
        .await;
    assert_eq!(create.status, 201, "{}", create.body);
    ipc.end(2).await;
    let id = create.task_id();
    let handoff = jobs.task(&id).await;
    let handoff_id = handoff
        .get_document("handoff")
        .unwrap()
        .get_str("dedupId")
        .unwrap();

    let process = jobs
        .send(invocation(
            jobs.request(reqwest::Method::POST, "action=process")
                .header("x-jobs-internal-secret", INTERNAL)
                .json(&json!({ "taskId": id, "handoffId": handoff_id })),
            3,
        ))
        .await;
    let answered = Instant::now();
    assert_eq!(process.status, 202, "{}", process.body);

    // While the task runs, another request's invocation ends with its response.
    let get = jobs
        .send(invocation(
            jobs.request(reqwest::Method::GET, &format!("action=get&taskId={id}"))
                .bearer_auth(user_token(SECRET, "alice", 300)),
            4,
        ))
        .await;
    assert_eq!(get.status, 200, "{}", get.body);
    ipc.end(4).await;
    let (status, _, _) = jobs.state(&id).await;
    assert_eq!(
        status, "processing",
        "the get's end did not wait for the task"
    );

    let ended = ipc.end(3).await;
    let task = jobs.task(&id).await;
    assert_eq!(
        (
            task.get_str("status").unwrap(),
            task.get_i32("progress").unwrap()
        ),
        ("completed", 100),
        "the worker's final write happened before process's end: {task}"
    );
    assert!(
        ended.duration_since(answered) >= Duration::from_millis(600),
        "process's end waited for the work ({:?} after the 202)",
        ended.duration_since(answered)
    );
    jobs_core::testing::assert_legal_document(&task);
    assert_no_more_frames(&mut ipc).await;
}

/// Nothing else is sent: each request ends exactly once.
async fn assert_no_more_frames(ipc: &mut Ipc) {
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ipc.stream.fill_buf())
            .await
            .is_err(),
        "no further IPC message"
    );
}
