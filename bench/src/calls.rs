//! What the runner measures: one call ([`Call`]) and what a run of calls amounts to
//! ([`Figures`]). Below both the runner and the service client, which fill them in.

use std::time::Instant;

use crate::qstash_sink::Counts;

/// One measured call, of the service or of its floor.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub ms: f64,
    pub ok: bool,
    /// MongoDB commands it took (`x-jobs-db-commands`, or the floor client's count).
    pub commands: Option<u64>,
    /// QStash requests it made (the sink's count).
    pub qstash: Option<u64>,
    /// Tasks a bulk retry moved and skipped.
    pub retried: usize,
    pub skipped: usize,
    /// What it found, when the service and its floor must find the same.
    pub found: Option<String>,
}

impl Call {
    /// A call that started at `started` and just ended.
    pub fn since(started: Instant, ok: bool) -> Self {
        let mut call = Call::default();
        (call.ms, call.ok) = (started.elapsed().as_secs_f64() * 1000.0, ok);
        call
    }
}

/// What a run of calls (one side of a row) amounts to.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_second: f64,
    pub errors: usize,
    pub wall_s: f64,
    /// The calls' latencies added up.
    pub total_ms: f64,
    /// The service's CPU time over the run (user + system); NaN when not measured.
    pub cpu_ms: f64,
    /// The distinct command counts of the calls, and their sum.
    pub commands: Vec<String>,
    pub commands_total: u64,
    pub retried: usize,
    pub skipped: usize,
    /// What the QStash sink was sent during the run, when counted, and per call.
    pub qstash: Option<Counts>,
    pub qstash_per_call: Vec<String>,
    /// What the last call found.
    pub found: Option<String>,
}

impl Figures {
    /// Of `calls` made in `wall_s` seconds.
    pub fn of(calls: &[Call], wall_s: f64) -> Self {
        let mut latencies: Vec<f64> = calls.iter().map(|c| c.ms).collect();
        Figures {
            n: calls.len(),
            p50_ms: quantile(&mut latencies, 0.5),
            p99_ms: quantile(&mut latencies, 0.99),
            per_second: calls.len() as f64 / wall_s,
            errors: calls.iter().filter(|c| !c.ok).count(),
            wall_s,
            total_ms: calls.iter().map(|c| c.ms).sum(),
            cpu_ms: f64::NAN,
            commands: distinct(calls.iter().map(|c| c.commands)),
            commands_total: calls.iter().filter_map(|c| c.commands).sum(),
            retried: calls.iter().map(|c| c.retried).sum(),
            skipped: calls.iter().map(|c| c.skipped).sum(),
            qstash: None,
            qstash_per_call: distinct(calls.iter().map(|c| c.qstash)),
            found: calls.last().and_then(|c| c.found.clone()),
        }
    }

    /// Per call (at least one).
    pub fn per_call(&self, total: f64) -> f64 {
        total / self.n.max(1) as f64
    }

    /// The service's CPU time per call, in microseconds.
    pub fn cpu_us(&self) -> f64 {
        self.per_call(self.cpu_ms * 1000.0)
    }
}

pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len().max(1) - 1) as f64 * q).round() as usize;
    values.get(at).copied().unwrap_or(f64::NAN)
}

/// The distinct values, in increasing order (`?` for an unknown one).
fn distinct(values: impl Iterator<Item = Option<u64>>) -> Vec<String> {
    let mut values: Vec<Option<u64>> = values.collect();
    values.sort_unstable();
    values.dedup();
    let shown = |v: Option<u64>| v.map_or("?".into(), |n| n.to_string());
    values.into_iter().map(shown).collect()
}
