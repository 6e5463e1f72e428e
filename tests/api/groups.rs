//! `groups` for `failed` answered from the answer kept per user (docs/spec.md §14): what moves
//! it (a failure by the worker, a retry), what does not (a change it was not told about, kept
//! no longer than `JOBS_GROUPS_CACHE_SECONDS`), and `0` turning keeping off.

use std::time::Duration;

use mongodb::bson::doc;
use serde_json::Value;

use crate::support::Service;

/// `(template, count)` of each group, largest first.
fn counts(reply: &Value) -> Vec<(String, i64)> {
    let groups = reply["groups"].as_array().expect("groups");
    let row = |g: &Value| {
        (
            g["template"].as_str().unwrap().to_owned(),
            g["count"].as_i64().unwrap(),
        )
    };
    groups.iter().map(row).collect()
}

const FAILURE: &str = "Simulated failure on attempt <n>";

/// Waits until `user`'s failure version is `version`: the worker notes a failure right after
/// writing it, so a task reads `failed` a moment before its note.
async fn wait_for_version(jobs: &Service, user: &str, version: i64) {
    let summaries = jobs.tasks.client().database(&jobs.db_name);
    let summaries = summaries.collection::<mongodb::bson::Document>("failureGroups");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = summaries.find_one(doc! { "_id": user }).await.unwrap();
        let now = found.and_then(|d| d.get_i64("version").ok()).unwrap_or(0);
        if now == version {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{user}'s version is {now}, not {version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A task failed by the worker and a retry each move the user's version: the next `groups`
/// aggregates again and is right at once; with nothing changed it is the kept answer, one
/// `find`.
#[tokio::test]
async fn a_failure_and_a_retry_show_at_once_and_nothing_else_costs_more_than_one_read() {
    let jobs = Service::start().await;
    let first = jobs.failed_task("alice", 1, 3).await;
    wait_for_version(&jobs, "alice", 1).await;
    let groups = jobs.get("action=groups&userId=alice").await;
    assert_eq!(
        (groups.status, groups.db_commands()),
        (200, 3),
        "{}",
        groups.body
    );
    assert_eq!(counts(&groups.body), [(FAILURE.to_owned(), 1)]);
    let kept = jobs.get("action=groups&userId=alice").await;
    assert_eq!((kept.db_commands(), &kept.body), (1, &groups.body));

    // Failed by the worker (`fail`): counted at once.
    jobs.failed_task("alice", 1, 3).await;
    wait_for_version(&jobs, "alice", 2).await;
    let two = jobs.get("action=groups&userId=alice").await;
    assert_eq!(counts(&two.body), [(FAILURE.to_owned(), 2)], "{}", two.body);
    // Another user's failure does not move alice's answer.
    jobs.failed_task("bob", 1, 3).await;
    wait_for_version(&jobs, "bob", 1).await;
    let still = jobs.get("action=groups&userId=alice").await;
    assert_eq!((still.db_commands(), &still.body), (1, &two.body));

    // Retried (`requeue_for_retry`, noted before `retry` answers): gone from the count at
    // once, before it runs again.
    let retry = jobs.retry(&first, "alice").await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let one = jobs.get("action=groups&userId=alice").await;
    assert_eq!(counts(&one.body), [(FAILURE.to_owned(), 1)], "{}", one.body);
    jobs.wait_for_status(&first, "completed").await;
    let done = jobs.get("action=groups&userId=alice").await;
    assert_eq!(
        counts(&done.body),
        [(FAILURE.to_owned(), 1)],
        "{}",
        done.body
    );
    // Another status is never kept: the aggregation, one command, every time.
    for _ in 0..2 {
        let completed = jobs
            .get("action=groups&userId=alice&status=completed")
            .await;
        assert_eq!((completed.status, completed.db_commands()), (200, 1));
    }
}

/// A change made without the note (an earlier version of the service during a rolling deploy,
/// or a process killed between a task's write and its note) shows once the kept answer is
/// `JOBS_GROUPS_CACHE_SECONDS` old, and never later.
#[tokio::test]
async fn a_change_nobody_noted_shows_once_the_kept_answer_expires() {
    let jobs = Service::start_with(&[("JOBS_GROUPS_CACHE_SECONDS", "5")]).await;
    let id = jobs.failed_task("alice", 1, 3).await;
    wait_for_version(&jobs, "alice", 1).await;
    let kept = jobs.get("action=groups&userId=alice").await;
    assert_eq!(counts(&kept.body), [(FAILURE.to_owned(), 1)]);
    // Re-queued behind the service's back, as the previous version would (no note).
    let moved = jobs
        .tasks
        .update_one(
            doc! { "taskId": &id },
            doc! { "$set": { "status": "queued" } },
        )
        .await
        .unwrap();
    assert_eq!(moved.modified_count, 1);
    // Within the 5 s, the kept answer (what makes the bound necessary)...
    let stale = jobs.get("action=groups&userId=alice").await;
    assert_eq!((stale.db_commands(), &stale.body), (1, &kept.body));
    // ...and not after them.
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let expired = jobs.get("action=groups&userId=alice").await;
    assert_eq!(expired.db_commands(), 3, "aggregated again");
    assert_eq!(counts(&expired.body), [], "{}", expired.body);
}

/// `JOBS_GROUPS_CACHE_SECONDS=0`: every `groups` is the aggregation alone, one command, and
/// nothing is kept.
#[tokio::test]
async fn zero_turns_keeping_off() {
    let jobs = Service::start_with(&[("JOBS_GROUPS_CACHE_SECONDS", "0")]).await;
    jobs.failed_task("alice", 1, 3).await;
    for _ in 0..2 {
        let groups = jobs.get("action=groups&userId=alice").await;
        assert_eq!(groups.db_commands(), 1);
        assert_eq!(counts(&groups.body), [(FAILURE.to_owned(), 1)]);
    }
    let summaries = jobs.tasks.client().database(&jobs.db_name);
    let kept = summaries.collection::<mongodb::bson::Document>("failureGroups");
    let kept = kept
        .find_one(doc! { "cached": { "$exists": true } })
        .await
        .unwrap();
    assert_eq!(kept, None);
}
