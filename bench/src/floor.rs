//! The floor: the MongoDB operations each action needs, issued directly with the same driver
//! against the same database, at the same concurrency and for the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;
use futures_util::TryStreamExt;
use jobs_core::task::{Handoff, TaskId, UserId};
use jobs_core::transitions::{requeue_filter, requeue_update};
use mongodb::Database;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use crate::seed::task;
use crate::stats::{Figures, Run, quantile};

async fn once(
    tasks: &mongodb::Collection<Document>,
    action: &str,
    get_id: &str,
    retry_id: Option<&String>,
) -> Result<bool> {
    Ok(match action {
        "create" => tasks
            .insert_one(task("bench", "queued", DateTime::now()))
            .await
            .is_ok(),
        "get" => tasks
            .find_one(doc! { "taskId": get_id, "userId": "bench" })
            .await?
            .is_some(),
        "list" => {
            let cursor = tasks
                .find(doc! { "userId": "bench-list" })
                .sort(doc! { "createdAt": -1, "taskId": -1 })
                .projection(crate::scale::list_projection())
                .limit(21)
                .batch_size(21)
                .await?;
            cursor.try_collect::<Vec<_>>().await?.len() == 20
        }
        "retry" => {
            let Some(id) = retry_id else { return Ok(false) };
            // Exactly the guard and reset the service's `requeue_for_retry` sends.
            let (task_id, user_id) = (
                TaskId::parse(id.as_str()).map_err(anyhow::Error::msg)?,
                UserId::parse("bench").map_err(anyhow::Error::msg)?,
            );
            tasks
                .find_one_and_update(
                    requeue_filter(&task_id, &user_id),
                    requeue_update(&Handoff::new(&task_id, DateTime::now(), true), "user:bench"),
                )
                .return_document(ReturnDocument::Before)
                .await?
                .is_some()
        }
        other => anyhow::bail!("no floor for {other}"),
    })
}

pub async fn measure(db: &Database, run: Run<'_>) -> Result<Figures> {
    let Run {
        action,
        concurrency,
        duration,
        get_id,
        retry_ids,
    } = run;
    let tasks = db.collection::<Document>("tasks");
    let retry_ids = Arc::new(retry_ids);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let workers = (0..concurrency).map(|_| {
        let (tasks, retry_ids, next, action, get_id) = (
            tasks.clone(),
            retry_ids.clone(),
            next.clone(),
            action.to_owned(),
            get_id.to_owned(),
        );
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let retry_id = retry_ids.get(next.fetch_add(1, Ordering::Relaxed));
                let started = Instant::now();
                let ok = once(&tasks, &action, &get_id, retry_id)
                    .await
                    .unwrap_or(false);
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                errors += u64::from(!ok);
            }
            (latencies, errors)
        })
    });
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in futures_util::future::join_all(workers).await {
        let (l, e) = worker?;
        latencies.extend(l);
        errors += e;
    }
    Ok(Figures {
        per_second: latencies.len() as f64 / duration.as_secs_f64(),
        p50_ms: quantile(&mut latencies, 0.5),
        p99_ms: quantile(&mut latencies, 0.99),
        errors,
        cpu_us_per_request: f64::NAN,
    })
}
