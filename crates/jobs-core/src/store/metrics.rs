//! What `metrics` reports (docs/spec.md §20), read from `tasks` so every instance reports the
//! same numbers: six read commands, each named after its question.

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};

use super::{Store, integer};
use crate::error::Result;
use crate::metrics::MetricsSnapshot;
use crate::task::TaskStatus;

/// Attempts whose durations make the quantiles: the newest this many finished in the hour.
const DURATION_SAMPLE: i64 = 10_000;

impl Store {
    /// The snapshot at `now` (docs/spec.md §20 lists each query and its cost).
    pub async fn metrics_snapshot(&self, now: DateTime) -> Result<MetricsSnapshot> {
        let tasks = self.database().await?.collection::<Document>("tasks");
        let aggregate = |pipeline: Vec<Document>| {
            let tasks = tasks.clone();
            async move {
                self.run(async {
                    tasks
                        .aggregate(pipeline)
                        .await?
                        .try_collect::<Vec<_>>()
                        .await
                })
                .await
            }
        };
        let text = |d: &Document, k: &str| d.get_str(k).unwrap_or("").to_owned();

        // 1. Every task, by status and type.
        let by_status = aggregate(vec![doc! { "$group": {
        "_id": { "status": "$status", "type": "$type" }, "n": { "$sum": 1 } } }])
        .await?;
        let tasks_by = by_status
            .iter()
            .filter_map(|row| {
                let key = row.get_document("_id").ok()?;
                Some((text(key, "status"), text(key, "type"), integer(row, "n")?))
            })
            .collect();

        // 2. Failed tasks by cause, the 20 largest (the `{status, updatedAt}` index's prefix).
        let groups = aggregate(vec![
            doc! { "$match": { "status": TaskStatus::Failed } },
            doc! { "$group": { "_id": "$errorGroup", "n": { "$sum": 1 } } },
            doc! { "$sort": { "n": -1, "_id": 1 } },
            doc! { "$limit": 21 },
        ])
        .await?;
        let failed_by_group = groups
            .iter()
            .filter_map(|row| Some((row.get_str("_id").ok()?.to_owned(), integer(row, "n")?)))
            .take(20)
            .collect();

        // 3. The oldest queued task: ONE index entry of `{status, updatedAt}`.
        let oldest = tasks
            .find_one(doc! { "status": TaskStatus::Queued })
            .sort(doc! { "updatedAt": 1 })
            .projection(doc! { "_id": 0, "updatedAt": 1 });
        let oldest = self.run(oldest).await?;
        let oldest_queued_seconds = oldest
            .and_then(|d| d.get_datetime("updatedAt").ok().copied())
            .map_or(0.0, |at| {
                ((now.timestamp_millis() - at.timestamp_millis()).max(0) as f64) / 1000.0
            });

        // 4. Retries recorded on stored tasks.
        let sums = aggregate(vec![doc! { "$group": { "_id": Bson::Null,
        "manual": { "$sum": "$retryCount" }, "automatic": { "$sum": "$autoRetries" } } }])
        .await?;
        let retries = sums.first().map_or(0, |row| {
            integer(row, "manual").unwrap_or(0) + integer(row, "automatic").unwrap_or(0)
        });

        // 5. Tasks retried that changed in the last 24 h, and of them the completed ones.
        let day_ago = DateTime::from_millis(now.timestamp_millis() - 86_400_000);
        let retried = doc! { "retryCount": { "$gt": 0 }, "updatedAt": { "$gt": day_ago } };
        let retried_24h = self.run(tasks.count_documents(retried.clone())).await? as i64;
        let mut recovered = retried;
        recovered.insert("status", TaskStatus::Completed);
        let recovered_24h = self.run(tasks.count_documents(recovered)).await? as i64;

        // 6. Attempts that finished in the last hour (the `{status, updatedAt}` index).
        let hour_ago = DateTime::from_millis(now.timestamp_millis() - 3_600_000);
        let finished = tasks
            .find(doc! {
                "status": { "$in": [TaskStatus::Completed, TaskStatus::Failed] },
                "updatedAt": { "$gt": hour_ago },
            })
            .projection(doc! { "_id": 0, "startedAt": 1, "finishedAt": 1 })
            .sort(doc! { "updatedAt": -1 })
            .limit(DURATION_SAMPLE);
        let finished: Vec<Document> = self
            .run(async { finished.await?.try_collect().await })
            .await?;
        let mut seconds: Vec<f64> = finished
            .iter()
            .filter_map(|d| {
                let started = d.get_datetime("startedAt").ok()?.timestamp_millis();
                let ended = d.get_datetime("finishedAt").ok()?.timestamp_millis();
                (ended >= started).then(|| (ended - started) as f64 / 1000.0)
            })
            .collect();
        seconds.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            seconds[((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len()) - 1]
        };
        let attempt_seconds =
            (!seconds.is_empty()).then(|| (quantile(0.5), quantile(0.95), seconds.len()));

        Ok(MetricsSnapshot {
            tasks: tasks_by,
            failed_by_group,
            oldest_queued_seconds,
            retries,
            retried_24h: (recovered_24h, retried_24h),
            attempt_seconds,
        })
    }
}
