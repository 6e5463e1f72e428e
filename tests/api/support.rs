//! Test support: the real `jobs` binary on a free port against the real SecantusDB that
//! `scripts/test` started (`JOBS_TEST_MONGODB_URI`), one fresh database per service.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

pub fn db_uri() -> String {
    std::env::var("JOBS_TEST_MONGODB_URI")
        .expect("JOBS_TEST_MONGODB_URI is not set: run the tests with scripts/test, which starts SecantusDB")
}

/// A port for a service a test starts, never handed out twice in a run. Ports bound at `:0`
/// and released can be handed out again at once: two services of concurrent tests then raced
/// for one port, and the loser's test talked to the winner (another database). So they come
/// from a counter over 10000..32000, below Linux's ephemeral range (where `:0` binds and
/// outgoing connections take theirs), starting at a point of this process's own, and each is
/// checked free when handed out.
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port nothing listens on: handed out like [`free_port`]'s, so no service of this run will
/// take it later.
pub fn closed_port() -> u16 {
    free_port()
}

/// The audience of [`user_token`]s: deployed test services set `JOBS_AUTH_AUDIENCE` to it.
pub const AUDIENCE: &str = "jobs";

/// A user token as a host application would mint it: HS256, `sub` = user id, `exp`, and `aud`
/// [`AUDIENCE`] (not looked at unless `JOBS_AUTH_AUDIENCE` is set).
pub fn user_token(secret: &str, user: &str, valid_for: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "exp": now + valid_for, "iat": now, "aud": AUDIENCE }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// `(status, code)` of an error reply (`code` absent on a success).
    pub fn refusal(&self) -> (u16, Option<&str>) {
        (self.status, self.body["code"].as_str())
    }

    /// The status, headers and body (JSON, or the text as a JSON string) of a response.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        Self {
            status,
            body,
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn db_commands(&self) -> u32 {
        self.header("x-jobs-db-commands")
            .and_then(|v| v.parse().ok())
            .expect("x-jobs-db-commands header")
    }

    pub fn task_id(&self) -> String {
        self.body["taskId"]
            .as_str()
            .unwrap_or_else(|| panic!("no taskId in {}", self.body))
            .to_owned()
    }
}

pub struct Service {
    child: Child,
    pub base: String,
    pub db_name: String,
    pub log: PathBuf,
    pub tasks: mongodb::Collection<Document>,
    http: reqwest::Client,
}

impl Service {
    /// Development defaults: trusted user ids, self-invocation to itself.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let db_name = format!("test_{}", uuid::Uuid::new_v4().simple());
        Self::start_on(free_port(), db_name, env).await
    }

    /// A second `jobs` process on the same database, configured differently.
    pub async fn start_sharing_db(&self, env: &[(&str, &str)]) -> Self {
        Self::start_on(free_port(), self.db_name.clone(), env).await
    }

    pub async fn start_on(port: u16, db_name: String, env: &[(&str, &str)]) -> Self {
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("{db_name}-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobs"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,mongodb=warn")
            .env("MONGODB_URI", db_uri())
            .env("MONGODB_DB", &db_name)
            .env("VERCEL_DEV_PORT", port.to_string())
            .env("PORT", port.to_string())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn the jobs binary");
        let uri = env
            .iter()
            .find(|(k, v)| *k == "MONGODB_URI" && v.starts_with("mongodb://"))
            .map_or_else(db_uri, |(_, v)| v.to_string());
        let client = mongodb::Client::with_uri_str(uri).await.unwrap();
        let mut service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            tasks: client.database(&db_name).collection("tasks"),
            db_name,
            log,
            http: reqwest::Client::new(),
        };
        service.wait_until_ready().await;
        service
    }

    /// Until the service answers `health`, and it is this process that answers: one that
    /// exited (its port taken) fails the test instead of leaving it to talk to another.
    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let answered = self.http.get(self.url("action=health")).send().await;
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("jobs exited ({status}); log:\n{}", self.logs());
            }
            if answered.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("jobs did not start; log:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, query: &str) -> String {
        format!("{}/api/jobs?{query}", self.base)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("request reaches jobs")).await
    }

    pub fn request(&self, method: reqwest::Method, query: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(query))
    }

    pub async fn post(&self, action: &str, body: Value) -> Reply {
        self.send(
            self.http
                .post(self.url(&format!("action={action}")))
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, query: &str) -> Reply {
        self.send(self.http.get(self.url(query))).await
    }

    /// The plan's retry request, `{taskId, userId}`.
    pub async fn retry(&self, task_id: &str, user: &str) -> Reply {
        self.post("retry", json!({ "taskId": task_id, "userId": user }))
            .await
    }

    /// `jobs` dispatching through the QStash emulator, on a port chosen up front so that its
    /// own URL can be `QSTASH_BASE_URL`.
    pub async fn behind_qstash(
        qstash: &crate::qstash_emulator::QStash,
        extra: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let mut env = qstash.env(&format!("http://127.0.0.1:{port}"));
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Self::start_on(
            port,
            format!("test_{}", uuid::Uuid::new_v4().simple()),
            &env,
        )
        .await
    }

    /// Creates a `demo` task for `user` and returns its id.
    pub async fn create_demo(&self, user: &str, payload: Value) -> String {
        let reply = self
            .post(
                "create",
                json!({ "type": "demo", "userId": user, "payload": payload }),
            )
            .await;
        assert_eq!(reply.status, 201, "create: {}", reply.body);
        reply.task_id()
    }

    /// The stored document, read directly from the database.
    pub async fn task(&self, task_id: &str) -> Document {
        stored_task(&self.tasks, task_id).await
    }

    /// The error group a stored task's failure was filed under (docs/spec.md §3).
    pub async fn error_group(&self, task_id: &str) -> String {
        let task = self.task(task_id).await;
        task.get_str("errorGroup")
            .unwrap_or_else(|_| panic!("task {task_id} has no error group: {task}"))
            .to_owned()
    }

    /// `(status, retryCount, attempts)` of a stored task: the three a retry story moves.
    pub async fn state(&self, task_id: &str) -> (String, i32, i32) {
        state_of(&self.task(task_id).await)
    }

    pub async fn wait_for_status(&self, task_id: &str, status: &str) -> Document {
        wait_for_status(
            &self.tasks,
            task_id,
            status,
            Duration::from_secs(20),
            || self.logs(),
        )
        .await
    }

    /// Every stored task, for "nothing changed" checks.
    /// `get`'s task of `user` (the API's view), asserting a 200.
    pub async fn view(&self, task_id: &str, user: &str) -> Value {
        let reply = self
            .get(&format!("action=get&taskId={task_id}&userId={user}"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["task"].clone()
    }

    pub async fn snapshot(&self) -> Vec<Document> {
        let cursor = self
            .tasks
            .find(doc! {})
            .sort(doc! { "taskId": 1 })
            .await
            .unwrap();
        cursor.try_collect().await.unwrap()
    }

    /// A failed `demo` task of `user` whose first `fail_attempts` attempts fail.
    pub async fn failed_task(&self, user: &str, fail_attempts: u32, max_retries: i64) -> String {
        let payload = json!({ "steps": 2, "stepMs": 0, "failAttempts": fail_attempts });
        let reply = self
            .post("create", json!({ "type": "demo", "userId": user, "payload": payload, "maxRetries": max_retries }))
            .await;
        assert_eq!(reply.status, 201, "create: {}", reply.body);
        let id = reply.task_id();
        self.wait_for_status(&id, "failed").await;
        id
    }
}

/// A stored task by id, read directly from the test's database.
pub async fn stored_task(tasks: &mongodb::Collection<Document>, task_id: &str) -> Document {
    tasks
        .find_one(doc! { "taskId": task_id })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("task {task_id} is not stored"))
}

/// `(status, retryCount, attempts)`: the three a retry story moves.
pub fn state_of(task: &Document) -> (String, i32, i32) {
    (
        task.get_str("status").unwrap().to_owned(),
        task.get_i32("retryCount").unwrap(),
        task.get_i32("attempts").unwrap(),
    )
}

/// Polls the stored task until it has `status` (then checks the invariants there), or fails
/// after `timeout` with the task and `logs()`.
pub async fn wait_for_status(
    tasks: &mongodb::Collection<Document>,
    task_id: &str,
    status: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
) -> Document {
    let deadline = Instant::now() + timeout;
    loop {
        let task = stored_task(tasks, task_id).await;
        if task.get_str("status").unwrap() == status {
            // Every scenario that waits for a state checks the invariants there.
            jobs_core::testing::assert_legal_document(&task);
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task never became {status}: {task}\nlog:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Kills the process at once, as a crash or a platform timeout would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SecantusDB of the test's own, to stop and start under a running service.
pub struct OwnDatabase {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    flags: Vec<&'static str>,
}

impl OwnDatabase {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Started with these flags too (`--standalone`: no change streams).
    pub async fn start_with(flags: &[&'static str]) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("db-{}", uuid::Uuid::new_v4().simple()));
        let mut db = Self {
            port: free_port(),
            dir,
            child: None,
            flags: flags.to_vec(),
        };
        db.resume().await;
        db
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub async fn resume(&mut self) {
        let server = std::env::var("JOBS_TEST_SECANTUSD")
            .expect("JOBS_TEST_SECANTUSD is not set: run the tests with scripts/test");
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new(server)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--storage-path",
            ])
            .arg(&self.dir)
            .args(&self.flags)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start SecantusDB");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "SecantusDB did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
