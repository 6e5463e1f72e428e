//! What a `metrics` scrape costs (`jobs-bench metrics`, run by `scripts/bench metrics` against
//! secantusd-rs): the seed of `bulk` (100,000 tasks: completed, cancelled, failed for four
//! causes), then, through the release `jobs` binary over HTTP with `JOBS_METRICS_TOKEN` set:
//!
//! 1. scrapes that read the database (each one more than the instance's 10 s reuse after the
//!    last, docs/spec.md §20): latency and MongoDB commands;
//! 2. scrapes within the 10 s, answered from the instance's last read;
//! 3. the first metric's query alone, issued directly: ONE `$group` of every task by status and
//!    type, the collection scan a scrape cannot avoid (there is no cheaper way to count every
//!    task by status and type without counters that every transition keeps).
//!
//! Checks that the scrape's `jobs_tasks` add up to the seeded tasks.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};

use crate::calls::{Call, Figures};
use crate::run::col::*;
use crate::run::{Table, thousands};
use crate::{Settings, bulk, floor, number, qstash_sink::Sink, seed, service::Jobs};

const TOKEN: &str = "bench-metrics-token";
/// A little more than the instance's reuse of one read (`METRICS_FRESH`, 10 s).
const FRESH: Duration = Duration::from_millis(10_500);

/// The sum of the `jobs_tasks` samples of an OpenMetrics text.
fn tasks_counted(text: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with("jobs_tasks{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let count = number("BENCH_METRICS_TASKS", 100_000);
    let scrapes = number("BENCH_METRICS_SCRAPES", 6);
    let client = floor::client(&settings.mongodb_uri).await?;
    let db = client.database(&format!("{}_metrics", settings.db));
    let seeded = bulk::build("bulk", count)?;
    let seed_s = seed::insert(&settings.mongodb_uri, &db, &seeded).await?;
    eprintln!("metrics: seeded {count} tasks in {seed_s:.1} s");
    let env = [("JOBS_METRICS_TOKEN", TOKEN)];
    let jobs = Jobs::start_with(settings, db.name(), sink, &env).await?;

    let scrape = async || -> Result<Call> {
        let (call, text) = jobs.get_text("action=metrics", TOKEN).await?;
        ensure!(call.ok, "metrics answered {text}");
        let counted = tasks_counted(&text);
        ensure!(
            counted == count as f64,
            "jobs_tasks adds up to {counted}, not {count}"
        );
        Ok(call)
    };
    let (mut read, mut kept) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..=scrapes {
        eprintln!("metrics: scrape {i} of {scrapes} (and 10 within the 10 s)");
        let call = scrape().await?;
        if i > 0 {
            read.push(call); // the first warms the instance's connections
        }
        for _ in 0..10 {
            kept.push(scrape().await?);
        }
        tokio::time::sleep(FRESH).await;
    }
    let wall = started.elapsed().as_secs_f64();

    let tasks = db.collection::<Document>("tasks");
    let by_status_and_type = vec![doc! { "$group": {
    "_id": { "status": "$status", "type": "$type" }, "n": { "$sum": 1 } } }];
    let mut scans = Vec::new();
    for _ in 0..=scrapes {
        let started = Instant::now();
        let rows: Vec<Document> = tasks
            .aggregate(by_status_and_type.clone())
            .await?
            .try_collect()
            .await?;
        let mut call = Call::since(started, !rows.is_empty());
        call.commands = Some(1);
        scans.push(call);
    }
    scans.remove(0);
    jobs.stop();
    db.drop().await?;

    let (read, kept, scans) = (
        Figures::of(&read, wall),
        Figures::of(&kept, wall),
        Figures::of(&scans, wall),
    );
    println!(
        "Seeded {} tasks (the `bulk` seed: a tenth failed for one cause, a twentieth for three \
         others, a twentieth cancelled, the rest completed; {}-byte payloads), inserted in \
         {seed_s:.1} s. Every scrape's `jobs_tasks` added up to {}.",
        thousands(count),
        seed::PAYLOAD_BYTES,
        thousands(count),
    );
    println!();
    let lead = format!("`metrics` over {} tasks", thousands(count));
    let mut table = Table::new(&[&lead], "the scan alone", &[N, S_P50, S_P99, COMMANDS]);
    table.row(
        &["a scrape that reads (> 10 s after the last read)"],
        &read,
        &scans,
    );
    table.row(
        &["a scrape within 10 s (the instance's last read)"],
        &kept,
        &scans,
    );
    table.row(
        &["ONE `$group` of every task by status and type, issued directly"],
        &scans,
        &read,
    );
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tasks_counted;

    #[test]
    fn counts_only_the_tasks_samples() {
        let text = "# TYPE jobs_tasks gauge\njobs_tasks{status=\"failed\",type=\"demo\"} 3\n\
                    jobs_tasks{status=\"completed\",type=\"demo\"} 7\n\
                    jobs_tasks_other 100\njobs_failed_by_group{group=\"g\"} 3\n# EOF\n";
        assert_eq!(tasks_counted(text), 10.0);
    }
}
