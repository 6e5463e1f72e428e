//! The seed comparison (`jobs-bench plan`, run by `scripts/bench plan` on both SecantusDB
//! servers): the service's `retry` against the retry handler of the user's plan
//! (`bench/plan/server.js`: Node.js, `findOne` + `updateOne` + `publishJSON`, as written in the
//! plan), both over HTTP, against the same collection and each publishing to a QStash sink of
//! its own, one request at a time, alternating, each on a fresh failed task. Then the commands
//! behind the difference, each alone on fresh failed tasks of the same collection.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use jobs_core::task::{Task, TaskStatus};
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::{Collection, Database};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::calls::{Call, Figures};
use crate::qstash_sink::{self, Sink};
use crate::run::col::*;
use crate::run::{Col, Table, WARM_UP, alternate, drive, thousands};
use crate::service::Jobs;
use crate::{Settings, check, floor, number, seed};

const USER: &str = "bench";

/// The plan's endpoint, started on `db` with its own QStash sink, once it answers `health`.
struct Plan {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Plan {
    async fn start(settings: &Settings, db: &str, sink: &Sink) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/plan");
        // The service's write concern, so both sides pay the same for a write.
        let uri = format!("{}/?w=majority&journal=true", settings.mongodb_uri);
        let child = Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("MONGODB_URI", uri)
            .env("MONGODB_DB", db)
            .env("QSTASH_TOKEN", "bench-token")
            .env("QSTASH_URL", &sink.url)
            .env("USE_QSTASH_IN_DEV", "true")
            .env("QSTASH_BASE_URL", format!("http://127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn node bench/plan/server.js (scripts/bench runs npm ci there)")?;
        let (url, http) = (format!("http://127.0.0.1:{port}"), reqwest::Client::new());
        let started = Instant::now();
        loop {
            let health = http.get(format!("{url}/health")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the plan's server did not answer health within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Plan { child, url, http })
    }

    /// The plan's `retry` of `task_id`, timed until its answer is read.
    async fn retry(&self, task_id: &str) -> Result<Call> {
        let started = Instant::now();
        let response = self
            .http
            .post(format!(
                "{}/api/index.js?service=jobs&action=retry",
                self.url
            ))
            .json(&json!({ "taskId": task_id, "userId": USER }))
            .send()
            .await?;
        let ok = response.status().is_success();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        Ok(Call::since(started, ok && answer["success"] == true))
    }

    fn stop(mut self) {
        let _ = self.child.start_kill();
    }
}

/// The shapes of the collection (tasks in it, timeline events per task) from
/// `BENCH_PLAN_SHAPES`, e.g. `500x3,2000x50`.
fn shapes(text: &str) -> Result<Vec<(usize, usize)>> {
    let shape = |s: &str| -> Option<(usize, usize)> {
        let (tasks, events) = s.trim().split_once('x')?;
        Some((tasks.parse().ok()?, events.parse().ok()?))
    };
    let shapes: Option<Vec<_>> = text.split(',').map(shape).collect();
    shapes
        .filter(|s| !s.is_empty())
        .context("BENCH_PLAN_SHAPES is a list of <tasks>x<events>, e.g. 500x3,2000x50")
}

/// A way to retry a task, or one command of one, issued directly on a fresh failed task.
#[derive(Clone, Copy)]
enum Way {
    PlanFind,
    PlanUpdate,
    PlanUpdateUnjournaled,
    ServiceFindAndModify,
    FindAndModifyWithoutExpr,
    UpdateWithExpr,
    FindThenPinnedUpdate,
}

/// The commands compared: what the plan sends, what the service's `retry` sent until issue 17
/// (`findAndModify` with the `$expr` guard), the same without the `$expr` or without
/// `findAndModify`, and what it sends now (a read, then an `updateOne` pinned on it).
const WAYS: [(Way, &str); 7] = [
    (Way::PlanFind, "plan: `findOne {taskId}`"),
    (
        Way::PlanUpdate,
        "plan: `updateOne {taskId}` (its `$set` and `$inc`)",
    ),
    (
        Way::PlanUpdateUnjournaled,
        "plan: the same `updateOne` with `{w: 1}`, unjournaled (the driver's default)",
    ),
    (
        Way::ServiceFindAndModify,
        "service before issue 17: `findAndModify` with the `$expr` guard",
    ),
    (
        Way::FindAndModifyWithoutExpr,
        "`findAndModify`, the same without `$expr`",
    ),
    (Way::UpdateWithExpr, "`updateOne` with the `$expr` guard"),
    (
        Way::FindThenPinnedUpdate,
        "service now: `findOne {taskId}`, then `updateOne` pinned to the counts read, no `$expr`",
    ),
];

/// `way` on the task `id`: whether it applied (found the task, or changed it).
async fn issue(tasks: &Collection<Document>, way: Way, id: &str) -> Result<bool> {
    let (mut filter, update) = requeue_with_expr(id);
    Ok(match way {
        Way::PlanFind => tasks.find_one(doc! { "taskId": id }).await?.is_some(),
        Way::PlanUpdate | Way::PlanUpdateUnjournaled => {
            let update = doc! {
                "$set": { "status": "queued", "progress": 0, "lastError": Bson::Null,
                          "updatedAt": DateTime::now() },
                "$inc": { "retryCount": 1 },
            };
            let mut updated = tasks.update_one(doc! { "taskId": id }, update);
            if let Way::PlanUpdateUnjournaled = way {
                let concern = WriteConcern::builder().w(Acknowledgment::Nodes(1));
                updated = updated.write_concern(concern.journal(false).build());
            }
            updated.await?.modified_count == 1
        }
        Way::ServiceFindAndModify => {
            let before = tasks.find_one_and_update(filter, update).await?;
            before.is_some()
        }
        Way::FindAndModifyWithoutExpr => {
            filter.remove("$expr");
            let before = tasks.find_one_and_update(filter, update).await?;
            before.is_some()
        }
        Way::UpdateWithExpr => tasks.update_one(filter, update).await?.modified_count == 1,
        Way::FindThenPinnedUpdate => {
            let task = tasks.find_one(doc! { "taskId": id }).await?;
            let task = task.context("no such task")?;
            filter.remove("$expr");
            filter.insert("retryCount", task.get_i32("retryCount")?);
            filter.insert("maxRetries", task.get_i32("maxRetries")?);
            tasks.update_one(filter, update).await?.modified_count == 1
        }
    })
}

/// The retry the service sent before issue 17: [`floor::requeue`]'s reset with the guard
/// `$expr: {retryCount < maxRetries}` instead of `retriesLeft > 0`.
fn requeue_with_expr(id: &str) -> (Document, Document) {
    let (mut filter, mut update) = floor::requeue(id, USER, &format!("user:{USER}"));
    filter.remove("retriesLeft");
    filter.insert("$expr", doc! { "$lt": ["$retryCount", "$maxRetries"] });
    if let Ok(inc) = update.get_document_mut("$inc") {
        inc.remove("retriesLeft");
    }
    (filter, update)
}

/// Whose each picked task is, in the collection's order: `0` the service's, `1` the plan's,
/// `2 + w` for the `w`-th of [`WAYS`]; a pair of the first two per retry (and warm-up), the
/// `per_command` calls of each way spread evenly between them.
fn sides(n: usize, per_command: usize) -> Vec<usize> {
    let rounds = WARM_UP + n;
    let mut order = Vec::new();
    for round in 0..rounds {
        order.extend([0, 1]);
        for call in 0..per_command {
            if call * rounds / per_command == round {
                order.extend(2..2 + WAYS.len());
            }
        }
    }
    order
}

/// BSON bytes of `task` as stored, and of its `events`.
fn sizes(task: &Task) -> Result<(usize, usize)> {
    let stored = bson::to_document(task)?;
    let bytes = |d: &Document| -> Result<usize> {
        let mut out = Vec::new();
        d.to_writer(&mut out)?;
        Ok(out.len())
    };
    let mut without = stored.clone();
    without.remove("events");
    Ok((bytes(&stored)?, bytes(&stored)? - bytes(&without)?))
}

pub async fn run(settings: &Settings, sink: &Sink) -> Result<()> {
    let (n, per_command) = (
        number("BENCH_PLAN_REQUESTS", 100),
        number("BENCH_PLAN_COMMAND_CALLS", 20),
    );
    let listed = std::env::var("BENCH_PLAN_SHAPES");
    let shapes = shapes(listed.as_deref().unwrap_or("500x3,2000x3,2000x50"))?;
    let client = floor::client(&settings.mongodb_uri).await?;
    let db = client.database(&format!("{}_plan", settings.db));
    let tasks: Collection<Document> = db.collection("tasks");
    let plan_sink = qstash_sink::start().await?;
    let jobs = Jobs::start(settings, db.name(), sink).await?;
    let plan = Plan::start(settings, db.name(), &plan_sink).await?;

    let speed: Col = ("plan p50 / service p50", |s, f| {
        format!("{:.2}", f.p50_ms / s.p50_ms)
    });
    let speed_p99: Col = ("plan p99 / service p99", |s, f| {
        format!("{:.2}", f.p99_ms / s.p99_ms)
    });
    let commands: Col = ("service MongoDB commands", |s, _| s.commands.join(", "));
    let failed: Col = ("failed (service / plan)", |s, f| {
        format!("{} / {}", s.errors, f.errors)
    });
    let columns = [
        N, S_P50, S_P99, F_P50, F_P99, speed, speed_p99, OVERHEAD, CPU, commands, failed,
    ];
    let lead = ["tasks in the collection", "events per task (task size)"];
    let mut side_by_side = Table::new(&lead, "plan", &columns);
    let p50: Col = ("p50", |s, _| format!("{:.2} ms", s.p50_ms));
    let p99: Col = ("p99", |s, _| format!("{:.2} ms", s.p99_ms));
    let missed: Col = ("did not apply", |s, _| s.errors.to_string());
    let lead = [
        "tasks",
        "events",
        "issued directly (one at a time, a fresh failed task each)",
    ];
    let mut alone = Table::new(&lead, "", &[N, p50, p99, missed]);
    let mut explained = Vec::new();

    for &(count, events) in &shapes {
        let needed = 2 * (WARM_UP + n) + WAYS.len() * per_command;
        ensure!(
            count >= needed,
            "{count} tasks for {needed} retries: raise the tasks of BENCH_PLAN_SHAPES or lower \
             BENCH_PLAN_REQUESTS / BENCH_PLAN_COMMAND_CALLS"
        );
        let seeded = seed::spread(USER, count, events, |_, t| t.status(TaskStatus::Failed))?;
        let seeded_s = seed::insert(&settings.mongodb_uri, &db, &seeded).await?;
        let (bytes, event_bytes) = sizes(&seeded[0])?;
        eprintln!("plan: {count} tasks with {events} events seeded in {seeded_s:.1} s");
        // Every side's tasks spread evenly over the whole collection (its scan order), so
        // each acts on documents at the same positions: the service's and the plan's
        // alternately, the commands' in between.
        let picked = seeded.iter().step_by(count / needed).take(needed);
        let mut by_side: Vec<Vec<String>> = vec![Vec::new(); 2 + WAYS.len()];
        for (id, side) in picked
            .map(|t| t.task_id.to_string())
            .zip(sides(n, per_command))
        {
            by_side[side].push(id);
        }
        let (service_ids, plan_ids) = (&by_side[0], &by_side[1]);

        let sent = (sink.counts(), plan_sink.counts());
        let (service, planned) = alternate(
            &jobs,
            n,
            async |i| {
                let body = json!({ "taskId": service_ids[i], "userId": USER });
                Ok(jobs.call("action=retry", Some(body)).await?.0)
            },
            |i| plan.retry(&plan_ids[i]),
        )
        .await?;
        let published = (
            (sink.counts() - sent.0).messages,
            (plan_sink.counts() - sent.1).messages,
        );
        let retried = |ids: &[String]| {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let filter = doc! { "taskId": { "$in": ids }, "status": "queued", "retryCount": 1 };
            tasks.count_documents(filter)
        };
        let done = (retried(service_ids).await?, retried(plan_ids).await?);
        let calls = (WARM_UP + n) as u64;
        ensure!(
            done == (calls, calls) && published == (calls, calls),
            "after {calls} retries each: queued with one retry {done:?}, published {published:?} \
             (service, plan)"
        );
        let label = [
            thousands(count),
            format!(
                "{events} ({} bytes, events {event_bytes})",
                thousands(bytes)
            ),
        ];
        side_by_side.row(&[&label[0], &label[1]], &service, &planned);

        for (&(way, name), ids) in WAYS.iter().zip(&by_side[2..]) {
            let once = async |i: usize| -> Result<Option<Call>> {
                let Some(id) = ids.get(i) else {
                    return Ok(None);
                };
                let started = Instant::now();
                let applied = issue(&tasks, way, id).await?;
                Ok(Some(Call::since(started, applied)))
            };
            let started = Instant::now();
            let calls = drive(1, None, once).await?;
            let figures = Figures::of(&calls, started.elapsed().as_secs_f64());
            let lead = [thousands(count), events.to_string(), name.to_string()];
            alone.row(&[&lead[0], &lead[1], &lead[2]], &figures, &figures);
        }
        // Of the last shape; on a task retried already, so a write explained is a no-op.
        explained = explain(&db, &service_ids[0]).await;
    }
    jobs.stop();
    plan.stop();
    println!(
        "Each retry on a fresh `failed` task of `{USER}` ({} measured pairs after {WARM_UP} \
         unmeasured, service and plan alternating request by request); every task of the \
         collection is a failed `demo` task with a {}-byte payload, one failure in \
         `errorHistory` and the timeline of its row. After each row: every retried task \
         `queued` with `retryCount` 1 and one QStash publish per retry, on both sides.",
        n,
        seed::PAYLOAD_BYTES
    );
    println!();
    side_by_side.print();
    println!();
    println!("The commands behind it, issued with the driver (the service's write concern):");
    println!();
    alone.print();
    println!();
    for line in explained {
        println!("- {line}");
    }
    db.drop().await?;
    Ok(())
}

/// `explain` (executionStats) of the service's `findAndModify`, the plan's `find` and the
/// `update` with the `$expr` guard, for `task_id`.
async fn explain(db: &Database, task_id: &str) -> Vec<String> {
    let (filter, update) = requeue_with_expr(task_id);
    let find_and_modify = doc! {
        "findAndModify": "tasks", "query": filter.clone(), "update": update.clone(),
    };
    let commands = [
        (
            "the service's `findAndModify` before issue 17",
            find_and_modify,
        ),
        (
            "the plan's `find {taskId}`",
            doc! { "find": "tasks", "filter": { "taskId": task_id }, "limit": 1 },
        ),
        (
            "`update` with the `$expr` guard",
            doc! { "update": "tasks", "updates": [{ "q": filter, "u": update }] },
        ),
    ];
    let mut lines = Vec::new();
    for (name, command) in commands {
        // The plan and its counters; the raw answer is too long for the report.
        let answer = check::explain(db, command).await;
        let short = answer.split("; raw:").next().unwrap_or_default();
        lines.push(format!("`explain` of {name}: {short}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_side_gets_its_tasks_spread_over_the_collection() {
        let order = super::sides(17, 5);
        let count = |side| order.iter().filter(|s| **s == side).count();
        assert_eq!([count(0), count(1), count(2), count(8)], [20, 20, 5, 5]);
        assert_eq!(order.len(), 2 * 20 + super::WAYS.len() * 5);
        let last = order.iter().rposition(|s| *s == 2).unwrap();
        assert!(last > order.len() * 3 / 4, "{last} of {}", order.len());
    }

    #[test]
    fn shapes_are_read_from_a_list() {
        assert_eq!(
            super::shapes("500x3, 2000x50").unwrap(),
            [(500, 3), (2000, 50)]
        );
        for wrong in ["", "500", "500x", "x3,500x3"] {
            assert!(super::shapes(wrong).is_err(), "{wrong:?}");
        }
    }
}
