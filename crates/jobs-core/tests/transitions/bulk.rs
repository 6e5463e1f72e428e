//! Bulk retry's transitions (`transitions/bulk.rs`): `requeue_many` and `restore_many`, each ONE
//! command over many tasks, and their races with single retries.

use std::sync::Arc;

use jobs_core::error::REQUEUE_FAILED_MESSAGE;
use jobs_core::selection::BulkFilter;
use jobs_core::steps::Resume;
use jobs_core::store::{Store, count_commands};
use jobs_core::task::{EventKind as E, Handoff, Task, TaskId, TaskStatus};
use jobs_core::testing::{self, TaskFixture, assert_legal, task};
use mongodb::bson::DateTime;

use crate::support::{LEASE, assert_events_appended, policy, run_and_fail, scheduled_in_ms, user};

use TaskStatus::{Completed, Failed, Processing, Queued};

/// One candidate of a bulk retry by `alice`: whether `requeue_many` moves it (exactly
/// `requeue_for_retry`'s guard), and whether it is claimed before the undo (`restore_many`).
struct Candidate {
    name: &'static str,
    seed: TaskFixture,
    moves: bool,
    claimed_before_undo: bool,
}

fn candidate(name: &'static str, seed: TaskFixture, moves: bool) -> Candidate {
    Candidate {
        name,
        seed,
        moves,
        claimed_before_undo: false,
    }
}

/// Re-queues `tasks` of `alice` in bulk as one batch, the selection `selection`; returns their
/// hand-offs (those of the tasks that did not move too) and the command's result.
async fn requeue_batch(
    store: &Store,
    selection: &BulkFilter,
    tasks: &[Task],
) -> (Vec<(TaskId, Handoff)>, jobs_core::error::Result<u64>) {
    let (batch, now) = (Handoff::new_batch(), DateTime::now());
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
    let handoffs = ids
        .iter()
        .map(|id| (id.clone(), Handoff::in_batch(id, &batch, now, true)))
        .collect();
    let moved = store
        .requeue_many(
            &user("alice"),
            selection,
            &ids,
            &batch,
            (now, Resume::FailedStep),
        )
        .await;
    (handoffs, moved)
}

/// `requeue_many` over a mix moves exactly the retryable tasks in the selection, each with its
/// own hand-off of the batch, in ONE command; `requeued_with` names exactly those (ONE command); `restore_many` (ONE
/// command) puts back exactly as they were the ones given, except one claimed meanwhile.
#[tokio::test]
async fn requeue_many_then_restore_many() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let failed = || task().status(Failed).progress(50);
    let candidates = [
        candidate("retryable", failed(), true),
        candidate(
            "retryable: retried once, its automatic retries used up",
            failed().retry_count(1).auto_retry(policy(2), 2),
            true,
        ),
        candidate(
            "retryable: stored before hand-offs were recorded",
            failed().without_handoff(),
            true,
        ),
        candidate(
            "retryable: with a full timeline",
            failed().events_len(50),
            true,
        ),
        Candidate {
            claimed_before_undo: true,
            ..candidate("retryable, then claimed before the undo", failed(), true)
        },
        candidate("not failed: completed", task().status(Completed), false),
        candidate("not failed: queued", task(), false),
        candidate("not failed: scheduled", scheduled_in_ms(60_000), false),
        candidate(
            "out of retries",
            failed().retry_count(3).max_retries(3),
            false,
        ),
        candidate("another user's", failed().owner("mallory"), false),
        candidate(
            "outside the selection: another type",
            failed().kind("webhook", mongodb::bson::doc! {}),
            false,
        ),
        candidate(
            "stored by an earlier version, without retriesLeft (the caller fills it in first)",
            failed().stored_retries_left(None),
            false,
        ),
    ];
    let mut seeded = Vec::new();
    for candidate in &candidates {
        let task = candidate.seed.insert(&store).await;
        assert_legal(&task);
        seeded.push(task);
    }
    let demo = BulkFilter {
        kind: Some("demo".into()),
        ..BulkFilter::default()
    };
    let ((handoffs, requeued), commands) =
        count_commands(requeue_batch(&store, &demo, &seeded)).await;
    let movers = candidates.iter().filter(|c| c.moves).count();
    assert_eq!(requeued.unwrap(), movers as u64, "how many moved");
    assert_eq!(
        commands, 2,
        "requeue_many is ONE command, then the note for groups"
    );
    let now = handoffs[0].1.at;
    for ((candidate, seed), (_, handoff)) in candidates.iter().zip(&seeded).zip(&handoffs) {
        let name = candidate.name;
        let stored = store.find(&seed.task_id).await.unwrap().unwrap();
        assert_legal(&stored);
        if !candidate.moves {
            assert_eq!(&stored, seed, "{name}: not moved, unchanged");
            continue;
        }
        assert_eq!(
            (
                stored.status,
                stored.progress,
                stored.last_error.as_deref(),
                stored.retry_count,
                stored.auto_retries,
                stored.next_attempt_at,
                stored.finished_at,
                stored.result.as_ref(),
            ),
            (Queued, 0, None, seed.retry_count + 1, 0, None, None, None),
            "{name}: re-queued as requeue_for_retry does"
        );
        assert_eq!(stored.handoff.as_ref(), Some(handoff), "{name}: its own");
        assert_eq!(
            (
                stored.attempts,
                &stored.error_history,
                &stored.error_group,
                stored.updated_at
            ),
            (seed.attempts, &seed.error_history, &seed.error_group, now),
            "{name}: attempts, history and cause kept; updatedAt = the hand-off's"
        );
        assert_events_appended(name, seed, &stored, &[(E::Retried, "bulk:alice")]);
    }

    let (moved, commands) = count_commands(store.requeued_with(&handoffs)).await;
    assert_eq!(commands, 1, "requeued_with is ONE command");
    let read_back = moved.unwrap();
    let mut moved: Vec<String> = read_back.moved.iter().map(|id| id.to_string()).collect();
    moved.sort();
    let mut movers: Vec<String> = candidates
        .iter()
        .zip(&seeded)
        .filter(|(c, _)| c.moves)
        .map(|(_, t)| t.task_id.to_string())
        .collect();
    movers.sort();
    assert_eq!(moved, movers, "requeued_with names exactly the moved tasks");

    // Every hand-off failed; one task was claimed before the undo (the hand-off arrived
    // after all).
    for (candidate, seed) in candidates.iter().zip(&seeded) {
        if candidate.claimed_before_undo {
            store
                .claim(&seed.task_id, LEASE, "qstash", DateTime::now())
                .await
                .unwrap()
                .expect("claimed");
        }
    }
    let restores: Vec<(TaskId, Handoff)> = candidates
        .iter()
        .zip(&handoffs)
        .filter(|(c, _)| c.moves)
        .map(|(_, sent)| sent.clone())
        .collect();
    let (restored, commands) = count_commands(store.restore_many(&alice, &restores)).await;
    restored.unwrap();
    assert_eq!(
        commands, 2,
        "restore_many is ONE command, then the note for groups"
    );
    for ((candidate, seed), (_, handoff)) in candidates.iter().zip(&seeded).zip(&handoffs) {
        let name = candidate.name;
        let stored = store.find(&seed.task_id).await.unwrap().unwrap();
        assert_legal(&stored);
        if !candidate.moves {
            assert_eq!(&stored, seed, "{name}: not moved, unchanged");
        } else if candidate.claimed_before_undo {
            assert_eq!(
                (stored.status, stored.retry_count, stored.handoff.as_ref()),
                (Processing, seed.retry_count + 1, Some(handoff)),
                "{name}: left alone, running"
            );
            assert_events_appended(
                name,
                seed,
                &stored,
                &[(E::Retried, "bulk:alice"), (E::Claimed, "qstash")],
            );
        } else {
            // Failed again with the re-queue error and its retry given back (`$inc`); the
            // rest as the re-queue left it (progress 0, a fresh automatic budget, the unsent
            // hand-off), a new finishedAt and updatedAt, and the two events.
            let expected = Task {
                last_error: Some(REQUEUE_FAILED_MESSAGE.to_owned()),
                progress: 0,
                auto_retries: 0,
                // The retry given back still counts as started.
                retries_total: seed.retries_total.map(|n| n + 1),
                handoff: Some(handoff.clone()),
                finished_at: stored.finished_at,
                updated_at: stored.updated_at,
                events: stored.events.clone(),
                ..seed.clone()
            };
            assert_eq!(stored, expected, "{name}: restored");
            assert!(stored.finished_at >= Some(now), "{name}: failed again now");
            assert!(stored.updated_at >= now, "{name}: updatedAt moves on");
            assert_events_appended(
                name,
                seed,
                &stored,
                &[(E::Retried, "bulk:alice"), (E::RetryUndone, "bulk:alice")],
            );
        }
    }
}

/// Ten single retries and one bulk retry of the same ten tasks, all at once: each task is
/// re-queued exactly once, by whoever won it. Five rounds, for different interleavings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_and_bulk_retries_move_each_task_once() {
    let store = Arc::new(testing::fresh_store());
    let mut bulk_wins = Vec::new();
    for _ in 0..5 {
        bulk_wins.push(race_single_and_bulk_retries(&store).await);
    }
    eprintln!("race: of 10 tasks per round, the bulk retry won {bulk_wins:?}");
}

/// One round of the race; returns how many tasks the bulk retry won.
async fn race_single_and_bulk_retries(store: &Arc<Store>) -> usize {
    let mut seeded = Vec::new();
    for _ in 0..10 {
        seeded.push(task().status(Failed).insert(store).await);
    }
    let (batch, now) = (Handoff::new_batch(), DateTime::now());
    let ids: Vec<TaskId> = seeded.iter().map(|t| t.task_id.clone()).collect();
    let bulk: Vec<(TaskId, Handoff)> = ids
        .iter()
        .map(|id| (id.clone(), Handoff::in_batch(id, &batch, now, true)))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(seeded.len() + 1));
    let singles: Vec<_> = seeded
        .iter()
        .map(|t| {
            let (store, start, id) = (store.clone(), start.clone(), t.task_id.clone());
            tokio::spawn(async move {
                let handoff = Handoff::new(&id, DateTime::now(), true);
                start.wait().await;
                let won =
                    jobs_core::testing::requeue_as_read(&store, &id, &user("alice"), &handoff)
                        .await;
                (handoff, won.unwrap().is_some())
            })
        })
        .collect();
    let many = {
        let (store, start) = (store.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            let (all, alice) = (BulkFilter::default(), user("alice"));
            let requeued =
                store.requeue_many(&alice, &all, &ids, &batch, (now, Resume::FailedStep));
            requeued.await.unwrap();
        })
    };
    let mut single_results = Vec::new();
    for single in singles {
        single_results.push(single.await.unwrap());
    }
    many.await.unwrap();

    let by_bulk = store.requeued_with(&bulk).await.unwrap();
    let mut bulk_wins = 0;
    for ((seed, (single_handoff, single_won)), (_, bulk_handoff)) in
        seeded.iter().zip(&single_results).zip(&bulk)
    {
        let stored = store.find(&seed.task_id).await.unwrap().unwrap();
        assert_legal(&stored);
        let bulk_won = by_bulk.moved.contains(&seed.task_id);
        assert!(
            bulk_won != *single_won,
            "{}: exactly one retry moved it (bulk {bulk_won}, single {single_won})",
            seed.task_id
        );
        assert_eq!(
            (stored.status, stored.retry_count),
            (Queued, 1),
            "moved exactly once"
        );
        let (winner, by) = match bulk_won {
            true => (bulk_handoff, "bulk:alice"),
            false => (single_handoff, "user:alice"),
        };
        assert_eq!(
            stored.handoff.as_ref(),
            Some(winner),
            "the winner's hand-off"
        );
        assert_events_appended("race", seed, &stored, &[(E::Retried, by)]);
        bulk_wins += usize::from(bulk_won);
    }
    bulk_wins
}

/// A bulk retry reads its candidates before it re-queues them; a single retry, a run and a
/// failure can happen in between. Undoing the bulk retry must give back ITS retry only
/// (`$inc`), not write back the count it read (which would give back the other retry too).
#[tokio::test]
async fn restore_many_gives_back_one_retry_whatever_happened_since_the_read() {
    let store = testing::fresh_store();
    let alice = user("alice");
    let seed = task().status(Failed).retry_count(1).insert(&store).await;
    let id = &seed.task_id;
    // Between the bulk retry's read and its update: a single retry, claimed, failed again.
    let single = Handoff::new(id, DateTime::now(), true);
    jobs_core::testing::requeue_as_read(&store, id, &alice, &single)
        .await
        .unwrap()
        .unwrap();
    run_and_fail(&store, id, "self").await;
    // The bulk retry re-queues it (retryCount 3), its hand-off fails, it is undone.
    let read = store.find(id).await.unwrap().unwrap();
    let (bulk, requeued) = requeue_batch(&store, &BulkFilter::default(), &[read]).await;
    assert_eq!(requeued.unwrap(), 1);
    assert_eq!(store.find(id).await.unwrap().unwrap().retry_count, 3);
    store.restore_many(&alice, &bulk).await.unwrap();
    let stored = store.find(id).await.unwrap().unwrap();
    assert_legal(&stored);
    assert_eq!(
        (stored.status, stored.retry_count),
        (Failed, 2),
        "the single retry stays counted"
    );
}

/// A bulk re-queue writes a whole new hand-off: nothing of the old one (`redispatched`,
/// `resend`) survives, so the sweep neither fails the just-retried task as never picked up
/// nor skips re-sending it. (An update pipeline's `$set` of an object merges it into the
/// stored one on MongoDB and secantusd-rs.)
#[tokio::test]
async fn requeue_many_replaces_the_whole_handoff() {
    let store = testing::fresh_store();
    let seed = task()
        .status(Failed)
        .redispatched_secs_ago(600)
        .insert(&store)
        .await;
    assert!(seed.handoff.as_ref().unwrap().redispatched.is_some());
    let (handoffs, moved) =
        requeue_batch(&store, &BulkFilter::default(), std::slice::from_ref(&seed)).await;
    assert_eq!(moved.unwrap(), 1);
    let stored = store.find(&seed.task_id).await.unwrap().unwrap();
    assert_eq!(
        stored.handoff.as_ref(),
        Some(&handoffs[0].1),
        "the batch's hand-off only"
    );
    let lost = store.never_picked_up(DateTime::now(), 100).await.unwrap();
    assert!(lost.iter().all(|t| t.task_id != seed.task_id));
}

/// Reading back a page of 1,000 is ONE command: the whole answer in the first batch.
#[tokio::test]
async fn reading_back_a_large_batch_is_one_command() {
    let store = testing::fresh_store();
    let mut seeded = Vec::new();
    for _ in 0..150 {
        seeded.push(task().status(Failed).insert(&store).await);
    }
    let (handoffs, moved) = requeue_batch(&store, &BulkFilter::default(), &seeded).await;
    assert_eq!(moved.unwrap(), 150);
    let (moved, commands) = count_commands(store.requeued_with(&handoffs)).await;
    assert_eq!(
        (moved.unwrap().moved.len(), commands),
        (150, 1),
        "requeued_with"
    );
    let (carrying, commands) = count_commands(store.carrying_tasks(&handoffs)).await;
    assert_eq!(
        (carrying.unwrap().len(), commands),
        (150, 1),
        "carrying_tasks"
    );
}

/// During a rolling deploy the previous version's retry (`$inc retryCount` alone, its `$expr`
/// guard) can run, with its run and failure, between a bulk retry's read and its re-queue,
/// leaving `retriesLeft` one too high: the re-queue matches the task on it, but its update
/// checks the counts and leaves the task exactly as it was (not counted as moved), and the
/// read-back names it as out of retries.
#[tokio::test]
async fn a_task_out_of_retries_by_its_counts_is_left_as_it_was() {
    let store = testing::fresh_store();
    let read = task()
        .status(Failed)
        .retry_count(2)
        .max_retries(3)
        .insert(&store)
        .await;
    let id = &read.task_id;
    let old = Handoff::new(id, DateTime::now(), true);
    let raw = testing::raw_tasks(&store).await;
    let previous_version = raw
        .update_one(
            mongodb::bson::doc! { "taskId": id.as_str(), "userId": "alice", "status": "failed",
            "$expr": { "$lt": ["$retryCount", "$maxRetries"] } },
            mongodb::bson::doc! { "$set": { "status": "queued", "handoff": old.to_bson(),
            "lastError": null, "finishedAt": null }, "$inc": { "retryCount": 1 } },
        )
        .await
        .unwrap();
    assert_eq!(previous_version.modified_count, 1);
    run_and_fail(&store, id, "qstash").await;
    let before = store.find(id).await.unwrap().unwrap();
    assert_eq!(
        (before.retry_count, before.stored_retries_left),
        (3, Some(1)),
        "stale"
    );

    let (handoffs, moved) =
        requeue_batch(&store, &BulkFilter::default(), std::slice::from_ref(&read)).await;
    assert_eq!(moved.unwrap(), 0, "matched on retriesLeft 1, not moved");
    assert_eq!(
        store.find(id).await.unwrap().unwrap(),
        before,
        "left exactly as it was"
    );
    let read_back = store.requeued_with(&handoffs).await.unwrap();
    assert_eq!(read_back.moved, Vec::<TaskId>::new());
    assert_eq!(read_back.out_of_retries, vec![id.clone()]);
}
