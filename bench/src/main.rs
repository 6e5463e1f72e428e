//! Benchmarks the release `jobs` binary on this machine (run through `scripts/bench`, which
//! builds it and starts SecantusDB). `jobs-bench`: cold start, latency and throughput of
//! `create`, `get`, `list` and `retry` driven by `wrk` against the floor (the same effect
//! issued directly with the driver, `floor.rs`), memory, binary size and MongoDB commands per
//! action. `jobs-bench scale`: `list` and `retry` for a user with 100,000 tasks against their
//! floor, and the list query's shape (`scale.rs`). `jobs-bench bulk`: `retryMany` of 10,000
//! failed tasks by error group against its floor and against single `retry` calls, and
//! `groups` over 100,000 tasks against the bare aggregation (`bulk.rs`). `jobs-bench plan`:
//! `retry` against the retry handler of the user's plan in Node.js over the same database, and
//! the commands behind the difference (`plan.rs`). Every table goes
//! through one runner (`run.rs`). Prints a Markdown report.

mod bulk;
mod calls;
mod check;
mod floor;
mod metrics;
mod plan;
mod qstash_sink;
mod run;
mod scale;
mod seed;
mod service;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jobs_core::task::{Task, TaskStatus};
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};
use serde_json::json;

use crate::calls::{Call, Figures, quantile};
use crate::run::col::*;
use crate::run::{Table, drive};
use crate::service::{Jobs, Load};

/// Failed tasks per retry run: more than a run gets through at SecantusDB's pace.
const RETRY_POOL: usize = 2_000;

pub struct Settings {
    pub mongodb_uri: String,
    pub db: String,
    pub jobs_bin: String,
}

/// A positive whole number from the variable `name`, or `default`.
pub fn number(name: &str, default: usize) -> usize {
    let value = std::env::var(name).ok().and_then(|s| s.parse().ok());
    value.filter(|n| *n > 0).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let var =
        |name: &str| std::env::var(name).context(format!("{name} is not set (run scripts/bench)"));
    let settings = Settings {
        mongodb_uri: var("BENCH_MONGODB_URI")?,
        db: format!("bench_{}", uuid::Uuid::new_v4().simple()),
        jobs_bin: var("BENCH_JOBS_BIN")?,
    };
    let sink = qstash_sink::start().await?;
    match std::env::args().nth(1).as_deref() {
        None | Some("main") => main_benchmark(&settings, &sink).await,
        Some("scale") => scale::run(&settings, &sink).await,
        Some("bulk") => bulk::run(&settings, &sink).await,
        Some("plan") => plan::run(&settings, &sink).await,
        Some("metrics") => metrics::run(&settings, &sink).await,
        Some(other) => {
            anyhow::bail!(
                "unknown benchmark {other:?}: expected main, scale, bulk, plan or metrics"
            )
        }
    }
}

/// The floor of `action` on `tasks`: the one MongoDB command the action cannot avoid.
/// Whether it did what the service's answer says.
async fn floor_once(
    tasks: &Collection<Document>,
    action: &str,
    get_id: &str,
    retry: Option<&String>,
) -> Result<bool> {
    Ok(match (action, retry) {
        // A new queued task, as `create` stores it.
        ("create", _) => {
            let task = jobs_core::testing::task().owner("bench").build();
            let typed = tasks.clone_with_type::<Task>();
            typed.insert_one(task).await.is_ok()
        }
        // The owner's task by id.
        ("get", _) => {
            let find = tasks.find_one(doc! { "taskId": get_id, "userId": "bench" });
            find.await?.is_some()
        }
        ("list", _) => floor::list(tasks, "bench-list").await?.ok,
        ("retry", Some(id)) => floor::retry(tasks, id, "bench").await?.ok,
        _ => false,
    })
}

/// The floor of `action` on `db` under `load`: [`floor_once`] from as many workers for as long
/// (retrying `retry_ids`).
async fn floor_load(
    db: &Database,
    action: &str,
    load: Load<'_>,
    retry_ids: &[String],
) -> Result<Figures> {
    let tasks: Collection<Document> = db.collection("tasks");
    let once = async |i: usize| -> Result<Option<Call>> {
        let started = Instant::now();
        let done = floor_once(&tasks, action, load.get_id, retry_ids.get(i)).await;
        Ok(Some(Call::since(started, done.unwrap_or(false))))
    };
    let calls = drive(load.concurrency, Some(Instant::now() + load.duration), once).await?;
    Ok(Figures::of(&calls, load.duration.as_secs_f64()))
}

/// Cold start, `wrk` load against the floor, memory, size, commands per action.
async fn main_benchmark(settings: &Settings, sink: &qstash_sink::Sink) -> Result<()> {
    let duration = Duration::from_secs(number("BENCH_SECONDS", 5) as u64);
    let starts = number("BENCH_STARTS", 20);
    let client = floor::client(&settings.mongodb_uri).await?;
    let db = client.database(&settings.db);
    // A task to `get`, a failed one (for `retry`'s commands), 20 to `list`.
    let mut seeded = seed::plain("bench", TaskStatus::Completed, 1);
    seeded.extend(seed::plain("bench", TaskStatus::Failed, 1));
    seeded.extend(seed::plain("bench-list", TaskStatus::Completed, 20));
    seed::insert(&settings.mongodb_uri, &db, &seeded).await?;
    let (get_id, failed_id) = (seeded[0].task_id.to_string(), seeded[1].task_id.to_string());
    let get = format!("action=get&userId=bench&taskId={get_id}");

    // Cold start: exec to first answered `health`, and to first answered `get`.
    let (mut to_health, mut to_get) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        let (health, get) = Jobs::cold_start(settings, sink, &get).await?;
        to_health.push(health);
        to_get.push(get);
    }

    let jobs = Jobs::start(settings, &settings.db, sink).await?;
    // Warm: connections open, indexes ensured.
    let create = json!({ "type": "demo", "userId": "bench" });
    let warm = jobs.call(&get, None).await?.0.ok;
    let warm = warm && jobs.call("action=create", Some(create.clone())).await?.0.ok;
    anyhow::ensure!(warm, "warm-up get or create failed");
    let idle_rss = jobs.memory_kib("VmRSS:")?;
    let (owned, delivery) = (
        json!({ "taskId": failed_id, "userId": "bench" }),
        json!({ "taskId": failed_id }),
    );
    let commands = [
        ("create", "action=create", Some(create)),
        ("get", &get, None),
        ("list", "action=list&userId=bench-list&limit=20", None),
        ("retry", "action=retry", Some(owned.clone())),
        ("cancel", "action=cancel", Some(owned)),
        (
            "process (duplicate delivery)",
            "action=process",
            Some(delivery),
        ),
    ];
    let mut per_action = Table::new(&["action", "MongoDB commands"], "", &[]);
    for (action, query, body) in commands {
        let (call, _) = jobs.call(query, body).await?;
        anyhow::ensure!(call.ok || action != "retry", "retry failed");
        let count = call.commands.map_or("?".into(), |n| n.to_string());
        per_action.cells(vec![format!("`{action}`"), count]);
    }

    let columns = [
        S_P50, S_P99, S_RATE, F_P50, F_P99, F_RATE, RATIO_P50, OVERHEAD, CPU, FAILED,
    ];
    let mut table = Table::new(&["action", "concurrency"], "floor", &columns);
    // Retries run on databases of their own holding one pool of failed tasks each, of the same
    // size for the service and its floor: SecantusDB's findAndModify costs grow with the
    // collection (see BENCHMARKS.md), so equal collections keep the ratio fair.
    let pool = async |concurrency: usize, side: &str| -> Result<(Database, Vec<String>)> {
        let db = client.database(&format!("{}_retry_{side}_c{concurrency}", settings.db));
        let pool = seed::plain("bench", TaskStatus::Failed, RETRY_POOL);
        seed::insert(&settings.mongodb_uri, &db, &pool).await?;
        Ok((db, pool.iter().map(|t| t.task_id.to_string()).collect()))
    };
    for action in ["create", "get", "list", "retry"] {
        for concurrency in [1, 32] {
            let load = Load {
                concurrency,
                duration,
                get_id: &get_id,
            };
            let (service, floor) = if action == "retry" {
                let (service_db, service_ids) = pool(concurrency, "service").await?;
                let (floor_db, floor_ids) = pool(concurrency, "floor").await?;
                let retrying = Jobs::start(settings, service_db.name(), sink).await?;
                let service = retrying.wrk(action, &load, &service_ids).await?;
                // Stopped first: its backlog would load the database under the floor.
                retrying.stop();
                let floor = floor_load(&floor_db, action, load, &floor_ids).await?;
                service_db.drop().await?;
                floor_db.drop().await?;
                (service, floor)
            } else {
                let service = jobs.wrk(action, &load, &[]).await?;
                (service, floor_load(&db, action, load, &[]).await?)
            };
            table.row(
                &[&format!("`{action}`"), &concurrency.to_string()],
                &service,
                &floor,
            );
        }
    }
    let peak_rss = jobs.memory_kib("VmHWM:")?;
    let binary_mib = std::fs::metadata(&settings.jobs_bin)?.len() as f64 / 1_048_576.0;

    let mut measures = Table::new(&["measure", "value"], "", &[]);
    let cold = |what: &str, times: &mut [f64], also: &str| {
        let label = format!("cold start to first `{what}` (median of {starts}{also})");
        vec![label, format!("{:.1} ms", quantile(times, 0.5))]
    };
    measures.cells(cold("health", &mut to_health, ""));
    measures.cells(cold("get", &mut to_get, ", includes connecting to MongoDB"));
    let mib = |label: &str, kib: u64| vec![label.into(), format!("{:.1} MiB", kib as f64 / 1024.0)];
    measures.cells(mib("RSS idle (after start, `health`, `get`)", idle_rss));
    measures.cells(mib("peak RSS under load (c32 runs)", peak_rss));
    measures.cells(vec![
        "release binary size".into(),
        format!("{binary_mib:.2} MiB"),
    ]);
    measures.print();
    println!();
    table.print();
    println!();
    per_action.print();
    jobs.stop();
    db.drop().await?;
    Ok(())
}
