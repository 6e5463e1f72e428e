//! Memoised steps (docs/spec.md §16): a processor splits its work into named steps with
//! [`Job::step`](crate::Job::step); each finished step is stored on the task in one write
//! fenced on the run's lease, and a later attempt of the same task gets a completed step's
//! stored output back instead of running it again. This module holds the rules: what a step
//! record is, the limits, and how the k-th step of a run is matched against what is stored.
//!
//! The stored `steps` are the run's sequence so far: completed steps, then at most one failed
//! one (the step an attempt failed in). The k-th `step` call of a run is the k-th entry: a
//! completed entry of the same name is returned without running; any other entry (failed, or
//! absent) is run and its record replaces entry k and everything after it, so what is stored
//! stays a prefix of one run's sequence.

use std::collections::HashSet;

use serde_json::Value;

pub use crate::task::{StepRecord, StepStart, StepStatus};

/// At most this many steps per task.
pub const MAX_STEPS: usize = 100;
/// A step's output, as JSON, at most this many bytes.
pub const MAX_STEP_OUTPUT: usize = 64 * 1024;
/// All of a task's step outputs together, as JSON, at most this many bytes: with the payload
/// (at most 64 KiB) and the capped timelines, the task document stays far below MongoDB's
/// 16 MiB.
pub const MAX_STEPS_OUTPUT: usize = 1024 * 1024;
/// A step's name: 1 to this many characters, no control characters.
pub const MAX_STEP_NAME: usize = 100;

/// Where a retry starts: `retry`'s and `retryMany`'s `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// `failedStep`, the default: completed steps are kept and replayed, the run resumes at the
    /// step that failed.
    #[default]
    FailedStep,
    /// `start`: every stored step is discarded (the `retried` event says so) and all run again.
    Start,
}

impl Resume {
    /// `from` as sent (`None`: absent, the default).
    pub fn parse(from: Option<&str>) -> Result<Self, String> {
        match from {
            None | Some("failedStep") => Ok(Self::FailedStep),
            Some("start") => Ok(Self::Start),
            Some(other) => Err(format!(
                "from must be \"failedStep\" or \"start\", not {other:?}"
            )),
        }
    }
}

/// The `retried` event's message of a retry from the start.
pub const RESTARTED_MESSAGE: &str = "From the start: stored steps discarded";

/// What the k-th `step` call of a run does.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Return the stored output; do not run.
    Replay(Value),
    /// Run it, and store its record at `index` (the first to run after replayed steps:
    /// `resumed` is true, and the write adds the `resumed` event).
    Run {
        /// Its entry in `steps`.
        index: usize,
        /// Whether it is the first step of the run that runs after replayed ones.
        resumed: bool,
    },
}

/// The steps of one run: what the claimed task had stored, and which names this run used.
#[derive(Debug, Default)]
pub struct Memo {
    stored: Vec<StepRecord>,
    used: HashSet<String>,
    next: usize,
    replayed: usize,
    ran: bool,
    /// Output bytes of the completed steps before `next`.
    output_bytes: usize,
    /// The step of this run that did not complete, if one did not.
    stopped_at: Option<String>,
}

impl Memo {
    /// The steps the claimed task stored (a prefix of an earlier run's sequence).
    pub fn new(stored: Vec<StepRecord>) -> Self {
        Self {
            stored,
            ..Self::default()
        }
    }

    /// The completed steps a run replays, in order, with their outputs: the stored entries up
    /// to the first that is not completed.
    pub fn replayable(&self) -> Vec<(String, Value)> {
        let done = self
            .stored
            .iter()
            .take_while(|s| s.status == StepStatus::Completed);
        done.map(|s| (s.name.clone(), s.output_json())).collect()
    }

    /// Decides the next `step` call, named `name`, and moves on to the one after it. An error
    /// is the processor's mistake or a limit, which another attempt would meet again.
    pub fn next(&mut self, name: &str) -> Result<Plan, String> {
        if name.is_empty()
            || name.chars().count() > MAX_STEP_NAME
            || name.chars().any(char::is_control)
        {
            return Err(format!(
                "Step name {name:?} must be 1 to {MAX_STEP_NAME} characters without control characters"
            ));
        }
        if let Some(stopped) = &self.stopped_at {
            return Err(format!(
                "Step \"{name}\" started after step \"{stopped}\" did not complete: a run \
                 stops at its first step that does not complete"
            ));
        }
        if !self.used.insert(name.to_owned()) {
            return Err(format!(
                "Step \"{name}\" ran twice in one run: step names must be unique within a task"
            ));
        }
        let index = self.next;
        if index >= MAX_STEPS {
            return Err(format!(
                "Step \"{name}\" is step {}: a task has at most {MAX_STEPS} steps",
                index + 1
            ));
        }
        self.next += 1;
        match self.stored.get(index) {
            Some(stored) if stored.status == StepStatus::Completed && !self.ran => {
                if stored.name != name {
                    return Err(format!(
                        "Step {} is \"{name}\" now but was \"{}\" in attempt {}: the order of \
                         steps changed; retry from the start",
                        index + 1,
                        stored.name,
                        stored.attempt
                    ));
                }
                self.replayed += 1;
                self.output_bytes += stored.output_len();
                Ok(Plan::Replay(stored.output_json()))
            }
            _ => {
                let resumed = !self.ran && self.replayed > 0;
                self.ran = true;
                Ok(Plan::Run { index, resumed })
            }
        }
    }

    /// The record of a step that ran and returned `output` (JSON text), checked against the
    /// limits: an output refused is recorded as the step's failure, its `error` saying why
    /// (which the step then returns as [`ProcessorError::Permanent`](crate::ProcessorError)),
    /// and the run stops there ([`Memo::stop`]).
    pub fn completed(&mut self, name: &str, output: String, start: StepStart) -> StepRecord {
        let len = output.len();
        let total = self.output_bytes.saturating_add(len);
        let refused = if len > MAX_STEP_OUTPUT {
            Some(format!(
                "Step \"{name}\" output is {len} bytes, above the limit of {MAX_STEP_OUTPUT}"
            ))
        } else if total > MAX_STEPS_OUTPUT {
            Some(format!(
                "Step \"{name}\" output would bring the task's step outputs to {total} bytes, \
                 above the limit of {MAX_STEPS_OUTPUT}"
            ))
        } else {
            None
        };
        match refused {
            None => {
                self.output_bytes = total;
                StepRecord::completed(name, output, start)
            }
            Some(message) => {
                self.stop(name);
                StepRecord::failed(name, &message, start)
            }
        }
    }

    /// Step `name` did not complete (it failed, its output was refused, its record could not
    /// be written, or the run was told to stop): no step may run after it in this run, since
    /// what is stored must stay a prefix of one run's sequence of completed steps.
    pub fn stop(&mut self, name: &str) {
        self.stopped_at.get_or_insert_with(|| name.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn done(name: &str, output: Value) -> StepRecord {
        StepRecord::completed(name, output.to_string(), StepStart::now(1))
    }

    fn failed(name: &str) -> StepRecord {
        StepRecord::failed(name, "boom", StepStart::now(1))
    }

    fn plans(stored: Vec<StepRecord>, names: &[&str]) -> Vec<Result<Plan, String>> {
        let mut memo = Memo::new(stored);
        names.iter().map(|n| memo.next(n)).collect()
    }

    #[test]
    fn completed_steps_replay_in_order_and_the_first_other_one_resumes() {
        let stored = vec![done("a", json!(1)), done("b", json!({"x": 2})), failed("c")];
        let run = |index, resumed| Ok(Plan::Run { index, resumed });
        // (stored, the run's step names, what each call does)
        type Row<'a> = (Vec<StepRecord>, Vec<&'a str>, Vec<Result<Plan, String>>);
        let rows: Vec<Row> = vec![
            // Nothing stored: every step runs, none resumes.
            (vec![], vec!["a", "b"], vec![run(0, false), run(1, false)]),
            // Two completed, one failed: replayed, then resumed at the failed one.
            (
                stored.clone(),
                vec!["a", "b", "c", "d"],
                vec![
                    Ok(Plan::Replay(json!(1))),
                    Ok(Plan::Replay(json!({"x": 2}))),
                    run(2, true),
                    run(3, false),
                ],
            ),
            // A failed step of another name is simply run again in its place.
            (
                stored.clone(),
                vec!["a", "b", "e"],
                vec![
                    Ok(Plan::Replay(json!(1))),
                    Ok(Plan::Replay(json!({"x": 2}))),
                    run(2, true),
                ],
            ),
        ];
        for (stored, names, want) in rows {
            assert_eq!(plans(stored, &names), want, "{names:?}");
        }
    }

    #[test]
    fn a_changed_order_a_repeated_name_and_too_many_steps_are_refused() {
        let stored = vec![done("a", json!(1)), done("b", json!(2))];
        let got = plans(stored, &["b"]);
        assert_eq!(
            got,
            vec![Err(
                "Step 1 is \"b\" now but was \"a\" in attempt 1: the order of steps changed; \
                 retry from the start"
                    .into()
            )]
        );
        let got = plans(vec![], &["a", "a"]);
        assert_eq!(
            got[1],
            Err("Step \"a\" ran twice in one run: step names must be unique within a task".into())
        );
        let names: Vec<String> = (0..=MAX_STEPS).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let got = plans(vec![], &names);
        assert!(got[..MAX_STEPS].iter().all(Result::is_ok));
        assert_eq!(
            got[MAX_STEPS],
            Err("Step \"s100\" is step 101: a task has at most 100 steps".into())
        );
        for bad in ["", "a\nb", &"x".repeat(MAX_STEP_NAME + 1)] {
            assert!(plans(vec![], &[bad])[0].is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outputs_above_their_limits_are_recorded_as_failures_and_stop_the_run() {
        let at = StepStart::now(1);
        let mut memo = Memo::new(vec![]);
        memo.next("small").unwrap();
        let small = memo.completed("small", json!({"ok": true}).to_string(), at);
        assert_eq!(small.status, StepStatus::Completed);
        assert_eq!(small.output_json(), json!({"ok": true}));

        let big = json!("x".repeat(MAX_STEP_OUTPUT)).to_string();
        memo.next("big").unwrap();
        let record = memo.completed("big", big, at);
        assert_eq!(record.status, StepStatus::Failed);
        assert_eq!(
            record.error.unwrap(),
            format!(
                "Step \"big\" output is {} bytes, above the limit of {MAX_STEP_OUTPUT}",
                MAX_STEP_OUTPUT + 2
            )
        );
        assert_eq!(
            memo.next("after"),
            Err(
                "Step \"after\" started after step \"big\" did not complete: a run stops at \
                 its first step that does not complete"
                    .into()
            )
        );

        // Each below 64 KiB, together above 1 MiB: the 17th is refused.
        let chunk = json!("y".repeat(MAX_STEP_OUTPUT - 10)).to_string();
        let mut memo = Memo::new(vec![]);
        let refused = (0..20)
            .map(|i| {
                let name = format!("c{i}");
                memo.next(&name).unwrap();
                memo.completed(&name, chunk.clone(), at).status == StepStatus::Failed
            })
            .position(|refused| refused);
        assert_eq!(refused, Some(16));
    }

    #[test]
    fn outputs_replay_exactly_as_written() {
        // Integers beyond i64, extended-JSON look-alikes and null come back as they were.
        let outputs = [
            json!(u64::MAX),
            json!({ "n": { "$numberLong": "5" }, "d": { "$date": 0 } }),
            Value::Null,
        ];
        for output in outputs {
            let record = StepRecord::completed("s", output.to_string(), StepStart::now(1));
            let mut memo = Memo::new(vec![record]);
            assert_eq!(memo.next("s"), Ok(Plan::Replay(output.clone())), "{output}");
        }
    }
}
