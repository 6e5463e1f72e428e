//! User authentication with HS256 bearer tokens (docs/spec.md §6).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{AUDIENCE, Service, user_token};

const SECRET: &str = "a-long-random-auth-secret";

async fn as_user(
    jobs: &Service,
    token: Option<&str>,
    method: Method,
    query: &str,
    body: Option<Value>,
) -> crate::support::Reply {
    let mut request = jobs.request(method, query);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    jobs.send(request).await
}

fn alg_none_token(user: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims =
        URL_SAFE_NO_PAD.encode(json!({ "sub": user, "exp": 4_102_444_800u64 }).to_string());
    format!("{header}.{claims}.")
}

#[tokio::test]
async fn bad_tokens_are_401_and_change_nothing() {
    let jobs = Service::start_with(&[("JOBS_AUTH_SECRET", SECRET)]).await;
    let alice = user_token(SECRET, "alice", 300);
    let created = as_user(
        &jobs,
        Some(&alice),
        Method::POST,
        "action=create",
        Some(json!({ "type": "demo", "payload": { "steps": 1, "stepMs": 0, "failAttempts": 1 } })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.task_id();
    jobs.wait_for_status(&id, "failed").await;

    let tokens: [(&str, Option<String>); 6] = [
        ("missing", None),
        ("malformed", Some("not.a.jwt".into())),
        ("expired", Some(user_token(SECRET, "alice", -120))),
        (
            "wrong secret",
            Some(user_token("another-secret", "alice", 300)),
        ),
        ("alg none", Some(alg_none_token("alice"))),
        ("empty subject", Some(user_token(SECRET, "", 300))),
    ];
    for (name, token) in tokens {
        let before = jobs.snapshot().await;
        let requests = [
            (Method::GET, format!("action=get&taskId={id}"), None),
            (Method::GET, "action=list".to_owned(), None),
            (
                Method::POST,
                "action=retry".to_owned(),
                Some(json!({ "taskId": id, "userId": "alice" })),
            ),
            (
                Method::POST,
                "action=cancel".to_owned(),
                Some(json!({ "taskId": id })),
            ),
            (
                Method::POST,
                "action=create".to_owned(),
                Some(json!({ "type": "demo" })),
            ),
        ];
        for (method, query, body) in requests {
            let reply = as_user(&jobs, token.as_deref(), method, &query, body).await;
            assert_eq!(
                (reply.status, reply.body["code"].as_str()),
                (401, Some("UNAUTHENTICATED")),
                "{name} token, {query}"
            );
        }
        assert_eq!(
            jobs.snapshot().await,
            before,
            "{name} token changed something"
        );
    }
}

#[tokio::test]
async fn a_valid_token_reaches_only_its_own_tasks() {
    let jobs = Service::start_with(&[("JOBS_AUTH_SECRET", SECRET)]).await;
    let (alice, bob) = (
        user_token(SECRET, "alice", 300),
        user_token(SECRET, "bob", 300),
    );
    let create = |payload: Value| {
        as_user(
            &jobs,
            Some(&bob),
            Method::POST,
            "action=create",
            Some(json!({ "type": "demo", "payload": payload })),
        )
    };
    let failed = create(json!({ "steps": 1, "stepMs": 0, "failAttempts": 1 }))
        .await
        .task_id();
    let running = create(json!({ "steps": 100, "stepMs": 100 }))
        .await
        .task_id();
    jobs.wait_for_status(&failed, "failed").await;
    let before = jobs.snapshot().await;

    let get = as_user(
        &jobs,
        Some(&alice),
        Method::GET,
        &format!("action=get&taskId={failed}"),
        None,
    )
    .await;
    assert_eq!(get.status, 404);
    let list = as_user(&jobs, Some(&alice), Method::GET, "action=list", None).await;
    assert_eq!((list.status, list.body["tasks"].clone()), (200, json!([])));
    let list_as_bob = as_user(
        &jobs,
        Some(&alice),
        Method::GET,
        "action=list&userId=bob",
        None,
    )
    .await;
    assert_eq!(
        (list_as_bob.status, list_as_bob.body["code"].as_str()),
        (403, Some("USER_MISMATCH"))
    );
    let retry = as_user(
        &jobs,
        Some(&alice),
        Method::POST,
        "action=retry",
        Some(json!({ "taskId": failed })),
    )
    .await;
    assert_eq!(
        (retry.status, retry.body["code"].as_str()),
        (403, Some("NOT_OWNER"))
    );
    let retry_claiming_bob = as_user(
        &jobs,
        Some(&alice),
        Method::POST,
        "action=retry",
        Some(json!({ "taskId": failed, "userId": "bob" })),
    )
    .await;
    assert_eq!(
        (
            retry_claiming_bob.status,
            retry_claiming_bob.body["code"].as_str()
        ),
        (403, Some("USER_MISMATCH"))
    );
    let cancel = as_user(
        &jobs,
        Some(&alice),
        Method::POST,
        "action=cancel",
        Some(json!({ "taskId": running })),
    )
    .await;
    assert_eq!(
        (cancel.status, cancel.body["code"].as_str()),
        (403, Some("NOT_OWNER"))
    );
    let failed_doc = |docs: &[mongodb::bson::Document]| {
        docs.iter()
            .find(|d| d.get_str("taskId").unwrap() == failed)
            .cloned()
    };
    assert_eq!(failed_doc(&jobs.snapshot().await), failed_doc(&before));
    assert_eq!(
        jobs.task(&running).await.get_str("status").unwrap(),
        "processing"
    );

    // The owner, with the user id taken from the token (the plan's body still works too).
    let own = as_user(
        &jobs,
        Some(&bob),
        Method::POST,
        "action=retry",
        Some(json!({ "taskId": failed, "userId": "bob" })),
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let own_cancel = as_user(
        &jobs,
        Some(&bob),
        Method::POST,
        "action=cancel",
        Some(json!({ "taskId": running })),
    )
    .await;
    assert_eq!(own_cancel.status, 200);
}

/// Deployed means production or preview: a preview is on the internet and may share the
/// production database, so neither trusts client-supplied ids or leaves anything open. On
/// Vercel (`VERCEL=1`, or the runtime's `VERCEL_IPC_PATH`) without `VERCEL_ENV` is production.
#[tokio::test]
async fn deployed_without_secrets_refuses_users_and_unsigned_calls() {
    for environment in [
        ("VERCEL_ENV", "production"),
        ("VERCEL_ENV", "preview"),
        ("NODE_ENV", "production"),
        ("VERCEL", "1"),
    ] {
        let jobs = Service::start_with(&[environment]).await;
        for (method, query, body) in [
            (Method::GET, "action=list&userId=alice", None),
            (
                Method::POST,
                "action=create",
                Some(json!({ "type": "demo", "userId": "alice" })),
            ),
            (
                Method::POST,
                "action=retry",
                Some(json!({ "taskId": "t", "userId": "alice" })),
            ),
        ] {
            let reply = as_user(&jobs, None, method, query, body).await;
            assert_eq!(reply.status, 500, "{environment:?} {query}");
            assert_eq!(
                reply.body,
                json!({ "error": "The service is misconfigured: JOBS_AUTH_SECRET is not set", "code": "MISCONFIGURED" })
            );
        }
        let process = jobs.post("process", json!({ "taskId": "t" })).await;
        assert_eq!(
            process.status, 401,
            "{environment:?}: process without a signature"
        );
        let sweep = jobs.get("action=sweep").await;
        assert_eq!(
            (sweep.status, sweep.body["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{environment:?}: sweep without the cron secret"
        );
        let health = jobs.get("action=health").await;
        assert_eq!(health.status, 503, "{environment:?}");
        assert_eq!(health.body["code"], "MISCONFIGURED");
        assert_eq!(
            health.body["missing"],
            json!([
                "JOBS_AUTH_SECRET",
                "CRON_SECRET",
                "JOBS_AUTH_AUDIENCE",
                "JOBS_INTERNAL_SECRET"
            ])
        );
        assert!(
            health.header("x-jobs-db-commands").is_none(),
            "internals stay in the log when deployed"
        );
        assert!(jobs.snapshot().await.is_empty());
    }
}

/// Deployed, a token is good only with the audience pinned: without `JOBS_AUTH_AUDIENCE`, a
/// valid token is refused naming it (a token minted for another service sharing the secret
/// would do otherwise); with it, a token without that `aud` is 401.
#[tokio::test]
async fn deployed_user_tokens_must_carry_the_configured_audience() {
    let deployed = [("VERCEL_ENV", "preview"), ("JOBS_AUTH_SECRET", SECRET)];
    let token = user_token(SECRET, "alice", 300);
    let jobs = Service::start_with(&deployed).await;
    let reply = as_user(&jobs, Some(&token), Method::GET, "action=list", None).await;
    assert_eq!(
        (reply.status, &reply.body),
        (
            500,
            &json!({ "error": "The service is misconfigured: JOBS_AUTH_AUDIENCE is not set", "code": "MISCONFIGURED" })
        )
    );
    let health = jobs.get("action=health").await;
    assert_eq!(health.status, 503);
    assert!(
        health.body["missing"]
            .as_array()
            .unwrap()
            .contains(&json!("JOBS_AUTH_AUDIENCE")),
        "{}",
        health.body
    );

    let jobs = jobs
        .start_sharing_db(&[deployed[0], deployed[1], ("JOBS_AUTH_AUDIENCE", AUDIENCE)])
        .await;
    let reply = as_user(&jobs, Some(&token), Method::GET, "action=list", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let elsewhere = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "alice", "exp": 4_102_444_800u64, "aud": "billing" }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let reply = as_user(&jobs, Some(&elsewhere), Method::GET, "action=list", None).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn logs_never_carry_tokens_secrets_or_payloads() {
    let marker = "PAYLOAD-MARKER-7d1f";
    let jobs = Service::start_with(&[
        ("JOBS_AUTH_SECRET", SECRET),
        ("JOBS_INTERNAL_SECRET", "INTERNAL-SECRET-3c9a"),
        ("CRON_SECRET", "CRON-SECRET-a8e2"),
    ])
    .await;
    let token = user_token(SECRET, "alice", 300);
    let created = as_user(&jobs, Some(&token), Method::POST, "action=create", Some(json!({ "type": "demo", "payload": { "steps": 1, "stepMs": 0, "failAttempts": 1 }, "brandId": marker }))).await;
    jobs.wait_for_status(&created.task_id(), "failed").await;
    as_user(
        &jobs,
        Some(&token),
        Method::POST,
        "action=retry",
        Some(json!({ "taskId": created.task_id() })),
    )
    .await;
    as_user(
        &jobs,
        Some("forged.token.value"),
        Method::GET,
        "action=list",
        None,
    )
    .await;
    as_user(
        &jobs,
        Some("CRON-SECRET-a8e2"),
        Method::GET,
        "action=sweep",
        None,
    )
    .await;
    jobs.post(
        "create",
        json!({ "type": "demo", "payload": { "steps": marker } }),
    )
    .await;

    let logs = jobs.logs();
    assert!(
        logs.contains("action=\"retry\""),
        "requests are logged:\n{logs}"
    );
    for secret in [
        SECRET,
        token.as_str(),
        "forged.token.value",
        "INTERNAL-SECRET-3c9a",
        "CRON-SECRET-a8e2",
        marker,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the log:\n{logs}"
        );
    }
}
