//! Benchmarks the release `jobs` binary on this machine (run through `scripts/bench`, which
//! builds it and starts SecantusDB). `jobs-bench`: cold start, latency and throughput of
//! `create`, `get`, `list` and `retry` driven by `wrk`, the same MongoDB operations issued
//! directly with the driver (the floor), memory, binary size and MongoDB commands per action.
//! `jobs-bench scale`: `list` and `retry` for a user with 100,000 tasks against their floor,
//! and the list query's shape (see `scale.rs`). `jobs-bench bulk`: retry at scale, `retryMany`
//! of 10,000 failed tasks by error group against its floor and against single `retry` calls,
//! and `groups` over 100,000 tasks against the bare aggregation (see `bulk.rs`). Prints a
//! Markdown report.

mod bulk;
mod floor;
mod qstash_sink;
mod scale;
mod seed;
mod service;
mod stats;

use std::time::Duration;

use anyhow::{Context, Result};

use crate::service::Jobs;
use crate::stats::{Figures, Run, median};

/// Failed tasks per retry run: more than a run gets through at SecantusDB's pace.
const RETRY_POOL: usize = 2_000;

pub struct Settings {
    pub mongodb_uri: String,
    pub db: String,
    pub jobs_bin: String,
    pub duration: Duration,
    pub starts: usize,
}

fn settings() -> Result<Settings> {
    let var = |name: &str| {
        std::env::var(name).with_context(|| format!("{name} is not set (run scripts/bench)"))
    };
    Ok(Settings {
        mongodb_uri: var("BENCH_MONGODB_URI")?,
        db: format!("bench_{}", uuid::Uuid::new_v4().simple()),
        jobs_bin: var("BENCH_JOBS_BIN")?,
        duration: Duration::from_secs(
            std::env::var("BENCH_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5),
        ),
        starts: std::env::var("BENCH_STARTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = settings()?;
    let sink = qstash_sink::start().await?;
    match std::env::args().nth(1).as_deref() {
        None | Some("main") => main_benchmark(&settings, &sink).await,
        Some("scale") => scale::run(&settings, &sink).await,
        Some("bulk") => bulk::run(&settings, &sink).await,
        Some(other) => {
            anyhow::bail!("unknown benchmark {other:?}: expected `main`, `scale` or `bulk`")
        }
    }
}

/// Cold start, `wrk` load against the floor, memory, size, commands per action.
async fn main_benchmark(settings: &Settings, sink: &qstash_sink::Sink) -> Result<()> {
    // The floor writes with the write concern the service uses (journaled, majority).
    let client =
        mongodb::Client::with_uri_str(format!("{}/?w=majority&journal=true", settings.mongodb_uri))
            .await?;
    let db = client.database(&settings.db);
    let seeded = seed::main_database(&db).await?;

    // Cold start: exec to first answered `health`, and to first answered `get`.
    let mut to_health = Vec::new();
    let mut to_get = Vec::new();
    for _ in 0..settings.starts {
        let (health, get) = service::cold_start(settings, sink, &seeded.get_id).await?;
        to_health.push(health);
        to_get.push(get);
    }

    let jobs = Jobs::start(settings, &settings.db, sink).await?;
    jobs.warm_up(&seeded.get_id).await?;
    let idle_rss = jobs.rss_kib()?;
    let commands = jobs.commands_per_action(&seeded).await?;

    let mut rows: Vec<(String, usize, Figures, Figures)> = Vec::new();
    for (action, concurrency) in [
        ("create", 1),
        ("create", 32),
        ("get", 1),
        ("get", 32),
        ("list", 1),
        ("list", 32),
    ] {
        let run = |retry_ids| Run {
            action,
            concurrency,
            duration: settings.duration,
            get_id: &seeded.get_id,
            retry_ids,
        };
        let service = jobs.wrk(run(Vec::new())).await?;
        let floor = floor::measure(&db, run(Vec::new())).await?;
        eprintln!("{action} c{concurrency}: service {service:?} floor {floor:?}");
        rows.push((action.to_owned(), concurrency, service, floor));
    }
    // Retries run on databases of their own holding one pool of failed tasks each, of the same
    // size for the service and its floor: SecantusDB's findAndModify costs grow with the
    // collection (see BENCHMARKS.md), so equal collections keep the ratio fair.
    for concurrency in [1, 32] {
        let service_db = client.database(&format!("{}_retry_service_c{concurrency}", settings.db));
        let floor_db = client.database(&format!("{}_retry_floor_c{concurrency}", settings.db));
        let service_ids = seed::failed_pool(&service_db, RETRY_POOL).await?;
        let floor_ids = seed::failed_pool(&floor_db, RETRY_POOL).await?;
        let retrying = Jobs::start(settings, service_db.name(), sink).await?;
        let run = |retry_ids| Run {
            action: "retry",
            concurrency,
            duration: settings.duration,
            get_id: &seeded.get_id,
            retry_ids,
        };
        let service = retrying.wrk(run(service_ids)).await?;
        retrying.stop();
        let floor = floor::measure(&floor_db, run(floor_ids)).await?;
        eprintln!("retry c{concurrency}: service {service:?} floor {floor:?}");
        rows.push(("retry".to_owned(), concurrency, service, floor));
        service_db.drop().await?;
        floor_db.drop().await?;
    }
    let peak_rss = jobs.peak_rss_kib()?;
    let binary_size = std::fs::metadata(&settings.jobs_bin)?.len();

    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| cold start to first `health` (median of {}) | {:.1} ms |",
        settings.starts,
        median(&mut to_health)
    );
    println!(
        "| cold start to first `get` (median of {}, includes connecting to MongoDB) | {:.1} ms |",
        settings.starts,
        median(&mut to_get)
    );
    println!(
        "| RSS idle (after start, `health`, `get`) | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| peak RSS under load (c32 runs) | {:.1} MiB |",
        peak_rss as f64 / 1024.0
    );
    println!(
        "| release binary size | {:.2} MiB |",
        binary_size as f64 / (1024.0 * 1024.0)
    );
    println!();
    println!(
        "| action | concurrency | service p50 | service p99 | service req/s | floor p50 | floor p99 | floor ops/s | p50 ratio | p50 overhead | service CPU per request | failed (service / floor) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (action, concurrency, service, floor) in &rows {
        println!(
            "| `{action}` | {concurrency} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} | {:+.2} ms | {:.0} µs | {} / {} |",
            service.p50_ms,
            service.p99_ms,
            service.per_second,
            floor.p50_ms,
            floor.p99_ms,
            floor.per_second,
            service.p50_ms / floor.p50_ms,
            service.p50_ms - floor.p50_ms,
            service.cpu_us_per_request,
            service.errors,
            floor.errors,
        );
    }
    println!();
    println!("| action | MongoDB commands |");
    println!("| --- | --- |");
    for (action, n) in commands {
        println!("| `{action}` | {n} |");
    }
    jobs.stop();
    db.drop().await?;
    Ok(())
}
