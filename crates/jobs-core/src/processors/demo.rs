//! `demo`: counts through steps, reporting progress, and fails (or panics) on the first
//! attempts when asked to. It is how a user watches a failure and a retry end to end.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Job, Processor, ProcessorFuture};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DemoPayload {
    #[serde(default = "default_steps")]
    steps: u32,
    #[serde(default = "default_step_ms")]
    step_ms: u64,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default)]
    panic_attempts: u32,
}

fn default_steps() -> u32 {
    5
}

fn default_step_ms() -> u64 {
    200
}

impl DemoPayload {
    fn parse(payload: &Value) -> Result<Self, String> {
        if !payload.is_object() {
            return Err("payload must be an object".into());
        }
        let parsed: Self = serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
        if !(1..=100).contains(&parsed.steps) {
            return Err("steps must be between 1 and 100".into());
        }
        if parsed.step_ms > 5000 {
            return Err("stepMs must be between 0 and 5000".into());
        }
        if parsed.fail_attempts > 100 || parsed.panic_attempts > 100 {
            return Err("failAttempts and panicAttempts must be between 0 and 100".into());
        }
        Ok(parsed)
    }
}

pub struct Demo;

impl Processor for Demo {
    fn validate(&self, payload: &Value) -> Result<(), String> {
        DemoPayload::parse(payload).map(drop)
    }

    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            let p = DemoPayload::parse(job.payload)?;
            let attempt = job.attempt.max(0) as u32;
            // Failing attempts stop halfway, so the user sees partial progress, then the error.
            let fails_at = (attempt <= p.fail_attempts || attempt <= p.panic_attempts)
                .then(|| p.steps.div_ceil(2));
            for step in 1..=p.steps {
                tokio::time::sleep(Duration::from_millis(p.step_ms)).await;
                if Some(step) == fails_at {
                    if attempt <= p.panic_attempts {
                        panic!("demo processor panicked on attempt {attempt}");
                    }
                    return Err(format!("Simulated failure on attempt {attempt}").into());
                }
                job.progress((step * 100 / p.steps) as i32).await?;
            }
            Ok(json!({ "steps": p.steps, "attempt": attempt }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bounds() {
        let cases = [
            (json!({}), true),
            (
                json!({ "steps": 100, "stepMs": 5000, "failAttempts": 2 }),
                true,
            ),
            (json!({ "steps": 0 }), false),
            (json!({ "steps": 101 }), false),
            (json!({ "stepMs": 5001 }), false),
            (json!({ "steps": "5" }), false),
            (json!({ "unknown": 1 }), false),
            (json!([1, 2]), false),
        ];
        for (payload, ok) in cases {
            assert_eq!(Demo.validate(&payload).is_ok(), ok, "{payload}");
        }
    }
}
