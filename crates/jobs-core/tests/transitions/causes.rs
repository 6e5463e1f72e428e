//! The causes the failure transitions record (`errorTemplate`, `errorGroup`), grouped by
//! `error_groups`.

use jobs_core::store::count_commands;
use jobs_core::task::{Handoff, Task, TaskStatus};
use jobs_core::testing::{self, assert_legal, task};
use jobs_core::transitions::ENQUEUE_FAILED_MESSAGE;
use mongodb::bson::DateTime;

use crate::support::{
    ATTEMPT_3, ATTEMPT_CAUSE, BOOM, BOOM_CAUSE, CauseOf, ENQUEUE_CAUSE, scheduled_in_ms, user,
};

use TaskStatus::{Cancelled, Completed, Failed, Scheduled};

/// `error_groups`: one aggregation; a user's tasks of one status grouped by cause, with the
/// template, the count, the latest failure and an example (the latest), largest first (then
/// latest first); other users' tasks, other statuses and tasks without a cause left out.
#[tokio::test]
async fn error_groups() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let failed = |message: &str, secs_ago| {
        task()
            .status(Failed)
            .last_error(message)
            .updated_secs_ago(secs_ago)
    };
    let attempt_1 = failed("Simulated failure on attempt 1", 30)
        .insert(&store)
        .await;
    let attempt_2 = failed("Simulated failure on attempt 2", 10)
        .retry_count(1)
        .insert(&store)
        .await;
    let attempt_3 = failed(ATTEMPT_3, 20).retry_count(2).insert(&store).await;
    let http_503 = failed("webhook answered HTTP 503", 5).insert(&store).await;
    let http_500 = failed("webhook answered HTTP 500", 40).insert(&store).await;
    let boom = failed(BOOM, 1).insert(&store).await;
    let unqueued = failed(ENQUEUE_FAILED_MESSAGE, 50)
        .attempts(0)
        .insert(&store)
        .await;
    // Left out: another user's, other statuses, no cause recorded.
    failed("Simulated failure on attempt 1", 0)
        .owner("mallory")
        .insert(&store)
        .await;
    let scheduled = scheduled_in_ms(60_000).insert(&store).await;
    task().status(Completed).insert(&store).await;
    task().status(Cancelled).insert(&store).await;
    failed("Simulated failure on attempt 1", 0)
        .without_error_group()
        .insert(&store)
        .await;
    let retried = failed("Simulated failure on attempt 1", 0)
        .insert(&store)
        .await;
    let handoff = Handoff::new(&retried.task_id, DateTime::now(), true);
    jobs_core::testing::requeue_as_read(&store, &retried.task_id, &alice, &handoff)
        .await
        .unwrap()
        .expect("retried: queued, its cause kept");
    let seeded = [
        &attempt_1, &attempt_2, &attempt_3, &http_503, &http_500, &boom, &unqueued, &scheduled,
    ];
    seeded.iter().for_each(|t| assert_legal(t));

    type Group = (String, String, i64, DateTime, String);
    let groups = |status| {
        let store = &store;
        let alice = &alice;
        async move {
            let (groups, commands) = count_commands(store.error_groups(alice, status)).await;
            assert_eq!(commands, 1, "error_groups is ONE command");
            groups
                .unwrap()
                .into_iter()
                .map(|g| {
                    let count = match g.get("count") {
                        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
                        Some(mongodb::bson::Bson::Int64(n)) => *n,
                        other => panic!("count {other:?} in {g}"),
                    };
                    (
                        g.get_str("_id").unwrap().to_owned(),
                        g.get_str("template").unwrap().to_owned(),
                        count,
                        *g.get_datetime("lastAt").unwrap(),
                        g.get_str("exampleTaskId").unwrap().to_owned(),
                    )
                })
                .collect::<Vec<Group>>()
        }
    };
    let group = |(template, group): CauseOf, count, latest: &Task| -> Group {
        (
            group.to_owned(),
            template.to_owned(),
            count,
            latest.updated_at,
            latest.task_id.to_string(),
        )
    };
    const HTTP_CAUSE: CauseOf = ("webhook answered HTTP <n>", "fb2941b260ea");
    assert_eq!(
        groups(Failed).await,
        vec![
            group(ATTEMPT_CAUSE, 3, &attempt_2),
            group(HTTP_CAUSE, 2, &http_503),
            group(BOOM_CAUSE, 1, &boom),
            group(ENQUEUE_CAUSE, 1, &unqueued),
        ],
        "alice's failed tasks by cause: (errorGroup, template, count, lastAt, exampleTaskId)"
    );
    assert_eq!(
        groups(Scheduled).await,
        vec![group(ATTEMPT_CAUSE, 1, &scheduled)],
        "alice's scheduled tasks by cause"
    );
}

/// §14: an answer aggregated after reading version v is kept only while the version is still
/// v: a change noted between the read and the keep (first for a user without a document, then
/// for one with) drops it, and the answer at the current version is kept.
#[tokio::test]
async fn a_kept_answer_is_never_older_than_the_version_it_carries() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let groups = vec![mongodb::bson::doc! { "_id": "g", "count": 1 }];
    let now = DateTime::now();
    let fresh = |summary: &jobs_core::store::Summary| {
        summary
            .fresh(now, std::time::Duration::from_secs(60))
            .is_some()
    };
    for _ in 0..2 {
        let read = store.failure_summary(&alice).await.unwrap();
        // A failure noted between the read and the keep.
        failed_for(&store, &alice).await;
        store
            .keep_failure_groups(&alice, (read.version, now), &groups)
            .await
            .unwrap();
        let after = store.failure_summary(&alice).await.unwrap();
        assert_eq!(after.version, read.version + 1);
        assert!(
            !fresh(&after),
            "the answer read at {} was kept at {}",
            read.version,
            after.version
        );
    }
    let read = store.failure_summary(&alice).await.unwrap();
    store
        .keep_failure_groups(&alice, (read.version, now), &groups)
        .await
        .unwrap();
    let after = store.failure_summary(&alice).await.unwrap();
    assert!(fresh(&after), "kept at the version it was read at");
}

/// A task of `user` run and failed by the worker (`fail`, which notes the change).
async fn failed_for(store: &jobs_core::store::Store, user: &jobs_core::task::UserId) {
    let queued = task().owner(user.as_str()).insert(store).await;
    crate::support::run_and_fail(store, &queued.task_id, "self").await;
}

/// §14: a user whose document a keep created (no `version` field: 0) is kept again at 0 when
/// the answer expired and nothing changed (`null` matches the missing field), not refused.
#[tokio::test]
async fn an_expired_answer_at_version_zero_is_kept_again() {
    let store = testing::fresh_store();
    let carol = user("carol");
    let groups = vec![mongodb::bson::doc! { "_id": "g", "count": 1 }];
    let at = |ms: i64| DateTime::from_millis(1_700_000_000_000 + ms);
    let max_age = std::time::Duration::from_secs(5);
    store
        .keep_failure_groups(&carol, (0, at(0)), &groups)
        .await
        .unwrap();
    let first = store.failure_summary(&carol).await.unwrap();
    assert_eq!(first.version, 0);
    assert!(first.fresh(at(1_000), max_age).is_some());
    assert!(first.fresh(at(10_000), max_age).is_none(), "expired");
    store
        .keep_failure_groups(&carol, (0, at(10_000)), &groups)
        .await
        .unwrap();
    let again = store.failure_summary(&carol).await.unwrap();
    assert!(
        again.fresh(at(11_000), max_age).is_some(),
        "kept again at version 0"
    );
}

/// A failure message over 2,000 characters is stored cut (in `lastError`, the error history and
/// the event) and says so, but its cause comes from the whole message: cutting never splits a
/// group.
#[tokio::test]
async fn a_long_message_is_stored_cut_with_the_cause_of_the_whole() {
    let store = testing::fresh_store();
    let seeded = task().status(TaskStatus::Processing).insert(&store).await;
    let lease = seeded.lease.clone().expect("a lease");
    // A quoted body the template replaces whole, longer than what is stored.
    let message = format!("Webhook answered HTTP 500: \"{}\"", "word ".repeat(1_000));
    let failed = store
        .fail(
            (&seeded.task_id, &seeded.user_id),
            &lease,
            seeded.attempts,
            &message,
            false,
            "self",
        )
        .await
        .unwrap();
    assert!(failed);
    let now = store.find(&seeded.task_id).await.unwrap().unwrap();
    assert_legal(&now);
    let stored = now.last_error.clone().unwrap();
    assert_eq!(
        stored.chars().count(),
        2_000 + "… (cut at 2000 characters)".chars().count()
    );
    assert!(stored.ends_with("… (cut at 2000 characters)"));
    assert_eq!(now.error_history.last().unwrap().message, stored);
    assert_eq!(
        now.events.last().unwrap().message.as_deref(),
        Some(stored.as_str())
    );
    let whole = jobs_core::error_groups::Cause::of(&message);
    assert_eq!(now.error_group.as_deref(), Some(whole.group.as_str()));
    assert_eq!(
        now.error_template.as_deref(),
        Some("Webhook answered HTTP <n>: <s>")
    );
}
