//! `watch` (docs/spec.md §18): the caller's changes pushed as server-sent events from one
//! change stream per process, resumable from any event's id, over real HTTP and SecantusDB.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use mongodb::bson::doc;
use serde_json::{Value, json};

use crate::support::{OwnDatabase, Service, user_token};

/// One server-sent event as a client parses it (a comment is `event: ":"`).
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: String,
}

impl Sse {
    fn task(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| panic!("task data: {}", self.data))
    }
}

/// An open `watch` read frame by frame, remembering the last id as `EventSource` does.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
    last_id: Option<String>,
}

impl EventStream {
    async fn open(service: &Service, user: &str, last_id: Option<&str>) -> Self {
        let mut request =
            reqwest::Client::new().get(service.url(&format!("action=watch&userId={user}")));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        Self::from(request.send().await.expect("watch reaches jobs")).await
    }

    async fn from(response: reqwest::Response) -> Self {
        assert_eq!(
            response.status(),
            200,
            "watch answered {:?}",
            response.status()
        );
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
        assert_eq!(header("cache-control").as_deref(), Some("no-store"));
        Self {
            response,
            buffer: String::new(),
            last_id: None,
        }
    }

    /// The next frame within `within`; `None` when the stream ended.
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Sse {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                for line in block.lines().filter(|line| !line.is_empty()) {
                    match line.split_once(": ").unwrap_or((line, "")) {
                        ("", _) => frame.event = ":".into(),
                        ("event", value) => frame.event = value.into(),
                        ("id", value) => frame.id = Some(value.into()),
                        ("data", value) => frame.data.push_str(value),
                        ("retry", _) => {}
                        other => panic!("unexpected line {other:?}"),
                    }
                }
                if line_is_comment(&block) {
                    frame.event = ":".into();
                }
                if frame.id.is_some() {
                    self.last_id = frame.id.clone();
                }
                return Some(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None)) => return None,
                Ok(Err(error)) => panic!("watch broke: {error}"),
                Err(_) => panic!("no frame within {within:?}; buffered: {:?}", self.buffer),
            }
        }
    }

    /// Frames until `done` says so, within `within` in all.
    async fn until(&mut self, within: Duration, mut done: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next(left).await.expect("the stream ended early");
            let stop = done(&frame);
            frames.push(frame);
            if stop {
                return frames;
            }
        }
    }

    /// Frames until none comes for `quiet`: every change already made has been read.
    async fn settle(&mut self, quiet: Duration) -> Vec<Sse> {
        let mut frames = Vec::new();
        loop {
            while self.buffer.contains("\n\n") {
                frames.push(self.next(Duration::from_secs(1)).await.unwrap());
            }
            match tokio::time::timeout(quiet, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return frames,
            }
        }
    }

    /// The `ready` frame that opens every stream: `resumed` as expected.
    async fn ready(&mut self, resumed: bool) -> Sse {
        let ready = self.next(Duration::from_secs(15)).await.expect("ready");
        assert_eq!(ready.event, "ready", "{ready:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&ready.data).unwrap(),
            json!({ "resumed": resumed })
        );
        ready
    }
}

fn line_is_comment(block: &str) -> bool {
    block.lines().any(|line| line.starts_with(':'))
}

/// Tasks whose `completed` event arrived, from these frames.
fn completed(frames: &[Sse]) -> HashSet<String> {
    frames
        .iter()
        .filter(|f| f.event == "task")
        .map(Sse::task)
        .filter(|task| task["status"] == "completed")
        .map(|task| task["taskId"].as_str().unwrap().to_owned())
        .collect()
}

const QUICK: fn() -> Value = || json!({ "steps": 1, "stepMs": 10 });

#[tokio::test]
async fn watch_streams_the_callers_changes_as_list_shows_them_and_no_one_elses() {
    let jobs = Service::start().await;
    let mut watch = EventStream::open(&jobs, "alice", None).await;
    let ready = watch.ready(false).await;
    assert!(ready.id.is_some(), "ready carries the position: {ready:?}");

    let bobs = jobs.create_demo("bob", QUICK()).await;
    let task = jobs
        .create_demo("alice", json!({ "steps": 2, "stepMs": 50 }))
        .await;
    let frames = watch
        .until(Duration::from_secs(20), |f| {
            completed(std::slice::from_ref(f)).contains(&task)
        })
        .await;
    let tasks: Vec<Value> = frames
        .iter()
        .filter(|f| f.event == "task")
        .map(Sse::task)
        .collect();
    let statuses: Vec<&str> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{statuses:?}");
    assert!(statuses.contains(&"processing"), "{statuses:?}");
    for task in &tasks {
        assert_eq!(
            task["userId"], "alice",
            "bob's task {bobs} must not reach alice"
        );
        for hidden in ["payload", "events", "steps", "payloadHistory"] {
            assert!(task.get(hidden).is_none(), "{hidden} is left out: {task}");
        }
    }
    assert!(
        frames
            .iter()
            .filter(|f| f.event == "task")
            .all(|f| f.id.is_some())
    );
    // The last event is the task as `list` shows it now.
    let listed = jobs.get("action=list&userId=alice").await;
    assert_eq!(listed.body["tasks"][0], *tasks.last().unwrap());
}

/// A dropped connection resumes from its `Last-Event-ID` and misses nothing: on the same
/// process (from its window of recent changes) and on another (catching up from the database).
#[tokio::test]
async fn a_dropped_watch_resumes_from_last_event_id_with_nothing_missed() {
    let jobs = Service::start().await;
    let other = jobs.start_sharing_db(&[]).await;
    for (row, reconnect_to) in [("same process", &jobs), ("another process", &other)] {
        let mut watch = EventStream::open(&jobs, "carol", None).await;
        watch.ready(false).await;
        let first = jobs.create_demo("carol", QUICK()).await;
        watch
            .until(Duration::from_secs(20), |f| {
                completed(std::slice::from_ref(f)).contains(&first)
            })
            .await;
        // Every change of `first` read (a summary is the task when the stream read it, so its
        // `completed` may show before its last change's event).
        watch.settle(Duration::from_millis(1500)).await;
        let last_id = watch.last_id.clone().expect("an id");
        drop(watch);

        // While nobody watches: tasks created, run and finished, and another user's churn.
        let mut missed = HashSet::new();
        for _ in 0..5 {
            missed.insert(jobs.create_demo("carol", QUICK()).await);
            jobs.create_demo("dave", QUICK()).await;
        }
        for task in &missed {
            jobs.wait_for_status(task, "completed").await;
        }

        let mut watch = EventStream::open(reconnect_to, "carol", Some(&last_id)).await;
        watch.ready(true).await;
        let mut seen = HashSet::new();
        let frames = watch
            .until(Duration::from_secs(20), |f| {
                seen.extend(completed(std::slice::from_ref(f)));
                missed.is_subset(&seen)
            })
            .await;
        assert!(
            !frames.iter().any(|f| f.event == "reset"),
            "{row}: {frames:?}"
        );
        assert!(
            !completed(&frames).contains(&first),
            "{row}: nothing from before Last-Event-ID is sent again"
        );
        // Live changes still arrive after the catch-up.
        let after = jobs.create_demo("carol", QUICK()).await;
        watch
            .until(Duration::from_secs(20), |f| {
                completed(std::slice::from_ref(f)).contains(&after)
            })
            .await;
    }
}

/// A position the database no longer has (or never had) cannot be resumed: `reset`, then live
/// changes. A `Last-Event-ID` the service never sent is a 400.
#[tokio::test]
async fn a_position_that_cannot_be_resumed_answers_reset_and_a_forged_one_400() {
    let jobs = Service::start().await;
    let unknown = {
        let token = doc! { "t": { "_data": "00" } };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(mongodb::bson::to_vec(&token).unwrap())
    };
    let mut watch = EventStream::open(&jobs, "erin", Some(&unknown)).await;
    watch.ready(true).await;
    let reset = watch.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(reset.event, "reset", "{reset:?}");
    let task = jobs.create_demo("erin", QUICK()).await;
    watch
        .until(Duration::from_secs(20), |f| {
            completed(std::slice::from_ref(f)).contains(&task)
        })
        .await;

    for forged in ["not-an-id", "e30"] {
        let reply = jobs
            .send(
                jobs.request(reqwest::Method::GET, "action=watch&userId=erin")
                    .header("last-event-id", forged),
            )
            .await;
        assert_eq!(
            reply.refusal(),
            (400, Some("INVALID_QUERY")),
            "{forged}: {}",
            reply.body
        );
    }
}

/// Fifty open pages on one process: every one gets the change, from ONE change stream, and the
/// database sees no more connections or cursors than a handful of requests would open.
#[tokio::test]
async fn fifty_watchers_on_one_process_share_one_change_stream() {
    let db = OwnDatabase::start().await;
    let uri = db.uri();
    let jobs = Service::start_with(&[("MONGODB_URI", &uri)]).await;
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let status = || async {
        let reply = client
            .database("admin")
            .run_command(doc! { "serverStatus": 1 })
            .await
            .unwrap();
        let connections = reply
            .get_document("connections")
            .unwrap()
            .get_i32("current")
            .unwrap_or(0);
        let cursors = reply
            .get_document("metrics")
            .and_then(|m| m.get_document("cursor"))
            .and_then(|c| c.get_document("open"))
            .map(|o| {
                o.get("total")
                    .and_then(|t| t.as_i64().or(t.as_i32().map(i64::from)))
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        (connections, cursors)
    };
    let mut first = EventStream::open(&jobs, "u0", None).await;
    first.ready(false).await;
    let (connections_before, _) = status().await;

    let mut watches = vec![first];
    for n in 1..50 {
        let mut watch = EventStream::open(&jobs, &format!("u{}", n % 5), None).await;
        watch.ready(false).await;
        watches.push(watch);
    }
    let (connections, cursors) = status().await;
    assert!(
        connections <= connections_before + 1,
        "50 watchers opened {} more connections",
        connections - connections_before
    );
    assert!(
        cursors <= 2,
        "one change stream, not one per watcher: {cursors} cursors open"
    );

    let tasks: HashMap<String, String> = futures_util::future::join_all((0..5).map(|n| {
        let jobs = &jobs;
        async move {
            (
                format!("u{n}"),
                jobs.create_demo(&format!("u{n}"), QUICK()).await,
            )
        }
    }))
    .await
    .into_iter()
    .collect();
    let reads = watches.iter_mut().enumerate().map(|(n, watch)| {
        let task = tasks[&format!("u{}", n % 5)].clone();
        async move {
            let frames = watch
                .until(Duration::from_secs(30), |f| {
                    completed(std::slice::from_ref(f)).contains(&task)
                })
                .await;
            frames
                .iter()
                .filter(|f| f.event == "task")
                .all(|f| f.task()["taskId"] == task.as_str())
        }
    });
    let only_their_own = futures_util::future::join_all(reads).await;
    assert!(
        only_their_own.iter().all(|ok| *ok),
        "each watcher saw only its user's task"
    );
    assert!(
        jobs.logs().matches("change stream open").count() == 1,
        "{}",
        jobs.logs()
    );
}

/// An idle stream pings with its position and ends cleanly before its time is up.
#[tokio::test]
async fn an_idle_watch_pings_and_ends_cleanly_before_its_time_is_up() {
    let jobs = Service::start_with(&[
        ("JOBS_WATCH_SECONDS", "3"),
        ("JOBS_WATCH_PING_SECONDS", "1"),
    ])
    .await;
    let started = Instant::now();
    let mut watch = EventStream::open(&jobs, "frank", None).await;
    watch.ready(false).await;
    let frames = watch
        .until(Duration::from_secs(10), |f| f.event == "end")
        .await;
    let pings: Vec<&Sse> = frames.iter().filter(|f| f.event == ":").collect();
    assert!(pings.len() >= 2, "{frames:?}");
    assert!(
        pings.iter().all(|p| p.id.is_some()),
        "pings carry the position: {pings:?}"
    );
    assert!(
        watch.next(Duration::from_secs(5)).await.is_none(),
        "the stream closes after end"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    // A reconnect from the ping's position resumes: pings follow, no reset.
    let mut again = EventStream::open(&jobs, "frank", watch.last_id.as_deref()).await;
    again.ready(true).await;
    let next = again.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.event, ":", "a ping, not a reset: {next:?}");
}

/// Changes made WHILE a reconnect catches up on another process are not missed: the catch-up
/// hands over to the process's stream without a gap.
#[tokio::test]
async fn changes_made_during_a_catch_up_are_not_missed() {
    let jobs = Service::start().await;
    let other = jobs.start_sharing_db(&[]).await;
    let mut watch = EventStream::open(&jobs, "nina", None).await;
    let ready = watch.ready(false).await;
    let from = ready.id.expect("ready carries the position");
    drop(watch);

    let writer = {
        let base = jobs.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut created = Vec::new();
            for _ in 0..40 {
                let reply = client
                    .post(format!("{base}/api/jobs?action=create"))
                    .json(&json!({ "type": "demo", "userId": "nina", "payload": QUICK() }))
                    .send()
                    .await
                    .unwrap();
                let body: Value = reply.json().await.unwrap();
                created.push(body["taskId"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            created
        })
    };
    // Reconnect while the writer is busy: the catch-up reads what came before, the stream
    // what comes after, and the handover falls in the middle of the writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut watch = EventStream::open(&other, "nina", Some(&from)).await;
    watch.ready(true).await;
    let created: HashSet<String> = writer.await.unwrap().into_iter().collect();
    let mut seen = HashSet::new();
    let frames = watch
        .until(Duration::from_secs(30), |f| {
            if f.event == "task" {
                seen.insert(f.task()["taskId"].as_str().unwrap().to_owned());
            }
            created.is_subset(&seen)
        })
        .await;
    assert!(!frames.iter().any(|f| f.event == "reset"), "{frames:?}");
}

#[tokio::test]
async fn watch_is_authenticated_like_every_action() {
    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
    let jobs = Service::start_with(&[("JOBS_AUTH_SECRET", SECRET)]).await;
    let watch = |token: Option<String>, query: &'static str| {
        let mut request = jobs.request(reqwest::Method::GET, query);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let token = user_token(SECRET, "grace", 60);
    let refused = [
        (None, "action=watch", 401),
        (Some("not.a.token".to_owned()), "action=watch", 401),
        (Some(user_token(SECRET, "grace", -120)), "action=watch", 401),
        (Some(token.clone()), "action=watch&userId=mallory", 403),
    ];
    for (token, query, status) in refused {
        let reply = crate::support::Reply::read(watch(token, query).await.unwrap()).await;
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
    }
    let mut stream = EventStream::from(watch(Some(token), "action=watch").await.unwrap()).await;
    stream.ready(false).await;
}

/// A database without change streams: 503 `WATCH_UNAVAILABLE`, and the page polls `list`.
#[tokio::test]
async fn a_database_without_change_streams_answers_watch_unavailable() {
    let db = OwnDatabase::start_with(&["--standalone"]).await;
    let jobs = Service::start_with(&[("MONGODB_URI", &db.uri())]).await;
    let reply = jobs.get("action=watch&userId=heidi").await;
    assert_eq!(
        reply.refusal(),
        (503, Some("WATCH_UNAVAILABLE")),
        "{}",
        reply.body
    );
    assert_eq!(jobs.get("action=list&userId=heidi").await.status, 200);
}
