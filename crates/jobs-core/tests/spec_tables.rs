//! The tables docs/spec.md shares with the code, compared with the code so that changing one
//! without the other fails ("How this file is kept"). What each compares:
//! - errors (§5): code, status and every message (an example of each `JobsError` variant fits
//!   one, and each message's fixed text stands in `src/`); the `when` column is prose;
//! - transitions (§4), on the database: the name, the from and to statuses and the events; the
//!   guard-and-effect and caller columns are prose, pinned by `tests/transitions/`;
//! - dispatch decisions (§7): every cell;
//! - environment (§9): the names (and that only `config.rs` reads any), defaults, accepted values
//!   and the `deployed` column; `what it does` is prose;
//! - crash points (§11): the names; the outcome columns are pinned by `tests/api/crash_points.rs`.
//!
//! The transition table runs every row against the database (SecantusDB): it needs
//! `JOBS_TEST_MONGODB_URI`, which `scripts/test` sets.

use std::collections::BTreeSet;
use std::time::Duration;

use jobs_core::config::Config;
use jobs_core::dispatch::decide;
use jobs_core::steps::Resume;
use jobs_core::store::Store;
use jobs_core::task::{AutoRetry, Backoff, Handoff, Lease, Task, TaskStatus, UserId};
use jobs_core::testing::spec::{self, one_line, quoted};
use jobs_core::testing::{self, TaskFixture, assert_legal, task};
use mongodb::bson::{DateTime, doc};

/// A configuration with exactly these variables set.
fn config(vars: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

/// `yes` or `no`.
fn yes(cell: &str) -> bool {
    match cell {
        "yes" => true,
        "no" => false,
        other => panic!("expected yes or no, found {other:?}"),
    }
}

/// The `NAME=value` pairs quoted in a cell (`none`: no variable).
fn variables(cell: &str) -> Vec<(&str, &str)> {
    quoted(cell)
        .into_iter()
        .map(|pair| {
            pair.split_once('=')
                .unwrap_or_else(|| panic!("not NAME=value: {pair:?}"))
        })
        .collect()
}

/// §7: for each row's variables, `decide` answers the row's transport, base (or error),
/// warning and protection bypass; and the warning is the sentence §7 quotes.
#[test]
fn the_decision_table_is_what_decide_answers() {
    let rows = spec::table("decisions");
    assert!(
        rows.len() >= 20,
        "the decision table has its rows: {rows:?}"
    );
    for row in &rows {
        let [case, vars, transport, base, warning, bypass] = &row[..] else {
            panic!("a decision row has 6 cells: {row:?}");
        };
        let vars = variables(vars);
        let decision = decide(&config(&vars));
        let answered = match &decision.route {
            Ok(route) => {
                let url = route.process_url();
                let base = url
                    .strip_suffix("/api/jobs?action=process")
                    .unwrap_or_else(|| panic!("{case}: {url}"));
                (route.transport().to_owned(), base.to_owned())
            }
            Err(error) => ("none".to_owned(), format!("error: {error}")),
        };
        let expected_base = match base.strip_prefix("error: ") {
            Some(error) => format!("error: {}", quoted(error).concat()),
            None => quoted(base).concat(),
        };
        assert_eq!(
            answered,
            (transport.to_lowercase(), expected_base),
            "docs/spec.md §7, row {case:?}"
        );
        assert_eq!(
            decision.warning.is_some(),
            yes(warning),
            "docs/spec.md §7, row {case:?}: the warning"
        );
        let sent = decision
            .route
            .as_ref()
            .ok()
            .and_then(|route| route.protection_bypass.as_ref())
            .map(|secret| secret.expose());
        let set = vars
            .iter()
            .find(|(name, _)| *name == "VERCEL_AUTOMATION_BYPASS_SECRET")
            .map(|(_, value)| *value);
        assert_eq!(
            sent,
            set.filter(|_| yes(bypass)),
            "docs/spec.md §7, row {case:?}: the bypass"
        );
    }
    let warning = decide(&config(&[("NODE_ENV", "production")]))
        .warning
        .expect("deployed without QStash warns");
    assert!(
        one_line(&spec::text()).contains(warning),
        "docs/spec.md §7 quotes the warning: {warning}"
    );
}

/// The variables `config.rs` reads: the name in each of its `var("..")`, `secret("..")`,
/// `url("..")`, `number("..")` and `seconds("..")`; and `RUST_LOG`, which `telemetry.rs` reads.
fn variables_read() -> BTreeSet<String> {
    let source = include_str!("../src/config.rs");
    ["var(", "secret(", "url(", "number(", "seconds("]
        .iter()
        .flat_map(|call| source.split(call).skip(1))
        .filter_map(|after| after.trim_start().strip_prefix('"')?.split('"').next())
        .chain(["RUST_LOG"])
        .map(str::to_owned)
        .collect()
}

/// What `Config` makes of these variables, secrets masked: two configurations that print alike
/// are alike.
fn printed(vars: &[(&str, &str)]) -> String {
    format!("{:?}", config(vars))
}

/// The problem `Config` records for `name` with these variables, if any.
fn problem(vars: &[(&str, &str)], name: &str) -> Option<String> {
    config(vars)
        .invalid
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.problem)
}

/// §9: the variables are those the code reads; each default is what `Config` makes of an unset
/// variable (and what `.env.example` sets, where it sets one); each range is the one `Config`
/// enforces (its bounds accepted, one past them refused, naming the range); a base URL is
/// checked as one; a flag is on for exactly `true`; any other variable takes any value.
#[test]
fn the_environment_table_is_what_config_reads() {
    let example = include_str!("../../../.env.example");
    let assigned = |name: &str| {
        example
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
    };
    let mut named = BTreeSet::new();
    // What a deployment with nothing set misses, without and with QStash, and what the table
    // says it needs in each case.
    let production = [("VERCEL_ENV", "production")];
    let with_qstash = [("VERCEL_ENV", "production"), ("QSTASH_TOKEN", "t")];
    let missing = |vars: &[(&str, &str)]| -> BTreeSet<String> {
        let config = config(vars);
        config
            .missing_for_deployment()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let (mut needed, mut needed_with_qstash) = (BTreeSet::new(), BTreeSet::new());
    for row in spec::table("environment") {
        let [names, default, accepted, _what, deployed] = &row[..] else {
            panic!("an environment row has 5 cells: {row:?}");
        };
        for name in quoted(names) {
            named.insert(name.to_owned());
            match deployed.as_str() {
                "required" => {
                    needed.insert(name.to_owned());
                    needed_with_qstash.insert(name.to_owned());
                }
                "required with QStash" => _ = needed_with_qstash.insert(name.to_owned()),
                "required without QStash" => _ = needed.insert(name.to_owned()),
                _ => {}
            }
            assert!(example.contains(name), "{name} is not in .env.example");
            let default = quoted(default).first().copied();
            if let Some(default) = default {
                match name {
                    "RUST_LOG" => assert!(
                        include_str!("../src/telemetry.rs").contains(&format!("\"{default}\"")),
                        "RUST_LOG's default is {default}"
                    ),
                    "MONGODB_URI" => assert_eq!(config(&[]).mongodb_uri(), default),
                    _ => assert_eq!(
                        printed(&[(name, default)]),
                        printed(&[]),
                        "{name} set to its default, {default}, is {name} unset"
                    ),
                }
                if let Some(value) = assigned(name).filter(|v| !v.is_empty()) {
                    assert_eq!(value, default, ".env.example sets {name} to its default");
                }
            }
            check_accepted(name, accepted);
        }
    }
    assert_eq!(
        named,
        variables_read(),
        "docs/spec.md §9 names every variable read, and no other"
    );
    assert_eq!(
        needed,
        missing(&production),
        "docs/spec.md §9's `deployed` column: what a deployment without QStash needs"
    );
    assert_eq!(
        needed_with_qstash,
        missing(&with_qstash),
        "docs/spec.md §9's `deployed` column: what a deployment with QStash needs"
    );
}

/// One row's `accepted` cell against what `Config` accepts.
fn check_accepted(name: &str, cell: &str) {
    let ranges: Vec<(&str, u64, u64)> = cell
        .split(", ")
        .filter_map(|part| {
            let range = quoted(part).into_iter().find(|q| q.contains("..="))?;
            let (min, max) = range.split_once("..=")?;
            let env = if part.contains("deployed") {
                "preview"
            } else {
                "development"
            };
            Some((env, min.parse().ok()?, max.parse().ok()?))
        })
        .collect();
    for (env, min, max) in &ranges {
        let refused = |value: u64| {
            let value = value.to_string();
            problem(&[("VERCEL_ENV", env), (name, &value)], name)
        };
        for fine in [*min, *max] {
            assert_eq!(refused(fine), None, "{name}={fine} ({env}) is accepted");
        }
        let mut outside = vec![max + 1];
        outside.extend(min.checked_sub(1));
        for wrong in outside {
            assert_eq!(
                refused(wrong).as_deref(),
                Some(format!("expected a whole number in {min}..={max}, got \"{wrong}\"").as_str()),
                "{name}={wrong} ({env}) is refused, naming {min}..={max}"
            );
        }
    }
    if !ranges.is_empty() {
        return;
    }
    if cell.contains("base URL") {
        let found = problem(&[(name, "notaurl")], name);
        assert!(
            found.is_some_and(|p| p.starts_with("expected an http(s) base URL")),
            "{name} must be a base URL"
        );
        return;
    }
    assert_eq!(
        problem(&[(name, "any text")], name),
        None,
        "{name} takes any value"
    );
    if cell.contains("exactly `true`") {
        assert_ne!(
            printed(&[(name, "true")]),
            printed(&[]),
            "{name}=true turns it on"
        );
        assert_eq!(
            printed(&[(name, "TRUE")]),
            printed(&[]),
            "only exactly `true`"
        );
    }
}

/// §11: the crash points of the table are `failpoints::ALL`.
#[test]
fn the_crash_point_table_is_every_crash_point() {
    let named: BTreeSet<String> = spec::table("crash-points")
        .iter()
        .flat_map(|row| {
            quoted(&row[0])
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let code: BTreeSet<String> = jobs_core::failpoints::ALL
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    assert_eq!(
        named, code,
        "docs/spec.md §11's crash points are failpoints::ALL"
    );
}

/// Who delivers the attempts of the transition table's rows.
const DELIVERER: &str = "qstash";
const LEASE: Duration = Duration::from_secs(30);

fn policy() -> AutoRetry {
    AutoRetry {
        attempts: 3,
        delay_seconds: 10,
        backoff: Backoff::Fixed,
        max_delay_seconds: 60,
    }
}

/// A task in `status` that meets every guard of `transition` but its status: `alice`'s, one
/// manual retry used (so one can be given back), a `scheduled` task due, a `processing` one
/// holding a live lease (an expired one for `fail_lost_worker`), a re-sent hand-off for
/// `unmark_redispatched`.
fn seed(transition: &str, status: TaskStatus) -> TaskFixture {
    let mut seed = task().status(status).retry_count(1);
    match status {
        TaskStatus::Scheduled => seed = seed.auto_retry(policy(), 1).next_attempt_in_secs(-1),
        TaskStatus::Processing => {
            seed = seed.auto_retry(policy(), 0);
            if transition == "fail_lost_worker" {
                seed = seed.lease_expired_secs_ago(60);
            }
        }
        _ => {}
    }
    if transition == "unmark_redispatched" {
        seed = seed.updated_secs_ago(20).redispatched_secs_ago(10);
    }
    seed
}

fn lease_of(task: &Task) -> Lease {
    task.lease.clone().unwrap_or_else(|| Lease {
        id: uuid::Uuid::new_v4().to_string(),
        expires_at: DateTime::now(),
    })
}

fn in_secs(secs: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + secs * 1000)
}

/// Calls `transition` on `seeded` as its caller would; whether its guard matched.
async fn drive(store: &Store, transition: &str, seeded: &Task) -> bool {
    let id = &seeded.task_id;
    let user = &seeded.user_id;
    let lease = lease_of(seeded);
    let handoff = seeded
        .handoff
        .clone()
        .expect("a fixture task has a hand-off");
    let fresh = |retry| Handoff::new(id, DateTime::now(), retry);
    let matched = match transition {
        "claim" => store
            .claim(id, LEASE, DELIVERER, DateTime::now())
            .await
            .map(|t| t.is_some()),
        "report_progress" => store.report_progress(id, &lease, 50, LEASE).await,
        "renew_lease" => store.renew_lease(id, &lease, LEASE).await,
        "record_step" => {
            let started = jobs_core::steps::StepStart::now(seeded.attempts);
            let step = jobs_core::steps::StepRecord::completed("step-1", "1".into(), started);
            let at = (id, &lease);
            store
                .record_step(at, (0, &step), false, (LEASE, DELIVERER))
                .await
        }
        "complete" => {
            store
                .complete(id, &lease, doc! { "ok": true }, DELIVERER)
                .await
        }
        "fail" => {
            let attempt = seeded.attempts;
            store
                .fail(
                    (id, &seeded.user_id),
                    &lease,
                    attempt,
                    "boom",
                    false,
                    DELIVERER,
                )
                .await
        }
        "schedule_retry" => {
            let next = Handoff::new(id, in_secs(30), false);
            let attempt = seeded.attempts;
            store
                .schedule_retry(id, &lease, attempt, "boom", &next, DELIVERER)
                .await
        }
        "requeue_edited" => {
            let Some(read) = store.find(id).await.unwrap() else {
                return false;
            };
            let at = DateTime::now();
            let edit = jobs_core::versions::Edit::of(&read, doc! { "edited": true }, "user:t", at)
                .expect("another payload");
            store
                .requeue_edited(&read, user, &fresh(true), (Resume::FailedStep, Some(&edit)))
                .await
        }
        "requeue_edited_many" => {
            let Some(read) = store.find(id).await.unwrap() else {
                return false;
            };
            let at = DateTime::now();
            let edit = jobs_core::versions::Edit::of(&read, doc! { "edited": true }, "bulk:t", at);
            let batch = Handoff::new_batch();
            store
                .requeue_edited_many(user, &[(&read, edit)], &batch, (at, None))
                .await
                .map(|moved| moved == 1)
        }
        "requeue_for_retry" => jobs_core::testing::requeue_as_read(store, id, user, &fresh(true))
            .await
            .map(|before| before.is_some()),
        "requeue_many" => {
            let (batch, at) = (Handoff::new_batch(), DateTime::now());
            let all = jobs_core::selection::BulkFilter::default();
            let ids = [id.clone()];
            store
                .requeue_many(user, &all, &ids, &batch, (at, Resume::FailedStep))
                .await
                .map(|moved| moved == 1)
        }
        "restore_after_failed_requeue" => {
            store.restore_after_failed_requeue(id, user, &handoff).await
        }
        "restore_many" => store
            .restore_many(user, &[(id.clone(), handoff)])
            .await
            .map(|restored| restored == 1),
        "fail_unqueued" => store.fail_unqueued(seeded, &handoff).await,
        "cancel" => store.cancel(id, user).await.map(|before| before.is_some()),
        "fail_lost_worker" => store.fail_lost_worker(seeded, &lease, "lost").await,
        "mark_redispatched" => store.mark_redispatched(id, &handoff).await,
        "unmark_redispatched" => store.unmark_redispatched(id, &handoff).await,
        "renew_handoff" => {
            let renewed = Handoff::new(id, handoff.at, handoff.retry);
            store.renew_handoff(id, &handoff.dedup_id, &renewed).await
        }
        "fail_never_picked_up" => store.fail_never_picked_up(seeded, "never").await,
        "fail_undelivered" => {
            store
                .fail_undelivered(seeded, &handoff.dedup_id, "undelivered")
                .await
        }
        other => panic!("docs/spec.md §4 names `{other}`, which this test cannot call: add it"),
    };
    matched.unwrap_or_else(|e| panic!("{transition}: {e}"))
}

/// The `(kind, by)` events of a cell: `` `kind` by `who` ``, comma-separated, or `none`;
/// `<userId>` is the owner, *deliverer* who delivered the attempt.
fn events(cell: &str, owner: &UserId) -> Vec<(String, String)> {
    if cell == "none" {
        return Vec::new();
    }
    cell.split(", ")
        .map(|entry| {
            let (kind, by) = entry
                .split_once(" by ")
                .unwrap_or_else(|| panic!("not `kind` by who: {entry:?}"));
            let by = match by.trim_matches('`') {
                "*deliverer*" => DELIVERER.to_owned(),
                who => who.replace("<userId>", owner.as_str()),
            };
            (quoted(kind).concat(), by)
        })
        .collect()
}

/// The events `stored` has that `seeded` had not, as `(kind, by)`.
fn appended(seeded: &Task, stored: &Task) -> Vec<(String, String)> {
    stored.events[seeded.events.len()..]
        .iter()
        .map(|e| {
            let kind = serde_json::to_value(e.kind).expect("a kind is a string");
            (kind.as_str().expect("a string").to_owned(), e.by.clone())
        })
        .collect()
}

/// The statuses quoted in a cell (`(none)`, `unchanged`: none).
fn statuses(cell: &str) -> Vec<TaskStatus> {
    quoted(cell)
        .into_iter()
        .map(|name| TaskStatus::parse(name).unwrap_or_else(|| panic!("not a status: {name}")))
        .collect()
}

/// The transitions of `src/transitions/`: every `async fn` of a `Store` there but the helpers
/// the transitions share.
fn transitions_in_the_code() -> BTreeSet<String> {
    const HELPERS: [&str; 4] = [
        "update_one",
        "find_one_and_update",
        "fail_where",
        "noting_failed",
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/transitions");
    let mut names = BTreeSet::new();
    for file in std::fs::read_dir(dir).expect("src/transitions") {
        let source = std::fs::read_to_string(file.expect("an entry").path()).expect("a file");
        for after in source.split("async fn ").skip(1) {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !HELPERS.contains(&name.as_str()) {
                names.insert(name);
            }
        }
    }
    names
}

/// §4: every row's transition, tried on a task in each of the six statuses that meets its other
/// guards, matches exactly from the row's `from` statuses, leaves the task in its `to` status
/// (legal, with the row's events appended, the failure version moved once when `failed` is
/// either end, §14), and leaves any other task exactly as it was. The
/// rows are every transition of `src/transitions/`, `Task::new` standing for `create`'s `insert`.
#[tokio::test]
async fn the_transition_table_is_what_the_transitions_do() {
    let store = testing::fresh_store();
    let rows = spec::table("transitions");
    let mut named = BTreeSet::new();
    for row in &rows {
        let [transition, from, to, _by, _effect, appends] = &row[..] else {
            panic!("a transition row has 6 cells: {row:?}");
        };
        let name = quoted(transition)[0];
        let (from, to) = (statuses(from), statuses(to).first().copied());
        if name == "Task::new" {
            assert!(from.is_empty(), "create starts from nothing");
            let owner = UserId::parse("alice").unwrap();
            let created = Task::new(owner.clone(), None, "demo".into(), doc! {}, 3);
            store.insert(&created).await.expect("insert");
            let stored = store.find(&created.task_id).await.unwrap().expect("stored");
            assert_eq!(Some(stored.status), to, "create");
            let no_events = Task {
                events: Vec::new(),
                ..stored.clone()
            };
            assert_eq!(
                appended(&no_events, &stored),
                events(appends, &owner),
                "create"
            );
            assert_legal(&stored);
            // The transitions that store it: `insert`, or `insert_unless_stored` for a keyed create.
            named.insert("insert".to_owned());
            named.insert("insert_unless_stored".to_owned());
            continue;
        }
        named.insert(name.to_owned());
        for status in TaskStatus::ALL {
            let seeded = seed(name, status).insert(&store).await;
            assert_legal(&seeded);
            let version = async || {
                let summary = store.failure_summary(&seeded.user_id).await;
                summary.expect("the failure summary").version
            };
            let before = version().await;
            let matched = drive(&store, name, &seeded).await;
            let stored = store.find(&seeded.task_id).await.unwrap().expect("stored");
            // §14: a change into or out of `failed` moves the user's version once, nothing
            // else does.
            let into_or_out_of_failed =
                status == TaskStatus::Failed || to == Some(TaskStatus::Failed);
            assert_eq!(
                version().await - before,
                i64::from(matched && into_or_out_of_failed),
                "docs/spec.md §14: the failure version after `{name}` from {status}"
            );
            assert_eq!(
                matched,
                from.contains(&status),
                "docs/spec.md §4: does `{name}` move a {status} task?"
            );
            if !matched {
                assert_eq!(stored, seeded, "`{name}` left the {status} task as it was");
                continue;
            }
            assert_eq!(
                stored.status,
                to.unwrap_or(status),
                "docs/spec.md §4: `{name}` from {status}"
            );
            assert_eq!(
                appended(&seeded, &stored),
                events(appends, &seeded.user_id),
                "docs/spec.md §4: the events of `{name}` from {status}"
            );
            assert_legal(&stored);
        }
    }
    assert_eq!(
        named,
        transitions_in_the_code(),
        "docs/spec.md §4 has a row for every transition of src/transitions/, and no other"
    );
}

/// docs/spec.md §5's error table is the code's: an example of every variant of `JobsError`
/// (`error.rs` is read to know them all) has a row with its code, its status
/// (`JobsError::status`) and a message its `Display` fits, every row has an example, and the 401 row
/// lists exactly the messages `auth.rs` answers with.
#[test]
fn every_error_has_its_row() {
    use jobs_core::error::JobsError;
    use jobs_core::task::TaskId;
    use jobs_core::testing::spec::{fits, table};

    let id = || TaskId::parse("t").unwrap();
    let examples = [
        JobsError::MissingFields("taskId, userId"),
        JobsError::InvalidBody("x".into()),
        JobsError::InvalidQuery("x".into()),
        JobsError::UnknownAction("x".into()),
        JobsError::UnknownTaskType("x".into()),
        JobsError::InvalidPayload("x".into()),
        JobsError::Unauthenticated("Invalid signature"),
        JobsError::NotOwner,
        JobsError::UserMismatch,
        JobsError::TaskNotFound(id()),
        JobsError::MethodNotAllowed {
            method: "GET".into(),
            action: "retry",
            allow: "POST",
        },
        JobsError::NotFailed,
        JobsError::VersionConflict(3),
        JobsError::CancelledMeanwhile,
        JobsError::NotDueYet(3),
        JobsError::IdempotencyKeyReused,
        JobsError::MaxRetries(3),
        JobsError::NotCancellable(TaskStatus::Completed),
        JobsError::PayloadTooLarge {
            limit: jobs_core::http::MAX_BODY_BYTES,
        },
        JobsError::missing_setting("JOBS_AUTH_SECRET"),
        JobsError::InvalidSettings("JOBS_LEASE_SECONDS: expected ...".into()),
        JobsError::Internal("detail".into()),
        JobsError::RequeueFailed,
        JobsError::EnqueueFailed(id()),
        JobsError::DbUnavailable,
        JobsError::DbTimeout(std::time::Duration::from_millis(2500)),
        JobsError::WatchUnavailable("no change streams".into()),
        JobsError::MetricsOff,
    ];
    let source = include_str!("../src/error.rs");
    let body = source
        .split_once("pub enum JobsError {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .expect("error.rs declares JobsError")
        .0;
    let variants = body.lines().filter_map(|line| {
        let name = line.strip_prefix("    ")?;
        name.starts_with(|c: char| c.is_ascii_uppercase())
            .then(|| name.split(|c: char| !c.is_alphanumeric()).next())?
    });
    for variant in variants {
        assert!(
            examples.iter().any(|e| format!("{e:?}")
                .split(|c: char| !c.is_alphanumeric())
                .next()
                == Some(variant)),
            "no example of JobsError::{variant}"
        );
    }

    let rows = table("errors");
    let mut answered = vec![false; rows.len()];
    for error in &examples {
        let (code, status, message) = (error.code(), error.status(), error.to_string());
        let row = rows.iter().position(|row| {
            row[0] == format!("`{code}`")
                && row[1] == status.to_string()
                && quoted(&row[2])
                    .iter()
                    .any(|pattern| fits(pattern, &message))
        });
        let row = row.unwrap_or_else(|| {
            panic!("docs/spec.md §5 has no row | `{code}` | {status} | `{message}` |")
        });
        answered[row] = true;
    }
    for (row, answered) in rows.iter().zip(answered) {
        assert!(answered, "no error of the code is the row {row:?}");
    }
    // Every message a row lists, not only the one an example fits, is the code's: the text
    // between its `<...>` placeholders stands in the source as written.
    let source = source_of_src();
    for row in &rows {
        for pattern in quoted(&row[2]) {
            for literal in literals(pattern) {
                assert!(
                    source.contains(literal),
                    "docs/spec.md §5 row {}: `{literal}` of `{pattern}` is in no message of src/",
                    row[0]
                );
            }
        }
    }

    let auth = include_str!("../src/auth.rs");
    let said: BTreeSet<&str> = auth
        .split("Unauthenticated(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .collect();
    let listed = rows
        .iter()
        .find(|row| row[0] == "`UNAUTHENTICATED`")
        .map(|row| quoted(&row[2]).into_iter().collect::<BTreeSet<_>>());
    assert_eq!(listed, Some(said), "the 401 messages of docs/spec.md §5");
    assert_eq!(
        JobsError::Internal("secret detail".into()).to_string(),
        "Internal error"
    );
}

/// The fixed parts of a message pattern: the text between its `<...>` placeholders.
fn literals(pattern: &str) -> Vec<&str> {
    pattern
        .split('<')
        .enumerate()
        .filter_map(|(i, part)| match i {
            0 => Some(part),
            _ => part.split_once('>').map(|(_, after)| after),
        })
        .filter(|part| !part.is_empty())
        .collect()
}

/// Every file of `src/`, one after the other.
fn source_of_src() -> String {
    files_of_src().into_iter().map(|(_, text)| text).collect()
}

/// Every file of `src/`: its path under `src/` and its text.
fn files_of_src() -> Vec<(String, String)> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("src/") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(&root).unwrap().display().to_string();
                files.push((name, std::fs::read_to_string(path).expect("a file")));
            }
        }
    }
    files
}

/// Only `config.rs` reads the service's environment, so the §9 table, compared with what it
/// reads, names every variable. The test-only modules read their own (`FAILPOINTS`,
/// `JOBS_TEST_MONGODB_URI`); `telemetry.rs` reads `RUST_LOG` through `EnvFilter`.
#[test]
fn only_config_reads_the_environment() {
    const ALLOWED: [&str; 3] = ["config.rs", "testing.rs", "failpoints.rs"];
    for (name, text) in files_of_src() {
        let reads = ["env::var", "from_default_env", "from_env("]
            .iter()
            .any(|read| text.contains(read));
        let allowed = ALLOWED.contains(&name.as_str())
            || (name == "telemetry.rs" && !text.contains("env::var"));
        assert!(
            !reads || allowed,
            "src/{name} reads the environment: read it in config.rs, and list it in §9"
        );
    }
}
