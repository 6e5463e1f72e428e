//! Production dispatch through QStash, against the emulator: the decision table through the
//! running binary, the retry story delivered by QStash, and what redelivered or duplicated
//! messages do. Signatures are in `qstash_signatures`, failed publishes in `qstash_failures`.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::qstash_emulator::{DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN, QStash};
use crate::support::{AUDIENCE, Service, user_token};

const SECRET: &str = "test-auth-secret";

fn env_refs<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

struct Row {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    transport: &'static str,
    destination: Result<String, &'static str>,
    warns: bool,
}

/// Every row of docs/spec.md §7, through the running binary: the transport `health` reports,
/// and for QStash the exact destination a `create` publishes to.
#[tokio::test]
async fn decision_table_through_the_binary() {
    let qstash = QStash::start().await;
    let q = |extra: &[(&'static str, &str)]| {
        // What a deployment needs to run the tasks it queues (signing keys, cron secret):
        // the rows differ in where hand-offs go, not in these.
        let mut env = vec![
            ("QSTASH_TOKEN", DEV_TOKEN.to_owned()),
            ("QSTASH_URL", qstash.url.clone()),
            (
                "QSTASH_CURRENT_SIGNING_KEY",
                DEV_CURRENT_SIGNING_KEY.to_owned(),
            ),
            ("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT_SIGNING_KEY.to_owned()),
            ("CRON_SECRET", "cron".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let plain = |extra: &[(&'static str, &str)]| {
        extra
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect::<Vec<_>>()
    };
    let process = "/api/jobs?action=process";
    let rows = vec![
        Row {
            name: "development, nothing set",
            env: vec![],
            transport: "self",
            destination: Ok(format!("http://localhost:PORT{process}")),
            warns: false,
        },
        Row {
            name: "development, token without USE_QSTASH_IN_DEV",
            env: q(&[("QSTASH_BASE_URL", "https://dev.ngrok.app")]),
            transport: "self",
            destination: Ok(format!("http://localhost:PORT{process}")),
            warns: false,
        },
        Row {
            name: "development, VERCEL_URL outside vercel dev is not this machine",
            env: plain(&[("VERCEL_URL", "app-git-dev.vercel.app")]),
            transport: "self",
            destination: Ok(format!("http://localhost:PORT{process}")),
            warns: false,
        },
        Row {
            name: "vercel dev: plain http to VERCEL_URL",
            env: plain(&[
                ("VERCEL_DEV", "1"),
                ("VERCEL_ENV", "development"),
                ("VERCEL_URL", "localhost:4711"),
            ]),
            transport: "self",
            destination: Ok(format!("http://localhost:4711{process}")),
            warns: false,
        },
        Row {
            name: "development, JOBS_PUBLIC_URL",
            env: plain(&[
                ("JOBS_PUBLIC_URL", "https://jobs.example.com"),
                ("VERCEL_URL", "x.vercel.app"),
            ]),
            transport: "self",
            destination: Ok(format!("https://jobs.example.com{process}")),
            warns: false,
        },
        Row {
            name: "development, QStash via ngrok",
            env: q(&[
                ("USE_QSTASH_IN_DEV", "true"),
                ("QSTASH_BASE_URL", "https://dev.ngrok.app"),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://dev.ngrok.app{process}")),
            warns: false,
        },
        Row {
            name: "development, QStash without QSTASH_BASE_URL",
            env: q(&[("USE_QSTASH_IN_DEV", "true")]),
            transport: "unconfigured",
            destination: Err(
                "QStash is enabled in development, but QSTASH_BASE_URL (your ngrok URL) is not set.",
            ),
            warns: false,
        },
        Row {
            name: "development, QStash, JOBS_PUBLIC_URL wins",
            env: q(&[
                ("USE_QSTASH_IN_DEV", "true"),
                ("QSTASH_BASE_URL", "https://dev.ngrok.app"),
                ("JOBS_PUBLIC_URL", "https://jobs.example.com"),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://jobs.example.com{process}")),
            warns: false,
        },
        Row {
            name: "production, QStash to the production domain before VERCEL_URL",
            env: q(&[
                ("VERCEL_ENV", "production"),
                ("VERCEL_URL", "app-abc123.vercel.app"),
                ("VERCEL_PROJECT_PRODUCTION_URL", "app.example.com"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://app.example.com{process}")),
            warns: false,
        },
        Row {
            name: "preview, QStash to this deployment's VERCEL_URL",
            env: q(&[
                ("VERCEL_ENV", "preview"),
                ("VERCEL_URL", "app-git-x.vercel.app"),
                ("VERCEL_PROJECT_PRODUCTION_URL", "app.example.com"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://app-git-x.vercel.app{process}")),
            warns: false,
        },
        Row {
            name: "production, QStash without any URL",
            env: q(&[
                ("NODE_ENV", "production"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "unconfigured",
            destination: Err("QStash needs a public URL for this deployment: set JOBS_PUBLIC_URL."),
            warns: false,
        },
        Row {
            name: "production, QStash to VERCEL_URL",
            env: q(&[
                ("VERCEL_ENV", "production"),
                ("VERCEL_URL", "app.vercel.app"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://app.vercel.app{process}")),
            warns: false,
        },
        Row {
            name: "production (NODE_ENV), QStash to VERCEL_URL",
            env: q(&[
                ("NODE_ENV", "production"),
                ("VERCEL_URL", "app.vercel.app"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://app.vercel.app{process}")),
            warns: false,
        },
        Row {
            name: "production, JOBS_PUBLIC_URL wins over VERCEL_URL",
            env: q(&[
                ("VERCEL_ENV", "production"),
                ("VERCEL_URL", "app.vercel.app"),
                ("JOBS_PUBLIC_URL", "https://app.example.com"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "qstash",
            destination: Ok(format!("https://app.example.com{process}")),
            warns: false,
        },
        Row {
            name: "production without QSTASH_TOKEN falls back to self-invocation",
            env: plain(&[
                ("VERCEL_ENV", "production"),
                ("VERCEL_URL", "app.vercel.app"),
                ("JOBS_AUTH_SECRET", SECRET),
                ("JOBS_AUTH_AUDIENCE", AUDIENCE),
            ]),
            transport: "self",
            destination: Ok(format!("https://app.vercel.app{process}")),
            warns: true,
        },
    ];

    for row in rows {
        let jobs = Service::start_with(&env_refs(&row.env)).await;
        let health = jobs.get("action=health").await.body;
        assert_eq!(health["dispatch"], row.transport, "{}: {health}", row.name);
        let expected = row
            .destination
            .clone()
            .map(|d| d.replace("PORT", jobs.base.rsplit(':').next().unwrap()));
        match &expected {
            Ok(destination) => {
                assert_eq!(health["destination"], destination.as_str(), "{}", row.name)
            }
            Err(message) => assert_eq!(health["dispatchError"], *message, "{}", row.name),
        }
        assert_eq!(
            jobs.logs()
                .contains("QSTASH_TOKEN is not set on a deployment"),
            row.warns,
            "{}: warning",
            row.name
        );

        if row.transport == "self" {
            continue;
        }
        let published_before = qstash.published().len();
        let create = jobs
            .send(
                jobs.request(reqwest::Method::POST, "action=create")
                    .bearer_auth(user_token(SECRET, "alice", 300))
                    .json(&json!({ "type": "demo", "userId": "alice" })),
            )
            .await;
        match &expected {
            Ok(destination) => {
                assert_eq!(create.status, 201, "{}: {}", row.name, create.body);
                let published = qstash.published();
                let last = published.last().unwrap();
                assert_eq!(published.len(), published_before + 1, "{}", row.name);
                assert_eq!(&last.destination, destination, "{}", row.name);
                let stored = jobs.task(&create.task_id()).await;
                let dedup_id = stored
                    .get_document("handoff")
                    .unwrap()
                    .get_str("dedupId")
                    .unwrap();
                assert_eq!(
                    last.body,
                    json!({ "taskId": create.task_id(), "handoffId": dedup_id }).to_string(),
                    "{}: the body names the hand-off recorded on the task",
                    row.name
                );
                assert_eq!(
                    last.headers["upstash-deduplication-id"], dedup_id,
                    "{}",
                    row.name
                );
                assert_eq!(
                    last.headers["upstash-failure-callback"],
                    destination.replace("action=process", "action=deliveryFailed"),
                    "{}",
                    row.name
                );
                assert_eq!(last.headers["upstash-method"], "POST", "{}", row.name);
                assert_eq!(last.headers["upstash-retries"], "3", "{}", row.name);
            }
            Err(message) => {
                assert_eq!(
                    (create.status, &create.body),
                    (500, &json!({ "error": message, "code": "MISCONFIGURED" })),
                    "{}",
                    row.name
                );
                assert_eq!(qstash.published().len(), published_before, "{}", row.name);
                assert!(
                    jobs.snapshot().await.is_empty(),
                    "{}: nothing is stored, so nothing is left queued",
                    row.name
                );
            }
        }
    }
}

#[tokio::test]
async fn retry_story_delivered_by_qstash() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let id = jobs.failed_task("alice", 1, 3).await;
    assert_eq!(
        jobs.task(&id).await.get_str("lastError").unwrap(),
        "Simulated failure on attempt 1"
    );

    qstash.behave(|b| b.delivery_delay = Duration::from_millis(500));
    let reply = jobs.retry(&id, "alice").await;
    assert_eq!(reply.body, json!({ "success": true, "taskId": id }));
    let queued = jobs.task(&id).await;
    assert_eq!(queued.get_str("status").unwrap(), "queued");
    assert_eq!(queued.get_i32("progress").unwrap(), 0);
    assert!(queued.get("lastError").unwrap().as_null().is_some());
    assert_eq!(queued.get_i32("retryCount").unwrap(), 1);

    let done = jobs.wait_for_status(&id, "completed").await;
    assert_eq!(
        (
            done.get_i32("progress").unwrap(),
            done.get_i32("attempts").unwrap()
        ),
        (100, 2)
    );

    let published = qstash.published();
    let own_url = format!("{}/api/jobs?action=process", jobs.base);
    assert!(published.iter().all(|p| p.destination == own_url));
    let dedup: Vec<&str> = published
        .iter()
        .map(|p| p.headers["upstash-deduplication-id"].as_str())
        .collect();
    assert_eq!(dedup.len(), 2);
    assert!(
        dedup.iter().all(|d| d.starts_with(&format!("{id}-"))) && dedup[0] != dedup[1],
        "one deduplication id per hand-off: {dedup:?}"
    );
    let stored = jobs.task(&id).await;
    assert_eq!(
        stored
            .get_document("handoff")
            .unwrap()
            .get_str("dedupId")
            .unwrap(),
        dedup[1],
        "the retry's hand-off is recorded on the task"
    );
    let delivered = qstash.delivered();
    assert!(
        delivered
            .iter()
            .all(|d| matches!(d.status, Some(200 | 202))),
        "{delivered:?}"
    );
}

#[tokio::test]
async fn a_message_delivered_three_times_runs_once() {
    let qstash = QStash::start().await;
    qstash.behave(|b| b.copies = 3);
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 3, "stepMs": 20 }))
        .await;
    let done = jobs.wait_for_status(&id, "completed").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let statuses: Vec<Option<u16>> = qstash.delivered().iter().map(|d| d.status).collect();
    assert_eq!(statuses.len(), 3);
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(202)).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(200)).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(done.get_i32("attempts").unwrap(), 1);
    assert_eq!(jobs.task(&id).await, done);
}

#[tokio::test]
async fn concurrent_retries_publish_once() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let id = jobs.failed_task("alice", 1, 3).await;
    let body = json!({ "taskId": id, "userId": "alice" });
    let replies = join_all((0..20).map(|_| jobs.post("retry", body.clone()))).await;
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1);
    jobs.wait_for_status(&id, "completed").await;
    assert_eq!(
        qstash.published().len(),
        2,
        "one publish at create, one for the winning retry"
    );
}

#[tokio::test]
async fn refused_deliveries_are_redelivered_then_given_up() {
    let qstash = QStash::start().await;
    qstash.behave(|b| b.signing_key = "sig_wrong_key".into());
    let jobs = Service::behind_qstash(&qstash, &[("JOBS_QSTASH_RETRIES", "2")]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let delivered = qstash.delivered();
    let retried: Vec<u32> = delivered.iter().map(|d| d.retried).collect();
    assert_eq!(
        retried,
        [0, 1, 2],
        "Upstash-Retries 2: the first try and two redeliveries"
    );
    assert!(
        delivered
            .iter()
            .all(|d| d.status == Some(401) && d.message_id == delivered[0].message_id)
    );
    assert!(
        delivered
            .iter()
            .all(|d| d.destination == format!("{}/api/jobs?action=process", jobs.base))
    );
    let (status, _, attempts) = jobs.state(&id).await;
    assert_eq!((status.as_str(), attempts), ("queued", 0), "never claimed");
}

#[tokio::test]
async fn the_emulator_deduplicates_a_resent_publish() {
    let qstash = QStash::start().await;
    let jobs = Service::behind_qstash(&qstash, &[]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&id, "completed").await;

    // The same publish the service sent, sent again: QStash answers with the same message
    // and delivers nothing new.
    let first = &qstash.published()[0];
    let resent = reqwest::Client::new()
        .post(format!("{}/v2/publish/{}", qstash.url, first.destination))
        .bearer_auth(DEV_TOKEN)
        .header(
            "upstash-deduplication-id",
            &first.headers["upstash-deduplication-id"],
        )
        .header("content-type", "application/json")
        .body(first.body.clone())
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = resent.json().await.unwrap();
    assert_eq!(
        answer,
        json!({ "messageId": first.message_id, "deduplicated": true })
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(qstash.delivered().len(), 1);
    assert!(qstash.published()[1].deduplicated);
}
