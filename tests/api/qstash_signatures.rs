//! Who may call `process` behind QStash: signed deliveries only (forged, expired, wrong-URL,
//! body-tampered and garbage signatures are refused; the next signing key is accepted), or
//! the internal secret that self-invocation carries.

use std::time::Duration;

use serde_json::json;

use crate::qstash_emulator::{
    DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, QStash, sign, sign_with,
};
use crate::support::Service;

#[tokio::test]
async fn deliveries_must_be_signed_or_carry_the_internal_secret() {
    let qstash = QStash::start().await;
    // Held in the queue: nothing is delivered while the test forges its own deliveries.
    qstash.behave(|b| b.delivery_delay = Duration::from_secs(3600));
    let jobs =
        Service::behind_qstash(&qstash, &[("JOBS_INTERNAL_SECRET", "internal-secret")]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    let url = format!("{}/api/jobs?action=process", jobs.base);
    let body = json!({ "taskId": id }).to_string();
    let tampered = json!({ "taskId": id, "isSelfInvoke": true }).to_string();

    // (case, headers sent, body sent)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("missing signature", vec![], &body),
        (
            "forged: signed with another key",
            vec![(
                "upstash-signature",
                sign("sig_not_the_key", &url, body.as_bytes()),
            )],
            &body,
        ),
        (
            "expired",
            vec![(
                "upstash-signature",
                sign_with(DEV_CURRENT_SIGNING_KEY, &url, body.as_bytes(), 3600),
            )],
            &body,
        ),
        (
            "wrong URL",
            vec![(
                "upstash-signature",
                sign(
                    DEV_CURRENT_SIGNING_KEY,
                    "https://evil.example.com/api/jobs?action=process",
                    body.as_bytes(),
                ),
            )],
            &body,
        ),
        (
            "body tampered",
            vec![(
                "upstash-signature",
                sign(DEV_CURRENT_SIGNING_KEY, &url, body.as_bytes()),
            )],
            &tampered,
        ),
        (
            "not a JWT",
            vec![("upstash-signature", "garbage".to_owned())],
            &body,
        ),
        (
            "wrong internal secret",
            vec![("x-jobs-internal-secret", "guess".to_owned())],
            &body,
        ),
    ];
    for (name, headers, payload) in cases {
        let before = jobs.snapshot().await;
        let mut request = jobs
            .request(reqwest::Method::POST, "action=process")
            .header("content-type", "application/json")
            .body(payload.to_owned());
        for (header, value) in headers {
            request = request.header(header, value);
        }
        let reply = jobs.send(request).await;
        assert_eq!(
            (reply.status, reply.body["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{name}: {}",
            reply.body
        );
        assert_eq!(jobs.snapshot().await, before, "{name}: state changed");
    }
    assert_eq!(
        jobs.task(&id).await.get_i32("attempts").unwrap(),
        0,
        "the processor never ran"
    );

    // Signing-key rotation: a delivery signed with the next key is accepted.
    let rotated = jobs
        .send(
            jobs.request(reqwest::Method::POST, "action=process")
                .header("content-type", "application/json")
                .header(
                    "upstash-signature",
                    sign(DEV_NEXT_SIGNING_KEY, &url, body.as_bytes()),
                )
                .body(body.clone()),
        )
        .await;
    assert_eq!(rotated.status, 202, "{}", rotated.body);
    jobs.wait_for_status(&id, "completed").await;
}

#[tokio::test]
async fn self_invocation_carries_the_internal_secret() {
    let jobs = Service::start_with(&[("JOBS_INTERNAL_SECRET", "internal-secret")]).await;
    let id = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&id, "completed").await;
    let open = jobs.post("process", json!({ "taskId": id })).await;
    assert_eq!(open.status, 401, "without the secret, process is closed");
}
