//! What `metrics` reports (docs/spec.md §20), read from `tasks` so every instance reports the
//! same numbers: six read commands, each named after its question, two at a time.

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};

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
        let day_ago = DateTime::from_millis(now.timestamp_millis() - 86_400_000);
        let hour_ago = DateTime::from_millis(now.timestamp_millis() - 3_600_000);

        // 1. Every task, by status and type, with the retries recorded on each (ONE scan).
        let counts = doc! { "$add": [
            { "$ifNull": ["$retryCount", 0] }, { "$ifNull": ["$autoRetries", 0] },
        ] };
        let retries_of_task = doc! { "$ifNull": ["$retriesTotal", counts] };
        let by_status = aggregate(vec![doc! { "$group": {
            "_id": { "status": "$status", "type": "$type" },
            "n": { "$sum": 1 }, "retries": { "$sum": retries_of_task },
        } }]);

        // 2. Failed tasks by cause, the 20 largest (the `{status, updatedAt}` index's prefix).
        let groups = aggregate(vec![
            doc! { "$match": { "status": TaskStatus::Failed } },
            doc! { "$group": { "_id": "$errorGroup", "n": { "$sum": 1 } } },
            doc! { "$sort": { "n": -1, "_id": 1 } },
            doc! { "$limit": 21 },
        ]);

        // 3. The oldest queued task: ONE index entry of `{status, updatedAt}`.
        let oldest = async {
            let find = tasks
                .find_one(doc! { "status": TaskStatus::Queued })
                .sort(doc! { "updatedAt": 1 })
                .projection(doc! { "_id": 0, "updatedAt": 1 });
            self.run(find).await
        };

        // 4. Tasks retried (by a user or automatically) that changed in the last 24 h, and of
        // them the completed ones: every status named, so `{status, updatedAt}` bounds both
        // counts to the day's changes.
        let retried = doc! {
            "status": { "$in": TaskStatus::ALL.to_vec() },
            "updatedAt": { "$gt": day_ago },
            "$or": [{ "retryCount": { "$gt": 0 } }, { "autoRetries": { "$gt": 0 } }],
        };
        let mut recovered = retried.clone();
        recovered.insert("status", TaskStatus::Completed);
        let retried_24h = self.run(tasks.count_documents(retried));
        let recovered_24h = self.run(tasks.count_documents(recovered));

        // 5. Attempts that finished in the last hour (the `{status, updatedAt}` index).
        let finished = async {
            let find = tasks
                .find(doc! {
                    "status": { "$in": [TaskStatus::Completed, TaskStatus::Failed] },
                    "updatedAt": { "$gt": hour_ago },
                })
                .projection(doc! { "_id": 0, "startedAt": 1, "finishedAt": 1,
                "events": { "$slice": -1 } })
                .sort(doc! { "updatedAt": -1 })
                .limit(DURATION_SAMPLE);
            self.run(async { find.await?.try_collect::<Vec<Document>>().await })
                .await
        };

        // Two at a time: the scan beside the rest, one after another, so a scrape holds at most
        // two of the instance's pooled connections (workers and requests need the others).
        let rest = async {
            Ok::<_, crate::error::JobsError>((
                groups.await?,
                oldest.await?,
                retried_24h.await?,
                recovered_24h.await?,
                finished.await?,
            ))
        };
        let (by_status, (groups, oldest, retried_24h, recovered_24h, finished)) =
            tokio::try_join!(by_status, rest)?;

        let tasks_by = by_status
            .iter()
            .filter_map(|row| {
                let key = row.get_document("_id").ok()?;
                Some((text(key, "status"), text(key, "type"), integer(row, "n")?))
            })
            .collect();
        let retries = by_status
            .iter()
            .filter_map(|row| integer(row, "retries"))
            .sum();
        let failed_by_group = groups
            .iter()
            .filter_map(|row| Some((row.get_str("_id").ok()?.to_owned(), integer(row, "n")?)))
            .take(20)
            .collect();
        let oldest_queued_seconds = oldest
            .and_then(|d| d.get_datetime("updatedAt").ok().copied())
            .map_or(0.0, |at| {
                ((now.timestamp_millis() - at.timestamp_millis()).max(0) as f64) / 1000.0
            });
        let mut seconds: Vec<f64> = finished
            .iter()
            .filter(|d| finished_by_a_worker(d))
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
        let (retried_24h, recovered_24h) = (retried_24h as i64, recovered_24h as i64);

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

/// Whether a finished task's last event is its worker's (`completed`, `failed`): a task the
/// sweeper or QStash's callback failed (`swept`, `deliveryFailed`) ran no attempt that ended
/// then, and its `startedAt` may be an earlier attempt's.
fn finished_by_a_worker(task: &Document) -> bool {
    let last = task
        .get_array("events")
        .ok()
        .and_then(|events| events.last());
    let kind = last.and_then(|event| event.as_document()?.get_str("kind").ok());
    matches!(kind, Some("completed" | "failed"))
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::finished_by_a_worker;

    /// Durations count only attempts a worker ended: not a task the sweeper or QStash's
    /// callback failed, whose `startedAt` may be an earlier attempt's.
    #[test]
    fn only_a_workers_last_event_makes_a_duration() {
        let last = |kind: &str| doc! { "events": [{ "kind": "claimed" }, { "kind": kind }] };
        let cases = [
            ("completed", true),
            ("failed", true),
            ("swept", false),
            ("deliveryFailed", false),
        ];
        for (kind, counted) in cases {
            assert_eq!(finished_by_a_worker(&last(kind)), counted, "{kind}");
        }
        assert!(!finished_by_a_worker(&doc! {}), "no timeline");
    }
}
