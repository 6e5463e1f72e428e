//! `demo`: counts through steps, each a memoised [`Job::step`] (`step-1` … `step-n`),
//! reporting progress, and fails (or panics) in one of them on the first attempts when asked
//! to. It is how a user watches a failure and a retry end to end, and a retry resume at the
//! step that failed.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Job, Processor, ProcessorError, ProcessorFuture};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DemoPayload {
    #[serde(default = "default_steps")]
    steps: u32,
    #[serde(default = "default_step_ms")]
    step_ms: u64,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default)]
    panic_attempts: u32,
    #[serde(default)]
    fail_at_step: Option<u32>,
    /// The application's own fields (`brandId`, `campaign`, ...): kept with the task, never
    /// read, and searchable (docs/spec.md §19).
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// The fields the demo reads.
const FIELDS: [&str; 5] = [
    "steps",
    "stepMs",
    "failAttempts",
    "panicAttempts",
    "failAtStep",
];

/// The field `name` is a slip of (its letters differ from one in at most two edits,
/// ignoring case), if any: an application's own field is kept, a misspelt one refused.
fn misspelt(name: &str) -> Option<&'static str> {
    let distance = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (
            a.to_lowercase().chars().collect(),
            b.to_lowercase().chars().collect(),
        );
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.iter().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substituted = previous + usize::from(ca != cb);
                previous = row[j + 1];
                row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
            }
        }
        row[b.len()]
    };
    FIELDS.into_iter().find(|field| distance(name, field) <= 2)
}

fn default_steps() -> u32 {
    5
}

fn default_step_ms() -> u64 {
    200
}

impl DemoPayload {
    fn parse(payload: &Value, work_budget: Duration) -> Result<Self, String> {
        if !payload.is_object() {
            return Err("payload must be an object".into());
        }
        let parsed: Self = serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
        if let Some((name, field)) = parsed
            .other
            .keys()
            .find_map(|name| Some((name, misspelt(name)?)))
        {
            return Err(format!("unknown field `{name}`; did you mean `{field}`?"));
        }
        if !(1..=100).contains(&parsed.steps) {
            return Err("steps must be between 1 and 100".into());
        }
        if parsed.step_ms > 5000 {
            return Err("stepMs must be between 0 and 5000".into());
        }
        if parsed.fail_attempts > 100 || parsed.panic_attempts > 100 {
            return Err("failAttempts and panicAttempts must be between 0 and 100".into());
        }
        if parsed
            .fail_at_step
            .is_some_and(|at| !(1..=parsed.steps).contains(&at))
        {
            return Err(format!(
                "failAtStep must be between 1 and steps ({})",
                parsed.steps
            ));
        }
        // The work must fit the function's `maxDuration`, or the platform kills it midway and
        // the task is only failed later, by `sweep`, as a lost worker.
        let work_ms = u64::from(parsed.steps) * parsed.step_ms;
        if u128::from(work_ms) > work_budget.as_millis() {
            return Err(format!(
                "steps * stepMs is {work_ms} ms, above the work budget of {} s \
                 (JOBS_WORK_BUDGET_SECONDS)",
                work_budget.as_secs()
            ));
        }
        Ok(parsed)
    }
}

/// The `demo` processor. Payload `{steps?, stepMs?, failAttempts?, panicAttempts?,
/// failAtStep?}`: `steps` (1..=100, default 5) of `stepMs` each (0..=5000, default 200), in all
/// at most the work budget (`steps * stepMs`, see [`Demo::new`]); attempts up to
/// `failAttempts` fail, and attempts up to `panicAttempts` panic (both 0..=100, default 0), in
/// step `failAtStep` (1..=steps, default the last). Each step is `step-<k>`, its output
/// `{step, attempt}`: a retry from the failed step runs only that step and the ones after it.
pub struct Demo {
    work_budget: Duration,
}

impl Demo {
    /// A `demo` processor refusing payloads whose `steps * stepMs` is above `work_budget`
    /// (`JOBS_WORK_BUDGET_SECONDS`, [`crate::Config::work_budget`]); exactly the budget is
    /// accepted. The check runs at `create` and again when the task runs.
    pub fn new(work_budget: Duration) -> Self {
        Self { work_budget }
    }
}

impl Default for Demo {
    /// The default work budget, 240 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(240))
    }
}

impl Processor for Demo {
    fn validate(&self, payload: &Value) -> Result<(), String> {
        DemoPayload::parse(payload, self.work_budget).map(drop)
    }

    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            let p = DemoPayload::parse(job.payload, self.work_budget)?;
            let attempt = job.attempt.max(0) as u32;
            // Failing attempts stop in `failAtStep`, so the user sees the steps before it
            // completed, then the error.
            let fails_at = (attempt <= p.fail_attempts || attempt <= p.panic_attempts)
                .then(|| p.fail_at_step.unwrap_or(p.steps));
            for step in 1..=p.steps {
                let work = async {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(p.step_ms)) => {}
                        () = job.cancelled() => return Err(ProcessorError::Stopped),
                    }
                    if Some(step) == fails_at {
                        if attempt <= p.panic_attempts {
                            panic!("demo processor panicked on attempt {attempt}");
                        }
                        return Err(format!("Simulated failure on attempt {attempt}").into());
                    }
                    Ok(json!({ "step": step, "attempt": attempt }))
                };
                let _: Value = job.step(&format!("step-{step}"), work).await?;
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
        let demo = Demo::new(Duration::from_secs(900));
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
            // The application's own fields are kept; a slip of the demo's own is refused.
            (json!({ "brandId": "b1", "campaign": "launch" }), true),
            (json!({ "unknown": 1 }), true),
            (json!({ "failAtempts": 1 }), false),
            (json!({ "Steps": 2 }), false),
            (json!({ "stepsMs": 2 }), false),
            (json!({ "failatstep": 2 }), false),
            (json!({ "steps": 5, "failAtStep": 1 }), true),
            (json!({ "steps": 5, "failAtStep": 5 }), true),
            (json!({ "steps": 5, "failAtStep": 0 }), false),
            (json!({ "steps": 5, "failAtStep": 6 }), false),
            (json!({ "failAtStep": 6 }), false),
            (json!({ "failAtStep": "2" }), false),
            (json!([1, 2]), false),
        ];
        for (payload, ok) in cases {
            assert_eq!(demo.validate(&payload).is_ok(), ok, "{payload}");
        }
    }

    #[test]
    fn work_above_the_budget_is_refused_naming_it() {
        let demo = Demo::default();
        assert!(
            demo.validate(&json!({ "steps": 48, "stepMs": 5000 }))
                .is_ok()
        );
        assert_eq!(
            demo.validate(&json!({ "steps": 60, "stepMs": 5000 })),
            Err(
                "steps * stepMs is 300000 ms, above the work budget of 240 s \
                 (JOBS_WORK_BUDGET_SECONDS)"
                    .into()
            )
        );
        let small = Demo::new(Duration::from_secs(1));
        assert!(
            small
                .validate(&json!({ "steps": 10, "stepMs": 100 }))
                .is_ok()
        );
        assert!(
            small
                .validate(&json!({ "steps": 10, "stepMs": 101 }))
                .is_err()
        );
    }
}
