//! Memoised steps (docs/spec.md §16) against the real database: `record_step`'s write, the
//! re-queue `from` the failed step or the start, and the worker running a processor whose work
//! is in `Job::step`s over several attempts (replay, resume, the rules and limits).

use std::sync::{Arc, Mutex};

use jobs_core::config::Config;
use jobs_core::dispatch::Dispatcher;
use jobs_core::processors::{Job, Processor, ProcessorError, ProcessorFuture, Processors};
use jobs_core::steps::{RESTARTED_MESSAGE, Resume, StepRecord, StepStart, StepStatus};
use jobs_core::store::Store;
use jobs_core::task::{EventKind as E, Handoff, Task, TaskId, TaskStatus};
use jobs_core::testing::{self, assert_legal, task};
use jobs_core::worker::{self, Worker};
use mongodb::bson::{DateTime, doc};
use serde_json::{Value, json};

use crate::support::{LEASE, user};

use TaskStatus::{Completed, Failed, Processing};

const BY: &str = "self";

fn completed(name: &str, attempt: i32) -> StepRecord {
    let output = json!({ "name": name }).to_string();
    StepRecord::completed(name, output, StepStart::now(attempt))
}

fn failed(name: &str, attempt: i32) -> StepRecord {
    StepRecord::failed(name, "broke", StepStart::now(attempt))
}

fn names(task: &Task) -> Vec<(String, StepStatus, i32)> {
    let steps = task.steps.iter();
    steps
        .map(|s| (s.name.clone(), s.status, s.attempt))
        .collect()
}

fn owned(rows: &[(&str, StepStatus, i32)]) -> Vec<(String, StepStatus, i32)> {
    rows.iter()
        .map(|(n, s, a)| (n.to_string(), *s, *a))
        .collect()
}

#[tokio::test]
async fn record_step_sets_entry_k_and_is_fenced_on_the_lease_and_the_place() {
    use StepStatus::{Completed as Done, Failed as Broke};
    let store = testing::fresh_store();
    let seeded = task().status(Processing).insert(&store).await;
    let (id, lease) = (&seeded.task_id, seeded.lease.clone().expect("a lease"));
    let at = (id, &lease);
    // (what is written at which index, resumed, what `steps` holds after it, events added)
    type Row = (
        usize,
        StepRecord,
        bool,
        Vec<(&'static str, StepStatus, i32)>,
        Vec<E>,
    );
    let rows: Vec<Row> = vec![
        (
            0,
            completed("a", 1),
            false,
            vec![("a", Done, 1)],
            vec![E::StepCompleted],
        ),
        (
            1,
            failed("b", 1),
            false,
            vec![("a", Done, 1), ("b", Broke, 1)],
            vec![],
        ),
        // The failed entry is replaced by its re-run, which resumed there.
        (
            1,
            completed("b", 2),
            true,
            vec![("a", Done, 1), ("b", Done, 2)],
            vec![E::Resumed, E::StepCompleted],
        ),
        (
            2,
            completed("c", 2),
            false,
            vec![("a", Done, 1), ("b", Done, 2), ("c", Done, 2)],
            vec![E::StepCompleted],
        ),
        // The same record again (a write repeated after an error) leaves one.
        (
            2,
            completed("c", 2),
            false,
            vec![("a", Done, 1), ("b", Done, 2), ("c", Done, 2)],
            vec![E::StepCompleted],
        ),
        // Entry 1 written when entry 2 is there (a write of entry 1 that the server applied
        // late): fenced on the place, it matches nothing and cuts nothing off.
        (
            1,
            completed("x", 3),
            false,
            vec![("a", Done, 1), ("b", Done, 2), ("c", Done, 2)],
            vec![],
        ),
        // Entry 4 when there is no entry 3: nothing either.
        (
            4,
            completed("y", 3),
            false,
            vec![("a", Done, 1), ("b", Done, 2), ("c", Done, 2)],
            vec![],
        ),
    ];
    for (index, step, resumed, want, events) in rows {
        let before = store.find(id).await.unwrap().unwrap();
        let written = store
            .record_step(at, (index, &step), resumed, (LEASE, BY))
            .await
            .unwrap();
        assert_eq!(
            written,
            !events.is_empty() || step.status == Broke,
            "{} at {index}",
            step.name
        );
        let now = store.find(id).await.unwrap().unwrap();
        assert_legal(&now);
        assert_eq!(names(&now), owned(&want), "{} at {index}", step.name);
        let added: Vec<E> = now.events[before.events.len()..]
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(added, events, "{} at {index}", step.name);
        for event in &now.events[before.events.len()..] {
            assert_eq!(event.step.as_deref(), Some(step.name.as_str()));
            assert_eq!((event.by.as_str(), event.attempt), (BY, Some(step.attempt)));
        }
        let renewed_to = now.lease.as_ref().unwrap().expires_at.timestamp_millis();
        let lease_ms = LEASE.as_millis() as i64;
        assert!(renewed_to >= DateTime::now().timestamp_millis() + lease_ms - 5_000);
    }
    // Another lease (the task was swept and claimed again): nothing written.
    let before = store.find(id).await.unwrap().unwrap();
    let stale = jobs_core::task::Lease {
        id: "someone-else".into(),
        expires_at: DateTime::now(),
    };
    let written = store
        .record_step((id, &stale), (2, &completed("y", 3)), false, (LEASE, BY))
        .await
        .unwrap();
    assert!(!written);
    assert_eq!(store.find(id).await.unwrap().unwrap(), before);
}

#[tokio::test]
async fn a_retry_from_the_failed_step_keeps_the_steps_and_one_from_the_start_empties_them() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let stored = vec![completed("a", 1), completed("b", 1), failed("c", 1)];
    for (from, kept) in [(Resume::FailedStep, 3), (Resume::Start, 0)] {
        let seeded = task()
            .status(Failed)
            .steps(stored.clone())
            .insert(&store)
            .await;
        let handoff = Handoff::new(&seeded.task_id, DateTime::now(), true);
        let moved = store
            .requeue_for_retry(&seeded, &alice, &handoff, from)
            .await
            .unwrap();
        assert!(moved, "{from:?}");
        let now = store.find(&seeded.task_id).await.unwrap().unwrap();
        assert_legal(&now);
        assert_eq!(now.steps.len(), kept, "{from:?}");
        let retried = now.events.last().expect("the retried event");
        assert_eq!(retried.kind, E::Retried);
        let message = (from == Resume::Start).then_some(RESTARTED_MESSAGE);
        assert_eq!(retried.message.as_deref(), message, "{from:?}");
    }
}

/// A processor whose steps, and the one that fails, the test sets before each attempt; it
/// records which steps it actually ran.
#[derive(Clone, Default)]
struct Scripted {
    names: Arc<Mutex<Vec<String>>>,
    fails_in: Arc<Mutex<Option<String>>>,
    ran: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn script(&self, names: &[&str], fails_in: Option<&str>) {
        *self.names.lock().unwrap() = names.iter().map(|n| n.to_string()).collect();
        *self.fails_in.lock().unwrap() = fails_in.map(str::to_owned);
        self.ran.lock().unwrap().clear();
    }

    fn ran(&self) -> Vec<String> {
        self.ran.lock().unwrap().clone()
    }
}

impl Processor for Scripted {
    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            let names = self.names.lock().unwrap().clone();
            let fails_in = self.fails_in.lock().unwrap().clone();
            let mut outputs = Vec::new();
            for name in names {
                let work = async {
                    self.ran.lock().unwrap().push(name.clone());
                    if fails_in.as_deref() == Some(name.as_str()) {
                        return Err(ProcessorError::Failed(format!("{name} broke")));
                    }
                    if name.starts_with("panic") {
                        panic!("{name} panicked");
                    }
                    if name.starts_with("big") {
                        return Ok(json!("x".repeat(70_000)));
                    }
                    Ok(json!({ "name": name, "attempt": job.attempt }))
                };
                let output: Value = job.step(&name, work).await?;
                outputs.push(output);
            }
            Ok(json!({ "outputs": outputs }))
        })
    }
}

/// Claims `id` and runs one attempt of it with `processor` to its end; the task after it.
async fn attempt(store: &Arc<Store>, processor: &(impl Processor + Clone), id: &TaskId) -> Task {
    attempt_at(store, processor, id, DateTime::now()).await
}

/// The same, claimed as of `now` (a scheduled task is claimed once due).
async fn attempt_at(
    store: &Arc<Store>,
    processor: &(impl Processor + Clone),
    id: &TaskId,
    now: DateTime,
) -> Task {
    let config = Config::from_lookup(|name| {
        (name == "JOBS_PUBLIC_URL").then(|| "http://127.0.0.1:9".to_owned())
    });
    let dispatcher = Dispatcher::new(&config, reqwest::Client::new()).expect("a dispatcher");
    let claimed = store
        .claim(id, LEASE, BY, now)
        .await
        .unwrap()
        .expect("claimable");
    let worker = Worker {
        store: store.clone(),
        dispatcher: Arc::new(dispatcher),
        processors: Processors::default().register("scripted", processor.clone()),
        lease_for: LEASE,
        by: BY,
        // Off: no alert URL in this configuration.
        alerts: Arc::new(jobs_core::alerts::Alerts::new(&config, store.clone())),
    };
    worker::run(worker, claimed).await;
    let now = store.find(id).await.unwrap().unwrap();
    assert_legal(&now);
    now
}

async fn scripted_task(store: &Store) -> Task {
    task().kind("scripted", doc! {}).insert(store).await
}

async fn retry(store: &Store, seeded: &Task, from: Resume) {
    let now = store.find(&seeded.task_id).await.unwrap().unwrap();
    let handoff = Handoff::new(&now.task_id, DateTime::now(), true);
    let moved = store
        .requeue_for_retry(&now, &user("alice"), &handoff, from)
        .await
        .unwrap();
    assert!(moved);
}

#[tokio::test]
async fn a_retry_replays_the_completed_steps_and_resumes_at_the_failed_one() {
    use StepStatus::{Completed as Done, Failed as Broke};
    let store = Arc::new(testing::fresh_store());
    let processor = Scripted::default();
    let seeded = scripted_task(&store).await;
    let id = &seeded.task_id;

    processor.script(&["a", "b", "c"], Some("b"));
    let first = attempt(&store, &processor, id).await;
    assert_eq!(first.status, Failed);
    assert_eq!(first.last_error.as_deref(), Some("b broke"));
    assert_eq!(processor.ran(), ["a", "b"]);
    assert_eq!(names(&first), owned(&[("a", Done, 1), ("b", Broke, 1)]));
    assert_eq!(first.steps[1].error.as_deref(), Some("b broke"));

    retry(&store, &seeded, Resume::FailedStep).await;
    processor.script(&["a", "b", "c"], None);
    let second = attempt(&store, &processor, id).await;
    assert_eq!(second.status, Completed, "{:?}", second.last_error);
    assert_eq!(processor.ran(), ["b", "c"], "step a is replayed, not run");
    assert_eq!(
        names(&second),
        owned(&[("a", Done, 1), ("b", Done, 2), ("c", Done, 2)])
    );
    assert_eq!(
        second.steps[0], first.steps[0],
        "step a keeps attempt 1's record"
    );
    // The result saw a's stored output.
    let result = second.result.clone().unwrap();
    let result = jobs_core::task::document_to_json(result);
    assert_eq!(result["outputs"][0]["attempt"], 1);
    let kinds: Vec<(E, Option<&str>)> = second.events[first.events.len()..]
        .iter()
        .map(|e| (e.kind, e.step.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (E::Retried, None),
            (E::Claimed, None),
            (E::Resumed, Some("b")),
            (E::StepCompleted, Some("b")),
            (E::StepCompleted, Some("c")),
            (E::Completed, None),
        ]
    );
}

#[tokio::test]
async fn a_retry_from_the_start_runs_every_step_again() {
    let store = Arc::new(testing::fresh_store());
    let processor = Scripted::default();
    let seeded = scripted_task(&store).await;
    processor.script(&["a", "b", "c"], Some("c"));
    attempt(&store, &processor, &seeded.task_id).await;
    retry(&store, &seeded, Resume::Start).await;
    processor.script(&["a", "b", "c"], None);
    let done = attempt(&store, &processor, &seeded.task_id).await;
    assert_eq!(done.status, Completed);
    assert_eq!(processor.ran(), ["a", "b", "c"]);
    assert!(
        done.steps.iter().all(|s| s.attempt == 2),
        "{:?}",
        done.steps
    );
    assert!(!done.events.iter().any(|e| e.kind == E::Resumed));
}

/// The rules a processor author meets, each failing the attempt permanently with its message.
#[tokio::test]
async fn a_changed_order_a_repeated_name_and_an_oversized_output_fail_the_attempt() {
    let store = Arc::new(testing::fresh_store());
    let processor = Scripted::default();
    // (first attempt's steps and failure, second attempt's steps, the second's message)
    type Row = (
        &'static [&'static str],
        Option<&'static str>,
        &'static [&'static str],
        &'static str,
    );
    let rows: [Row; 3] = [
        (
            &["a", "b"],
            Some("b"),
            &["b", "a"],
            "Step 1 is \"b\" now but was \"a\" in attempt 1: the order of steps changed; retry from the start",
        ),
        (
            &["a", "b"],
            Some("b"),
            &["a", "a"],
            "Step \"a\" ran twice in one run: step names must be unique within a task",
        ),
        (
            &["a", "b"],
            Some("b"),
            &["a", "big"],
            "Step \"big\" output is 70002 bytes, above the limit of 65536",
        ),
    ];
    for (first, fails_in, second, message) in rows {
        let seeded = scripted_task(&store).await;
        processor.script(first, fails_in);
        attempt(&store, &processor, &seeded.task_id).await;
        retry(&store, &seeded, Resume::FailedStep).await;
        processor.script(second, None);
        let now = attempt(&store, &processor, &seeded.task_id).await;
        assert_eq!(now.status, Failed, "{message}");
        assert_eq!(now.last_error.as_deref(), Some(message));
        let entry = now.error_history.last().unwrap();
        assert!(
            entry.permanent,
            "{message}: another attempt would meet it again"
        );
    }
}

/// Two steps joined, and a step after one whose failure the processor swallowed.
#[derive(Clone)]
struct Misuse {
    joined: bool,
}

impl Processor for Misuse {
    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            let slow = |n: u64| async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok::<u64, ProcessorError>(n)
            };
            if self.joined {
                let (a, b) = tokio::join!(job.step("a", slow(1)), job.step("b", slow(2)));
                return Ok(json!([a?, b?]));
            }
            let failing = async { Err::<u64, _>(ProcessorError::Failed("a broke".into())) };
            let _ = job.step("a", failing).await;
            let b: u64 = job.step("b", slow(2)).await?;
            Ok(json!(b))
        })
    }
}

#[tokio::test]
async fn overlapping_steps_and_a_step_after_a_failed_one_fail_the_attempt() {
    use StepStatus::{Completed as Done, Failed as Broke};
    let store = Arc::new(testing::fresh_store());
    // (joined, the attempt's message, what `steps` holds)
    type Row = (bool, &'static str, Vec<(&'static str, StepStatus, i32)>);
    let rows: [Row; 2] = [
        (
            true,
            "Step \"b\" started while another step runs: steps run one at a time",
            vec![("a", Done, 1)],
        ),
        (
            false,
            "Step \"b\" started after step \"a\" did not complete: a run stops at its first \
             step that does not complete",
            vec![("a", Broke, 1)],
        ),
    ];
    for (joined, message, stored) in rows {
        let seeded = scripted_task(&store).await;
        let now = attempt(&store, &Misuse { joined }, &seeded.task_id).await;
        assert_eq!(now.status, Failed, "{message}");
        assert_eq!(now.last_error.as_deref(), Some(message));
        assert!(now.error_history.last().unwrap().permanent);
        assert_eq!(names(&now), owned(&stored), "{message}");
    }
}

/// Reads step `a`'s output as a number, where an earlier version stored an object.
#[derive(Clone)]
struct Typed;

impl Processor for Typed {
    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            let a: u64 = job.step("a", async { Ok(1) }).await?;
            Ok(json!(a))
        })
    }
}

#[tokio::test]
async fn a_stored_output_its_type_no_longer_reads_fails_the_attempt() {
    let store = Arc::new(testing::fresh_store());
    let processor = Scripted::default();
    let seeded = scripted_task(&store).await;
    processor.script(&["a", "b"], Some("b"));
    attempt(&store, &processor, &seeded.task_id).await;
    retry(&store, &seeded, Resume::FailedStep).await;
    let now = attempt(&store, &Typed, &seeded.task_id).await;
    assert_eq!(now.status, Failed);
    let message = now.last_error.unwrap();
    assert!(
        message.starts_with("Step \"a\" has a stored output its type no longer reads"),
        "{message}"
    );
    assert!(message.ends_with("; retry from the start"), "{message}");
}

#[tokio::test]
async fn an_automatic_retry_resumes_and_a_panic_in_a_step_records_no_step() {
    use StepStatus::Completed as Done;
    let store = Arc::new(testing::fresh_store());
    let processor = Scripted::default();
    let policy = jobs_core::task::AutoRetry {
        attempts: 1,
        delay_seconds: 1,
        backoff: jobs_core::task::Backoff::Fixed,
        max_delay_seconds: 1,
    };
    let seeded = task()
        .kind("scripted", doc! {})
        .auto_retry(policy, 0)
        .insert(&store)
        .await;
    let id = &seeded.task_id;
    // A panic in step b: the attempt fails as any panic does, and b has no record.
    processor.script(&["a", "panic-b", "c"], None);
    let first = attempt(&store, &processor, id).await;
    assert_eq!(
        first.status,
        TaskStatus::Scheduled,
        "{:?}",
        first.last_error
    );
    assert!(
        first
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("Processor panicked")
    );
    assert_eq!(names(&first), owned(&[("a", Done, 1)]));
    // The automatic retry, claimed once due, resumes at b.
    processor.script(&["a", "b-fixed", "c"], None);
    let due = DateTime::from_millis(DateTime::now().timestamp_millis() + 60_000);
    let second = attempt_at(&store, &processor, id, due).await;
    assert_eq!(second.status, Completed, "{:?}", second.last_error);
    assert_eq!(processor.ran(), ["b-fixed", "c"]);
    assert_eq!(
        names(&second),
        owned(&[("a", Done, 1), ("b-fixed", Done, 2), ("c", Done, 2)])
    );
}

/// A task an earlier version stored, without `payloadVersion` or a timeline: the claim (one
/// pipeline update) counts it as version 1 and starts its timeline with the claim.
#[tokio::test]
async fn a_claim_of_a_task_stored_before_versions_says_version_1() {
    let store = testing::fresh_store();
    let seeded = task().insert(&store).await;
    let raw = testing::raw_tasks(&store).await;
    raw.update_one(
        doc! { "taskId": seeded.task_id.as_str() },
        doc! { "$unset": { "payloadVersion": "", "events": "" } },
    )
    .await
    .unwrap();
    let claimed = store
        .claim(&seeded.task_id, LEASE, BY, DateTime::now())
        .await
        .unwrap()
        .expect("claimable");
    assert_legal(&claimed);
    assert_eq!(claimed.payload_version, 1);
    assert_eq!(claimed.events.len(), 1);
    assert_eq!(
        (claimed.events[0].kind, claimed.events[0].payload_version),
        (E::Claimed, Some(1))
    );
}
