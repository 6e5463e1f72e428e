//! The OpenMetrics text of `metrics` (docs/spec.md §20), encoded by `prometheus-client` from a
//! snapshot the store read.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// The numbers of one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Tasks by `(status, type)`.
    pub tasks: Vec<(String, String, i64)>,
    /// The 20 largest groups of failed tasks: `(group, count)`.
    pub failed_by_group: Vec<(String, i64)>,
    /// Seconds since the oldest `queued` task was queued (0 when none).
    pub oldest_queued_seconds: f64,
    /// Retries recorded on the stored tasks: manual (`retryCount`) plus automatic.
    pub retries: i64,
    /// Of the tasks retried that changed in the last 24 h, how many are `completed`, and of all.
    pub retried_24h: (i64, i64),
    /// p50 and p95 of attempt durations (claim to finish) over the last hour, in seconds, and
    /// how many attempts they describe.
    pub attempt_seconds: Option<(f64, f64, usize)>,
}

/// `snapshot` as OpenMetrics text.
pub fn openmetrics(snapshot: &MetricsSnapshot) -> String {
    let mut registry = Registry::with_prefix("jobs");

    let tasks = Family::<Labels, Gauge>::default();
    for (status, kind, n) in &snapshot.tasks {
        tasks
            .get_or_create(&vec![("status", status.clone()), ("type", kind.clone())])
            .set(*n);
    }
    registry.register("tasks", "Tasks stored, by status and type", tasks);

    let groups = Family::<Labels, Gauge>::default();
    for (group, n) in &snapshot.failed_by_group {
        groups
            .get_or_create(&vec![("group", group.clone())])
            .set(*n);
    }
    registry.register(
        "failed_by_group",
        "Failed tasks by error group, the 20 largest groups",
        groups,
    );

    registry.register(
        "oldest_queued_seconds",
        "Seconds since the oldest queued task was queued (0 when none is)",
        ConstGauge::new(snapshot.oldest_queued_seconds),
    );
    registry.register(
        "retries",
        "Retries recorded on the stored tasks, manual and automatic",
        ConstCounter::new(snapshot.retries.max(0) as u64),
    );
    let (recovered, retried) = snapshot.retried_24h;
    let ratio = if retried > 0 {
        recovered as f64 / retried as f64
    } else {
        0.0
    };
    registry.register(
        "retry_success_ratio",
        "Of the tasks retried that changed in the last 24 h, the share now completed",
        ConstGauge::new(ratio),
    );
    let durations = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    if let Some((p50, p95, _)) = snapshot.attempt_seconds {
        durations
            .get_or_create(&vec![("quantile", "0.5".into())])
            .set(p50);
        durations
            .get_or_create(&vec![("quantile", "0.95".into())])
            .set(p95);
    }
    registry.register(
        "attempt_duration_seconds",
        "Attempt durations (claim to finish) over the last hour: p50 and p95",
        durations,
    );

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_as_openmetrics() {
        let snapshot = MetricsSnapshot {
            tasks: vec![
                ("failed".into(), "demo".into(), 3),
                ("completed".into(), "demo".into(), 7),
            ],
            failed_by_group: vec![("0123456789ab".into(), 3)],
            oldest_queued_seconds: 1.5,
            retries: 4,
            retried_24h: (3, 4),
            attempt_seconds: Some((0.2, 1.25, 10)),
        };
        let text = openmetrics(&snapshot);
        for line in [
            "# TYPE jobs_tasks gauge",
            "jobs_tasks{status=\"failed\",type=\"demo\"} 3",
            "jobs_failed_by_group{group=\"0123456789ab\"} 3",
            "jobs_oldest_queued_seconds 1.5",
            "# TYPE jobs_retries counter",
            "jobs_retries_total 4",
            "jobs_retry_success_ratio 0.75",
            "jobs_attempt_duration_seconds{quantile=\"0.95\"} 1.25",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
