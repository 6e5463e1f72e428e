//! The `jobs` binary under measurement: started in development mode (no `VERCEL_ENV`, so it
//! trusts the `userId` it is sent and answers `x-jobs-db-commands`) with QStash dispatch to the
//! sink switched on for development, driven by `wrk` or by single requests, observed through
//! /proc.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::Settings;
use crate::qstash_sink::Sink;
use crate::seed::Seeded;
use crate::stats::{Figures, Run, parse_wrk};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(settings: &Settings, db: &str, sink: &Sink, port: u16) -> Result<Child> {
    let base = format!("http://127.0.0.1:{port}");
    Command::new(&settings.jobs_bin)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("MONGODB_URI", &settings.mongodb_uri)
        .env("MONGODB_DB", db)
        .env("VERCEL_DEV_PORT", port.to_string())
        .env("PORT", port.to_string())
        .env("QSTASH_TOKEN", "bench-token")
        .env("QSTASH_URL", &sink.url)
        .env("USE_QSTASH_IN_DEV", "true")
        .env("QSTASH_BASE_URL", base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn jobs")
}

/// One HTTP/1.1 request on a fresh connection; the status code, or `None` if nobody answers.
async fn raw_get(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Milliseconds from exec to the first answered `health`, and to the first answered `get`.
pub async fn cold_start(settings: &Settings, sink: &Sink, get_id: &str) -> Result<(f64, f64)> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = spawn(settings, &settings.db, sink, port)?;
    loop {
        if raw_get(port, "/api/jobs?action=health").await.is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("jobs did not answer health within 10 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let health = started.elapsed().as_secs_f64() * 1000.0;
    let status = raw_get(
        port,
        &format!("/api/jobs?action=get&userId=bench&taskId={get_id}"),
    )
    .await;
    let get = started.elapsed().as_secs_f64() * 1000.0;
    if status != Some(200) {
        bail!("first get answered {status:?}");
    }
    child.kill().await?;
    Ok((health, get))
}

pub struct Jobs {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl Jobs {
    /// `jobs` on the database `db`.
    pub async fn start(settings: &Settings, db: &str, sink: &Sink) -> Result<Self> {
        let port = free_port()?;
        let child = spawn(settings, db, sink, port)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while raw_get(port, "/api/jobs?action=health").await.is_none() {
            if Instant::now() > deadline {
                bail!("jobs did not start");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self {
            child,
            port,
            http: reqwest::Client::new(),
        })
    }

    /// The URL of `/api/jobs?{query}` on this instance.
    pub fn url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}/api/jobs?{query}", self.port)
    }

    /// The HTTP client (keep-alive) the benchmark talks to this instance with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A `get` and a `create`: connections open, indexes ensured.
    pub async fn warm_up(&self, get_id: &str) -> Result<()> {
        self.http
            .get(self.url(&format!("action=get&userId=bench&taskId={get_id}")))
            .send()
            .await?
            .error_for_status()?;
        self.http
            .post(self.url("action=create"))
            .json(&serde_json::json!({ "type": "demo", "userId": "bench" }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    fn proc_status(&self, field: &str) -> Result<u64> {
        let pid = self.child.id().context("jobs exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .with_context(|| format!("{field} not in /proc/{pid}/status"))
    }

    /// User + system CPU time the process has used, in milliseconds.
    pub fn cpu_ms(&self) -> Result<f64> {
        let pid = self.child.id().context("jobs exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks * 10.0) // USER_HZ is 100 on Linux
    }

    pub fn rss_kib(&self) -> Result<u64> {
        self.proc_status("VmRSS:")
    }

    pub fn peak_rss_kib(&self) -> Result<u64> {
        self.proc_status("VmHWM:")
    }

    /// `x-jobs-db-commands` of one request of each action.
    pub async fn commands_per_action(
        &self,
        seeded: &Seeded,
    ) -> Result<Vec<(&'static str, String)>> {
        let count = |response: reqwest::Response| {
            response
                .headers()
                .get("x-jobs-db-commands")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned()
        };
        let create = self
            .http
            .post(self.url("action=create"))
            .json(&serde_json::json!({ "type": "demo", "userId": "bench" }))
            .send()
            .await?;
        let created_commands = count(create);
        let get = self
            .http
            .get(self.url(&format!("action=get&userId=bench&taskId={}", seeded.get_id)))
            .send()
            .await?;
        let list = self
            .http
            .get(self.url("action=list&userId=bench-list&limit=20"))
            .send()
            .await?;
        let spare = &seeded.spare_failed;
        let retry = self
            .http
            .post(self.url("action=retry"))
            .json(&serde_json::json!({ "taskId": spare, "userId": "bench" }))
            .send()
            .await?;
        let retry_status = retry.status();
        let retry_commands = count(retry);
        let cancel = self
            .http
            .post(self.url("action=cancel"))
            .json(&serde_json::json!({ "taskId": spare, "userId": "bench" }))
            .send()
            .await?;
        let process = self
            .http
            .post(self.url("action=process"))
            .json(&serde_json::json!({ "taskId": spare }))
            .send()
            .await?;
        if !retry_status.is_success() {
            bail!("retry answered {retry_status}");
        }
        Ok(vec![
            ("create", created_commands),
            ("get", count(get)),
            ("list", count(list)),
            ("retry", retry_commands),
            ("cancel", count(cancel)),
            ("process (duplicate delivery)", count(process)),
        ])
    }

    /// Drives one action with `wrk` at `concurrency` connections for `duration`.
    pub async fn wrk(&self, run: Run<'_>) -> Result<Figures> {
        let Run {
            action,
            concurrency,
            duration,
            get_id,
            retry_ids,
        } = run;
        let ids_file =
            std::env::temp_dir().join(format!("jobs-bench-ids-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&ids_file, retry_ids.join("\n"))?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/wrk");
        let cpu_before = self.cpu_ms()?;
        let output = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{concurrency}"),
                &format!("-d{}s", duration.as_secs()),
                "--latency",
                "-s",
            ])
            .arg(format!("{script}/{action}.lua"))
            .arg(format!("http://127.0.0.1:{}", self.port))
            .env("TASK_ID", get_id)
            .env("IDS_FILE", &ids_file)
            .output()
            .await
            .context("run wrk (apt-get install wrk)")?;
        let _ = std::fs::remove_file(&ids_file);
        let text = String::from_utf8_lossy(&output.stdout);
        let mut figures = parse_wrk(&text).with_context(|| {
            format!(
                "unreadable wrk output:\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        let requests = figures.per_second * duration.as_secs_f64();
        figures.cpu_us_per_request = (self.cpu_ms()? - cpu_before) * 1000.0 / requests;
        Ok(figures)
    }

    pub fn stop(mut self) {
        let _ = self.child.start_kill();
    }
}
