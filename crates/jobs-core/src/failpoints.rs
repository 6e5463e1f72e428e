//! Named crash points between the side effects of every action (docs/spec.md §11, "A crash at
//! every step"). Each is a row of the table test `tests/api/crash_points.rs`, which arms one
//! through the `FAILPOINTS` variable (`<name>=return(kill)` or `<name>=return(error)`) of a test
//! build (feature `failpoints`, TiKV's `fail` crate) and checks that the rescuer leaves nothing
//! stranded and nothing run twice. In any other build they compile to nothing.
//!
//! A point sits right after the side effect it names: `kill` ends the process there, as a
//! platform timeout or an out-of-memory kill would; `error` turns that step's outcome into an
//! error after it took effect, as a write that applied but did not answer, or a hand-off sent
//! whose answer was lost.

/// Every crash point of the build, with the side effect it follows. A unit test checks that
/// the code names no other and leaves none of these unused; the table test has a row for each.
pub const ALL: [(&str, &str); 19] = [
    (
        "create.key_admitted",
        "create: its Idempotency-Key stored, before the task",
    ),
    (
        "create.inserted",
        "create: the task inserted, queued with its hand-off recorded",
    ),
    ("create.handed_off", "create: the hand-off sent"),
    (
        "create.failed_unqueued",
        "create: a task whose hand-off failed marked failed",
    ),
    (
        "retry.requeued",
        "retry: the task re-queued (requeue_for_retry)",
    ),
    ("retry.handed_off", "retry: the hand-off sent"),
    (
        "retry.restored",
        "retry: a re-queue whose hand-off failed undone",
    ),
    (
        "failed.changed",
        "a transition into or out of failed: its write applied, before its note for groups",
    ),
    (
        "retry_many.requeued",
        "retryMany: the page re-queued in one update",
    ),
    (
        "retry_many.read_back",
        "retryMany: which tasks moved read back",
    ),
    ("retry_many.handed_off", "retryMany: the hand-offs sent"),
    (
        "process.claimed",
        "process: the task claimed, before the 202",
    ),
    (
        "worker.ran",
        "worker: the processor returned, before the final write",
    ),
    ("worker.recorded", "worker: the final write applied"),
    (
        "worker.scheduled",
        "worker: an automatic retry scheduled, before its publish",
    ),
    ("sweep.marked", "sweep: a chunk of hand-offs marked re-sent"),
    ("sweep.handed_off", "sweep: a chunk of hand-offs sent"),
    (
        "sweep.failed_lost",
        "sweep: lost workers and unclaimed tasks failed",
    ),
    (
        "delivery_failed.failed",
        "deliveryFailed: the undelivered task failed",
    ),
];

/// An error injected at a crash point armed with `return(error)`.
#[derive(Debug, Clone, Copy)]
pub struct Injected(pub &'static str);

/// Passes an outcome through the crash point `name`: unchanged unless it is armed.
pub trait At: Sized {
    /// `kill`: the process ends here. `error`: the outcome becomes an error (after the side
    /// effect took place).
    fn at(self, name: &'static str) -> Self;
}

impl<T, E: From<Injected>> At for Result<T, E> {
    #[inline]
    fn at(self, name: &'static str) -> Self {
        match hit(name) {
            Some(injected) => self.and(Err(injected.into())),
            None => self,
        }
    }
}

/// Whether the crash point `name` is armed to fail the step; ends the process when it is armed
/// to kill. `None` in a build without failpoints.
#[inline]
pub fn hit(name: &'static str) -> Option<Injected> {
    #[cfg(feature = "failpoints")]
    {
        debug_assert!(
            ALL.iter().any(|(n, _)| *n == name),
            "unknown crash point {name}"
        );
        let action = fail::eval(name, |argument| argument.unwrap_or_default())?;
        if action == "kill" {
            tracing::error!(failpoint = name, "crash point: killing the process");
            std::process::abort();
        }
        tracing::warn!(failpoint = name, "crash point: failing the step");
        Some(Injected(name))
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}

/// Arms the crash points named in `FAILPOINTS` (`name=action;name=action`, the `fail` crate's
/// syntax, e.g. `retry.requeued=1*return(kill)`). A no-op in a build without failpoints.
pub fn arm_from_env() {
    #[cfg(feature = "failpoints")]
    for entry in std::env::var("FAILPOINTS").unwrap_or_default().split(';') {
        if let Some((name, actions)) = entry.trim().split_once('=') {
            match fail::cfg(name.trim(), actions.trim()) {
                Ok(()) => tracing::warn!(failpoint = name, actions, "crash point armed"),
                Err(error) => tracing::error!(failpoint = name, error, "crash point not armed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ALL;

    /// Every `.at("…")` / `hit("…")` in the crate names a point of [`ALL`], and every point of
    /// [`ALL`] is used: a new side effect cannot hide without a row.
    #[test]
    fn the_code_uses_exactly_the_listed_crash_points() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut used = Vec::new();
        let mut pending = vec![std::path::PathBuf::from(dir)];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.ends_with("failpoints.rs") || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for marker in [".at(\"", "hit(\""] {
                for (i, _) in source.match_indices(marker) {
                    let rest = &source[i + marker.len()..];
                    used.push(rest[..rest.find('"').unwrap()].to_owned());
                }
            }
        }
        // One point may sit on each branch of a step (the worker's final writes).
        used.sort();
        used.dedup();
        let mut listed: Vec<String> = ALL.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(used, listed, "crash points in the code vs failpoints::ALL");
    }
}
