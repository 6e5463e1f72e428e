//! The `jobs` binary under measurement: started in development mode (no `VERCEL_ENV`, so it
//! trusts the `userId` it is sent and answers `x-jobs-db-commands`) with QStash dispatch to the
//! sink switched on for development, driven by `wrk` or by single requests, observed through
//! /proc.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::Settings;
use crate::calls::{Call, Figures};
use crate::qstash_sink::Sink;

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

/// A load: `concurrency` clients for `duration`; `get` gets the task `get_id`.
#[derive(Clone, Copy)]
pub struct Load<'a> {
    pub concurrency: usize,
    pub duration: Duration,
    pub get_id: &'a str,
}

pub struct Jobs {
    child: Child,
    port: u16,
    http: reqwest::Client,
    spawned: Instant,
    /// Milliseconds from exec to the first answered `health`.
    pub to_health_ms: f64,
}

impl Jobs {
    /// `jobs` on the database `db`, once it answers `health`.
    pub async fn start(settings: &Settings, db: &str, sink: &Sink) -> Result<Self> {
        Self::start_with(settings, db, sink, &[]).await
    }

    /// [`Jobs::start`] with more environment variables (`name`, `value`).
    pub async fn start_with(
        settings: &Settings,
        db: &str,
        sink: &Sink,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let http = reqwest::Client::new();
        let spawned = Instant::now();
        let child = Command::new(&settings.jobs_bin)
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("MONGODB_URI", &settings.mongodb_uri)
            .env("MONGODB_DB", db)
            .env("VERCEL_DEV_PORT", port.to_string())
            .env("PORT", port.to_string())
            .env("QSTASH_TOKEN", "bench-token")
            .env("QSTASH_URL", &sink.url)
            .env("USE_QSTASH_IN_DEV", "true")
            .env("QSTASH_BASE_URL", format!("http://127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn jobs")?;
        while raw_get(port, "/api/jobs?action=health").await.is_none() {
            if spawned.elapsed() > Duration::from_secs(10) {
                bail!("jobs did not answer health within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let to_health_ms = Call::since(spawned, true).ms;
        Ok(Self {
            child,
            port,
            http,
            spawned,
            to_health_ms,
        })
    }

    /// Milliseconds from exec to the first answered `health`, and to the first answered `get`
    /// (on a fresh connection, as a cold start's first request).
    pub async fn cold_start(settings: &Settings, sink: &Sink, get: &str) -> Result<(f64, f64)> {
        let mut jobs = Self::start(settings, &settings.db, sink).await?;
        let status = raw_get(jobs.port, &format!("/api/jobs?{get}")).await;
        let to_get = Call::since(jobs.spawned, true).ms;
        jobs.child.kill().await?;
        if status != Some(200) {
            bail!("first get answered {status:?}");
        }
        Ok((jobs.to_health_ms, to_get))
    }

    /// One request to `/api/jobs?{query}` (a POST when it has a body), timed until its answer
    /// is read: the call and the answer's JSON (`null` when it is not JSON).
    pub async fn call(&self, query: &str, body: Option<Value>) -> Result<(Call, Value)> {
        let url = format!("http://127.0.0.1:{}/api/jobs?{query}", self.port);
        let started = Instant::now();
        let request = match &body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let response = request.send().await?;
        let ok = response.status().is_success();
        let commands = response.headers().get("x-jobs-db-commands").cloned();
        let bytes = response.bytes().await?;
        let mut call = Call::since(started, ok);
        call.commands = commands.and_then(|v| v.to_str().ok()?.parse().ok());
        Ok((call, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// One `GET /api/jobs?{query}` with `Authorization: Bearer {token}`, timed until its answer
    /// is read: the call and the answer's text.
    pub async fn get_text(&self, query: &str, token: &str) -> Result<(Call, String)> {
        let url = format!("http://127.0.0.1:{}/api/jobs?{query}", self.port);
        let started = Instant::now();
        let response = self.http.get(url).bearer_auth(token).send().await?;
        let ok = response.status().is_success();
        let commands = response.headers().get("x-jobs-db-commands").cloned();
        let text = response.text().await?;
        let mut call = Call::since(started, ok);
        call.commands = commands.and_then(|v| v.to_str().ok()?.parse().ok());
        Ok((call, text))
    }

    /// User + system CPU time the process has used, in milliseconds.
    pub fn cpu_ms(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks * 10.0) // USER_HZ is 100 on Linux
    }

    /// A `kB` field of /proc/<pid>/status (`VmRSS:`, `VmHWM:`), in KiB.
    pub fn memory_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let kib = |line: &str| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        };
        status
            .lines()
            .find_map(kib)
            .context("no such field in /proc/<pid>/status")
    }

    fn pid(&self) -> Result<u32> {
        self.child.id().context("jobs exited")
    }

    /// Drives `action` (`wrk/{action}.lua`) with `wrk` under `load` (`retry` retries the tasks
    /// of `retry_ids` in turn), with the service's CPU time over the run.
    pub async fn wrk(
        &self,
        action: &str,
        load: &Load<'_>,
        retry_ids: &[String],
    ) -> Result<Figures> {
        let ids_file =
            std::env::temp_dir().join(format!("jobs-bench-ids-{}", uuid::Uuid::new_v4()));
        std::fs::write(&ids_file, retry_ids.join("\n"))?;
        let script = format!("{}/wrk/{action}.lua", env!("CARGO_MANIFEST_DIR"));
        let (connections, seconds) = (load.concurrency, load.duration.as_secs());
        let cpu_before = self.cpu_ms()?;
        let output = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--latency",
            ])
            .args(["-s", &script, &format!("http://127.0.0.1:{}", self.port)])
            .env("TASK_ID", load.get_id)
            .env("IDS_FILE", &ids_file)
            .output()
            .await
            .context("run wrk (apt-get install wrk)")?;
        let _ = std::fs::remove_file(&ids_file);
        let text = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut figures =
            parse_wrk(&text).with_context(|| format!("wrk said:\n{text}\n{stderr}"))?;
        figures.n = (figures.per_second * load.duration.as_secs_f64()).round() as usize;
        figures.cpu_ms = self.cpu_ms()? - cpu_before;
        Ok(figures)
    }

    pub fn stop(mut self) {
        let _ = self.child.start_kill();
    }
}

/// Reads `wrk --latency` output: the 50% and 99% lines, `Requests/sec`, and non-2xx answers.
fn parse_wrk(output: &str) -> Option<Figures> {
    let ms = |text: &str| -> Option<f64> {
        let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
        let unit = match unit {
            "us" => 0.001,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            _ => return None,
        };
        Some(number.parse::<f64>().ok()? * unit)
    };
    let mut figures = Figures::default();
    for line in output.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(value)) => figures.p50_ms = ms(value)?,
            (Some("99%"), Some(value)) => figures.p99_ms = ms(value)?,
            (Some("Requests/sec:"), Some(value)) => figures.per_second = value.parse().ok()?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figures.errors = n.trim().parse().ok()?;
        }
    }
    (figures.per_second > 0.0).then_some(figures)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_output() {
        let output = "Running 5s test\n  Latency Distribution\n     50%  635.00us\n     75%  712.00us\n     90%  801.00us\n     99%    1.23ms\n  7000 requests in 5.00s\n  Non-2xx or 3xx responses: 3\nRequests/sec:   1400.50\n";
        let figures = super::parse_wrk(output).unwrap();
        assert!((figures.p50_ms - 0.635).abs() < 1e-9);
        assert!((figures.p99_ms - 1.23).abs() < 1e-9);
        assert_eq!((figures.per_second, figures.errors), (1400.5, 3));
    }
}
