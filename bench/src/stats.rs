//! Latency figures and their summaries.

use std::time::Duration;

/// One measured row: an action at a concurrency for a duration. `retry_ids` are the fresh
/// failed tasks the retries act on (empty for other actions).
pub struct Run<'a> {
    pub action: &'a str,
    pub concurrency: usize,
    pub duration: Duration,
    pub get_id: &'a str,
    pub retry_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_second: f64,
    pub errors: u64,
    /// CPU time the service spent per request (user + system), when measured.
    pub cpu_us_per_request: f64,
}

pub fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(((values.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Reads `wrk --latency` output: the 50% and 99% lines, `Requests/sec`, and non-2xx answers.
pub fn parse_wrk(output: &str) -> Option<Figures> {
    let duration_ms = |text: &str| -> Option<f64> {
        let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
        let number: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => number / 1000.0,
            "ms" => number,
            "s" => number * 1000.0,
            "m" => number * 60_000.0,
            _ => return None,
        })
    };
    let mut figures = Figures::default();
    for line in output.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(value)) => figures.p50_ms = duration_ms(value)?,
            (Some("99%"), Some(value)) => figures.p99_ms = duration_ms(value)?,
            (Some("Requests/sec:"), Some(value)) => figures.per_second = value.parse().ok()?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figures.errors = n.trim().parse().ok()?;
        }
    }
    (figures.per_second > 0.0).then_some(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let output = "Running 5s test\n  Latency Distribution\n     50%  635.00us\n     75%  712.00us\n     90%  801.00us\n     99%    1.23ms\n  7000 requests in 5.00s\n  Non-2xx or 3xx responses: 3\nRequests/sec:   1400.50\n";
        let figures = parse_wrk(output).unwrap();
        assert!((figures.p50_ms - 0.635).abs() < 1e-9);
        assert!((figures.p99_ms - 1.23).abs() < 1e-9);
        assert_eq!((figures.per_second, figures.errors), (1400.5, 3));
    }
}
