//! Test data: one task to `get`, 20 tasks to `list`, and pools of failed tasks so that every
//! `retry` (service and floor alike) acts on a fresh failed task.

use mongodb::Database;
use mongodb::bson::{Bson, DateTime, Document, doc};

pub fn task(user: &str, status: &str, created: DateTime) -> Document {
    doc! {
        "taskId": uuid::Uuid::now_v7().to_string(), "userId": user, "type": "demo",
        "payload": { "steps": 1, "stepMs": 0 }, "status": status, "progress": 0, "retryCount": 0,
        "maxRetries": 3, "attempts": 1,
        "lastError": if status == "failed" { Bson::from("seeded failure") } else { Bson::Null },
        "errorHistory": [], "result": null, "createdAt": created, "updatedAt": created,
    }
}

/// The indexes the service creates, present before the first measurement as in production.
async fn indexes(db: &Database) -> anyhow::Result<()> {
    db.collection::<Document>("tasks")
        .create_indexes(jobs_core::store::task_indexes())
        .await?;
    Ok(())
}

pub struct Seeded {
    pub get_id: String,
    /// A failed task for counting the commands of `retry`.
    pub spare_failed: String,
}

/// The main database: a task to `get`, a page of 20 to `list`, one failed task.
pub async fn main_database(db: &Database) -> anyhow::Result<Seeded> {
    indexes(db).await?;
    let tasks = db.collection::<Document>("tasks");
    let now = DateTime::now();
    let get = task("bench", "completed", now);
    let failed = task("bench", "failed", now);
    let seeded = Seeded {
        get_id: get.get_str("taskId")?.to_owned(),
        spare_failed: failed.get_str("taskId")?.to_owned(),
    };
    tasks.insert_many([get, failed]).await?;
    tasks
        .insert_many((0..20).map(|_| task("bench-list", "completed", now)))
        .await?;
    Ok(seeded)
}

/// A database holding only `count` failed tasks of the bench user; their ids.
pub async fn failed_pool(db: &Database, count: usize) -> anyhow::Result<Vec<String>> {
    indexes(db).await?;
    let now = DateTime::now();
    let docs: Vec<Document> = (0..count).map(|_| task("bench", "failed", now)).collect();
    let ids = docs
        .iter()
        .map(|d| d.get_str("taskId").unwrap().to_owned())
        .collect();
    db.collection::<Document>("tasks").insert_many(docs).await?;
    Ok(ids)
}
