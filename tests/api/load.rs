//! Load: 200 concurrent clients mixing create, list, get, retry and cancel against one `jobs`
//! process (30 s; `JOBS_LOAD_SECONDS` changes it). No 5xx, and afterwards every created task
//! is stored, in a legal state, and the counts reconcile. Figures are printed, not asserted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mongodb::bson::doc;
use serde_json::json;

use crate::recovery::assert_legal;
use crate::support::Service;

const CLIENTS: usize = 200;
const USERS: usize = 20;

/// A small deterministic generator per client (xorshift), so runs are comparable.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<(String, u16), u64>,
    latencies_ms: Vec<f64>,
    created: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_for_thirty_seconds() {
    let seconds: u64 = std::env::var("JOBS_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let jobs = Arc::new(Service::start().await);
    let known: Arc<Vec<Mutex<Vec<String>>>> =
        Arc::new((0..USERS).map(|_| Mutex::new(Vec::new())).collect());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let clients = (0..CLIENTS).map(|client| {
        let (jobs, known, tally) = (jobs.clone(), known.clone(), tally.clone());
        async move {
            let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1));
            let user_index = client % USERS;
            let user = format!("load-user-{user_index}");
            while Instant::now() < deadline {
                let pick = {
                    let ids = known[user_index].lock().unwrap();
                    (!ids.is_empty()).then(|| ids[dice.roll(ids.len() as u64) as usize].clone())
                };
                let started = Instant::now();
                let (action, reply) = match (dice.roll(10), pick) {
                    (0..=2, _) | (_, None) => {
                        let payload = json!({ "steps": 1 + dice.roll(3), "stepMs": dice.roll(30), "failAttempts": dice.roll(3) });
                        ("create", jobs.post("create", json!({ "type": "demo", "userId": user, "payload": payload })).await)
                    }
                    (3..=4, _) => ("list", jobs.get(&format!("action=list&userId={user}&limit=20")).await),
                    (5..=6, Some(id)) => ("get", jobs.get(&format!("action=get&taskId={id}&userId={user}")).await),
                    (7..=8, Some(id)) => ("retry", jobs.post("retry", json!({ "taskId": id, "userId": user })).await),
                    (_, Some(id)) => ("cancel", jobs.post("cancel", json!({ "taskId": id, "userId": user })).await),
                };
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                if action == "create" && reply.status == 201 {
                    known[user_index].lock().unwrap().push(reply.task_id());
                }
                let mut tally = tally.lock().unwrap();
                *tally.statuses.entry((action.to_owned(), reply.status)).or_default() += 1;
                tally.latencies_ms.push(elapsed);
                if action == "create" && reply.status == 201 {
                    tally.created.push(reply.task_id());
                }
                assert!(reply.status < 500, "{action} answered {}: {}", reply.status, reply.body);
            }
        }
    });
    join_all(clients).await;

    let mut tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    let requests = tally.latencies_ms.len();
    tally.latencies_ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| tally.latencies_ms[((requests as f64 - 1.0) * q) as usize];
    eprintln!(
        "load: {CLIENTS} clients, {seconds} s, {requests} requests, {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
        requests as f64 / seconds as f64,
        quantile(0.5),
        quantile(0.99)
    );
    for ((action, status), n) in &tally.statuses {
        eprintln!("  {action:>6} {status}: {n}");
    }

    // Let the last tasks finish, then reconcile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = jobs.snapshot().await;
    assert_eq!(
        stored.len(),
        tally.created.len(),
        "every stored task was created by a 201, and vice versa"
    );
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for id in &tally.created {
        let task = jobs
            .tasks
            .find_one(doc! { "taskId": id })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("task {id} was lost"));
        assert_legal(&task);
        *by_status
            .entry(task.get_str("status").unwrap().to_owned())
            .or_default() += 1;
    }
    eprintln!("  created {} = {by_status:?}", tally.created.len());
    assert_eq!(by_status.values().sum::<usize>(), tally.created.len());
}
