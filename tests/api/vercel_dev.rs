//! The service under `vercel dev`, reproduced by `e2e/vercel-dev.mjs` with the Vercel CLI's own
//! Rust builder (`@vercel/rust`'s `startDevServer`): `cargo build --bin jobs`, then one `jobs`
//! process per request, sent SIGTERM as soon as its response is closed. So these tests see what
//! a `vercel dev` user sees: self-invocation back through the dev server, the plan's rewritten
//! URL, QStash publishing to the dev server, and `process` work that outlives its request
//! (`wait_until`, drained after the SIGTERM).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::qstash_emulator::QStash;
use crate::support::{self, Reply, db_uri, free_port};

/// What the Vercel CLI would inherit from a developer's shell: the Rust toolchain, nothing else.
const INHERITED: [&str; 7] = [
    "PATH",
    "HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_TARGET_DIR",
    "RUSTFLAGS",
];

/// `node e2e/vercel-dev.mjs` on a port of its own, with a fresh database. It runs in its own
/// process group: dropping it kills that group, so no `cargo` or `jobs` process outlives it.
pub struct VercelDev {
    child: Child,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
    pub tasks: mongodb::Collection<Document>,
    http: reqwest::Client,
}

impl VercelDev {
    /// `env` are the project's `.env` variables, on top of the database and `RUST_LOG`.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_on(free_port(), env).await
    }

    pub async fn start_on(port: u16, env: &[(&str, &str)]) -> Self {
        let db_name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vercel-dev");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{db_name}.log"));
        let env_file = dir.join(format!("{db_name}.env"));

        // `VERCEL_URL=` is named so that the dev server sets it to localhost:<port>, as
        // `vercel dev` does with a project's `.env`.
        let defaults = [
            ("MONGODB_URI", db_uri()),
            ("MONGODB_DB", db_name.clone()),
            ("RUST_LOG", "info,mongodb=warn".to_owned()),
            ("VERCEL_URL", String::new()),
        ];
        let mut dotenv = String::new();
        for (key, value) in defaults
            .iter()
            .filter(|(key, _)| !env.iter().any(|(k, _)| k == key))
            .map(|(k, v)| (*k, v.as_str()))
            .chain(env.iter().copied())
        {
            assert!(!value.contains(['\'', '\n']), "{key} cannot be quoted");
            dotenv.push_str(&format!("{key}='{value}'\n"));
        }
        std::fs::write(&env_file, dotenv).unwrap();

        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new("node");
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("e2e/vercel-dev.mjs")
            .args(["--listen", &port.to_string(), "--env-file"])
            .arg(&env_file)
            .arg("--log")
            .arg(&log)
            .env_clear()
            .envs(
                INHERITED
                    .iter()
                    .filter_map(|k| Some((k, std::env::var(k).ok()?))),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = command
            .spawn()
            .expect("spawn node e2e/vercel-dev.mjs (Node.js, and `npm ci` in e2e/)");
        let client = mongodb::Client::with_uri_str(db_uri()).await.unwrap();
        let mut dev = Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
            tasks: client.database(&db_name).collection("tasks"),
            // Every request builds first: with another cargo holding the target directory,
            // or a cold one, that takes minutes.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(900))
                .build()
                .unwrap(),
        };
        dev.wait_until_ready().await;
        dev
    }

    /// Until node listens, connections are refused; the first request then waits for
    /// `cargo build`.
    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.http.get(self.url("action=health")).send().await {
                Ok(response) if response.status() == 200 => return,
                Ok(response) => panic!(
                    "health through vercel dev answered {}: {}\nlog:\n{}",
                    response.status(),
                    response.text().await.unwrap_or_default(),
                    self.logs()
                ),
                Err(error) if error.is_connect() && Instant::now() < deadline => {}
                Err(error) => panic!("vercel dev: {error}\nlog:\n{}", self.logs()),
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vercel-dev.mjs exited ({status})\nlog:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The dev server's log: its request lines and every `jobs` process's output.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, query: &str) -> String {
        format!("{}/api/jobs?{query}", self.base)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("request reaches vercel dev")).await
    }

    pub async fn post_to(&self, url: &str, body: Value) -> Reply {
        self.send(self.http.post(url).json(&body)).await
    }

    pub async fn post(&self, action: &str, body: Value) -> Reply {
        self.post_to(&self.url(&format!("action={action}")), body)
            .await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(self.http.get(url)).await
    }

    /// A `demo` task of `user` that fails its first attempt; returns its id once it failed.
    pub async fn failed_task(&self, user: &str) -> String {
        let payload = json!({ "steps": 2, "stepMs": 50, "failAttempts": 1 });
        let created = self
            .post(
                "create",
                json!({ "type": "demo", "userId": user, "payload": payload }),
            )
            .await;
        assert_eq!(
            created.status,
            201,
            "create: {}\n{}",
            created.body,
            self.logs()
        );
        let id = created.task_id();
        let failed = self.wait_for_status(&id, "failed").await;
        assert_eq!(
            failed.get_str("lastError").unwrap(),
            "Simulated failure on attempt 1"
        );
        id
    }

    /// The stored document, read directly from the database (polling through the dev server
    /// would build and start a process per poll).
    pub async fn task(&self, task_id: &str) -> Document {
        support::stored_task(&self.tasks, task_id).await
    }

    /// `(status, retryCount, attempts)`.
    pub async fn state(&self, task_id: &str) -> (String, i32, i32) {
        support::state_of(&self.task(task_id).await)
    }

    /// Up to 60 s: every hop through the dev server builds and starts a process.
    pub async fn wait_for_status(&self, task_id: &str, status: &str) -> Document {
        let timeout = Duration::from_secs(60);
        support::wait_for_status(&self.tasks, task_id, status, timeout, || self.logs()).await
    }
}

impl Drop for VercelDev {
    fn drop(&mut self) {
        // The whole group: node, its `cargo build`s and every `jobs` process, draining or not.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The plan's retry story, every hop through the dev server: `create` self-invokes `process`
/// at `http://localhost:<port>`, the first attempt fails, `retry` re-queues and self-invokes
/// again, the second attempt completes. Each `process` answers 202 and is sent SIGTERM at once;
/// the work still finishes, in `wait_until`, while `vercel_runtime` drains.
#[tokio::test]
async fn retry_story_by_self_invocation_through_vercel_dev() {
    let dev = VercelDev::start(&[]).await;
    let own = format!("http://localhost:{}/api/jobs?action=process", dev.port);
    let health = dev.get(&dev.url("action=health")).await;
    assert_eq!(
        (&health.body["dispatch"], &health.body["destination"]),
        (&json!("self"), &json!(own)),
        "{}",
        health.body
    );

    let id = dev.failed_task("vercel-dev-user").await;
    let retry = dev
        .post(
            "retry",
            json!({ "taskId": id, "userId": "vercel-dev-user" }),
        )
        .await;
    assert_eq!(
        (retry.status, &retry.body),
        (200, &json!({ "success": true, "taskId": id })),
        "{}",
        dev.logs()
    );
    dev.wait_for_status(&id, "completed").await;
    assert_eq!(dev.state(&id).await, ("completed".to_owned(), 1, 2));

    let got = dev
        .get(&dev.url(&format!("action=get&taskId={id}&userId=vercel-dev-user")))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        (
            &got.body["task"]["status"],
            &got.body["task"]["retryCount"],
            &got.body["task"]["attempts"]
        ),
        (&json!("completed"), &json!(1), &json!(2))
    );

    // Two self-invocations to the dev server, each process shut down after its 202 and before
    // its attempt finished.
    let logs = dev.logs();
    assert_eq!(
        logs.matches(&format!("transport=\"self\" destination=\"{own}\""))
            .count(),
        2,
        "{logs}"
    );
    let shut_down = logs
        .match_indices("POST /api/jobs?action=process -> 202")
        .map(|(at, _)| at)
        .collect::<Vec<_>>();
    let finished = logs
        .match_indices("task finished")
        .map(|(at, _)| at)
        .collect::<Vec<_>>();
    assert_eq!((shut_down.len(), finished.len()), (2, 2), "{logs}");
    assert!(
        shut_down[0] < finished[0] && shut_down[1] < finished[1],
        "{logs}"
    );
}

/// The plan's URL, `/api/index.js?service=jobs&action=...`, reaches the function through the
/// rewrite in vercel.json; every other path is a file of public/.
#[tokio::test]
async fn the_plans_url_is_rewritten_to_the_function() {
    let dev = VercelDev::start(&[]).await;
    let id = dev.failed_task("plan-user").await;
    let retry = dev
        .post_to(
            &format!("{}/api/index.js?service=jobs&action=retry", dev.base),
            json!({ "taskId": id, "userId": "plan-user" }),
        )
        .await;
    assert_eq!(
        (retry.status, &retry.body),
        (200, &json!({ "success": true, "taskId": id })),
        "{}",
        dev.logs()
    );
    dev.wait_for_status(&id, "completed").await;
    assert_eq!(dev.state(&id).await, ("completed".to_owned(), 1, 2));

    // A refusal comes from the function too, in its JSON.
    let again = dev
        .post_to(
            &format!("{}/api/index.js?service=jobs&action=retry", dev.base),
            json!({ "taskId": id, "userId": "plan-user" }),
        )
        .await;
    assert_eq!(
        (again.status, &again.body["error"]),
        (409, &json!("Only failed tasks can be retried."))
    );

    let page = dev.get(&format!("{}/", dev.base)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(page.body.as_str().unwrap().contains("<script"));
    let missing = dev.get(&format!("{}/nothing-here.js", dev.base)).await;
    assert_eq!(missing.status, 404);
}

/// QStash in development (`USE_QSTASH_IN_DEV=true`) with `QSTASH_BASE_URL` naming the dev
/// server, as with ngrok: the emulator's signed deliveries reach `process` through it.
#[tokio::test]
async fn retry_story_through_qstash_delivering_to_vercel_dev() {
    let qstash = QStash::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = qstash.env(&base);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dev = VercelDev::start_on(port, &env).await;

    let id = dev.failed_task("qstash-user").await;
    let retry = dev
        .post("retry", json!({ "taskId": id, "userId": "qstash-user" }))
        .await;
    assert_eq!(retry.status, 200, "{}\n{}", retry.body, dev.logs());
    dev.wait_for_status(&id, "completed").await;
    assert_eq!(dev.state(&id).await, ("completed".to_owned(), 1, 2));

    let destination = format!("{base}/api/jobs?action=process");
    let published = qstash.published();
    assert_eq!(published.len(), 2, "create and retry: {published:?}");
    assert!(
        published.iter().all(|p| p.destination == destination),
        "{published:?}"
    );
    let delivered = qstash.delivered();
    assert!(
        delivered.len() == 2 && delivered.iter().all(|d| d.status == Some(202)),
        "{delivered:?}\n{}",
        dev.logs()
    );
}
