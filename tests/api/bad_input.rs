//! Bad and hostile input gets a clear 4xx and changes nothing (SPEC section 5): a table of
//! malformed and malicious requests, and random bodies thrown at the decoder.

use reqwest::Method;
use serde_json::json;

use crate::support::Service;

struct Case {
    name: &'static str,
    method: Method,
    query: &'static str,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    query: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        query,
        body: body.into(),
        status,
        code,
    }
}

#[tokio::test]
async fn hostile_requests_are_refused_and_change_nothing() {
    let jobs = Service::start().await;
    let failed = jobs.failed_task("alice", 5, 3).await;
    let retry_with =
        |task_id: serde_json::Value| json!({ "taskId": task_id, "userId": "alice" }).to_string();
    let big = format!(
        r#"{{"type":"demo","userId":"alice","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let long_id = retry_with(json!("t".repeat(257)));
    let post = Method::POST;
    let get = Method::GET;

    let nested = format!(
        r#"{{"type":"demo","userId":"alice","payload":{{"a":{}1{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let huge_payload = format!(
        r#"{{"type":"demo","userId":"alice","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let mut invalid_utf8 = br#"{"taskId":""#.to_vec();
    invalid_utf8.extend([0xff, 0xfe, 0xfd]);
    invalid_utf8.extend(br#"","userId":"alice"}"#);
    let op = || json!({ "$ne": null });
    let (put, patch, delete, options) =
        (Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS);

    let cases = [
        // Malformed bodies
        case(
            "malformed JSON",
            post.clone(),
            "action=retry",
            r#"{"taskId": "#,
            400,
            "INVALID_BODY",
        ),
        case(
            "empty body",
            post.clone(),
            "action=create",
            "",
            400,
            "INVALID_BODY",
        ),
        case(
            "JSON null",
            post.clone(),
            "action=retry",
            "null",
            400,
            "INVALID_BODY",
        ),
        case(
            "JSON string",
            post.clone(),
            "action=retry",
            r#""retry me""#,
            400,
            "INVALID_BODY",
        ),
        case(
            "JSON that is not an object",
            post.clone(),
            "action=retry",
            "[1,2]",
            400,
            "INVALID_BODY",
        ),
        case(
            "trailing garbage",
            post.clone(),
            "action=retry",
            format!(r#"{{"taskId":"{failed}","userId":"alice"}} x"#),
            400,
            "INVALID_BODY",
        ),
        case(
            "invalid UTF-8",
            post.clone(),
            "action=retry",
            invalid_utf8,
            400,
            "INVALID_BODY",
        ),
        case(
            "nested 300 deep",
            post.clone(),
            "action=create",
            nested,
            400,
            "INVALID_BODY",
        ),
        case(
            "duplicate keys",
            post.clone(),
            "action=retry",
            format!(r#"{{"taskId":"{failed}","taskId":"x","userId":"alice"}}"#),
            400,
            "INVALID_BODY",
        ),
        case(
            "unknown field",
            post.clone(),
            "action=retry",
            json!({ "taskId": failed, "userId": "alice", "status": "queued" }).to_string(),
            400,
            "INVALID_BODY",
        ),
        // Wrong types
        case(
            "taskId is a number",
            post.clone(),
            "action=retry",
            retry_with(json!(42)),
            400,
            "INVALID_BODY",
        ),
        case(
            "taskId is an array",
            post.clone(),
            "action=retry",
            retry_with(json!([failed])),
            400,
            "INVALID_BODY",
        ),
        case(
            "maxRetries is a string",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":"3"}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "maxRetries is fractional",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":2.5}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "maxRetries negative",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":-1}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "maxRetries enormous",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":1e300}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "maxRetries out of range",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":21}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "payload is an array",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":[1]}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "payload is a string",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":"steps=5"}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "isSelfInvoke is a string",
            post.clone(),
            "action=process",
            format!(r#"{{"taskId":"{failed}","isSelfInvoke":"yes"}}"#),
            400,
            "INVALID_BODY",
        ),
        // Operator objects in every string field
        case(
            "retry: taskId operator",
            post.clone(),
            "action=retry",
            retry_with(op()),
            400,
            "INVALID_BODY",
        ),
        case(
            "retry: userId operator",
            post.clone(),
            "action=retry",
            json!({ "taskId": failed, "userId": { "$gt": "" } }).to_string(),
            400,
            "INVALID_BODY",
        ),
        case(
            "cancel: taskId operator",
            post.clone(),
            "action=cancel",
            json!({ "taskId": op(), "userId": "alice" }).to_string(),
            400,
            "INVALID_BODY",
        ),
        case(
            "cancel: userId operator",
            post.clone(),
            "action=cancel",
            json!({ "taskId": failed, "userId": op() }).to_string(),
            400,
            "INVALID_BODY",
        ),
        case(
            "create: type operator",
            post.clone(),
            "action=create",
            json!({ "type": op(), "userId": "alice" }).to_string(),
            400,
            "INVALID_BODY",
        ),
        case(
            "create: userId operator",
            post.clone(),
            "action=create",
            json!({ "type": "demo", "userId": op() }).to_string(),
            400,
            "INVALID_BODY",
        ),
        case(
            "create: brandId operator",
            post.clone(),
            "action=create",
            json!({ "type": "demo", "userId": "alice", "brandId": op() }).to_string(),
            400,
            "INVALID_BODY",
        ),
        case(
            "process: taskId operator",
            post.clone(),
            "action=process",
            r#"{"taskId":{"$ne":null}}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "get: PHP-style operator in query",
            get.clone(),
            "action=get&taskId[$ne]=x&userId=alice",
            "",
            400,
            "MISSING_FIELDS",
        ),
        case(
            "list: PHP-style operator for userId",
            get.clone(),
            "action=list&userId[$ne]=x",
            "",
            400,
            "MISSING_FIELDS",
        ),
        // Control characters and long strings
        case(
            "taskId with NUL",
            post.clone(),
            "action=retry",
            retry_with(json!("abc\u{0}")),
            400,
            "INVALID_BODY",
        ),
        case(
            "userId with a newline",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"ali\nce"}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "brandId with an escape sequence",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","brandId":"\u001b[31m"}"#,
            400,
            "INVALID_BODY",
        ),
        case(
            "userId with a control character in the query",
            get.clone(),
            "action=list&userId=al%07ice",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "taskId over 256 characters",
            post.clone(),
            "action=retry",
            long_id,
            400,
            "INVALID_BODY",
        ),
        case(
            "userId over 256 characters",
            post.clone(),
            "action=create",
            json!({ "type": "demo", "userId": "u".repeat(257) }).to_string(),
            400,
            "INVALID_BODY",
        ),
        // Sizes
        case(
            "body over 256 KiB",
            post.clone(),
            "action=create",
            big,
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        case(
            "payload over 64 KiB",
            post.clone(),
            "action=create",
            huge_payload,
            400,
            "INVALID_PAYLOAD",
        ),
        // Semantics
        case(
            "unknown task type",
            post.clone(),
            "action=create",
            r#"{"type":"rm-rf","userId":"alice"}"#,
            400,
            "UNKNOWN_TASK_TYPE",
        ),
        case(
            "invalid demo payload",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":{"steps":0}}"#,
            400,
            "INVALID_PAYLOAD",
        ),
        case(
            "webhook to a host not allowed",
            post.clone(),
            "action=create",
            r#"{"type":"webhook","userId":"alice","payload":{"url":"http://169.254.169.254/"}}"#,
            400,
            "INVALID_PAYLOAD",
        ),
        // Actions and methods
        case(
            "unknown action",
            post.clone(),
            "action=drop",
            "{}",
            400,
            "UNKNOWN_ACTION",
        ),
        case("no action", get.clone(), "", "", 400, "UNKNOWN_ACTION"),
        case(
            "action with a NUL",
            get.clone(),
            "action=list%00",
            "",
            400,
            "UNKNOWN_ACTION",
        ),
        case(
            "repeated action",
            get.clone(),
            "action=list&action=retry",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "retry with GET",
            get.clone(),
            "action=retry",
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "create with PUT",
            put,
            "action=create",
            r#"{"type":"demo","userId":"alice"}"#,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "retry with PATCH",
            patch,
            "action=retry",
            retry_with(json!(failed)),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "list with DELETE",
            delete,
            "action=list&userId=alice",
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "get with OPTIONS",
            options,
            "action=get&taskId=a&userId=alice",
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        // Queries
        case(
            "limit 0",
            get.clone(),
            "action=list&userId=alice&limit=0",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "limit 101",
            get.clone(),
            "action=list&userId=alice&limit=101",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "limit negative",
            get.clone(),
            "action=list&userId=alice&limit=-1",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "limit enormous",
            get.clone(),
            "action=list&userId=alice&limit=99999999999999999999999",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "limit not a number",
            get.clone(),
            "action=list&userId=alice&limit=ten",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "bogus cursor",
            get.clone(),
            "action=list&userId=alice&cursor=bm9wZQ",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "cursor with a bad time",
            get.clone(),
            "action=list&userId=alice&cursor=YWJjOmRlZg",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "cursor that is not base64",
            get.clone(),
            "action=list&userId=alice&cursor=%24%7B%7D",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "unknown status filter",
            get.clone(),
            "action=list&userId=alice&status=stuck",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "repeated parameter",
            get.clone(),
            "action=get&taskId=a&taskId=b&userId=alice",
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "get without taskId",
            get.clone(),
            "action=get&userId=alice",
            "",
            400,
            "MISSING_FIELDS",
        ),
        case(
            "list without userId",
            get.clone(),
            "action=list",
            "",
            400,
            "MISSING_FIELDS",
        ),
    ];
    assert!(cases.len() >= 40);

    for case in cases {
        let before = jobs.snapshot().await;
        let request = jobs
            .request(case.method.clone(), case.query)
            .header("content-type", "application/json")
            .body(case.body.clone());
        let reply = jobs.send(request).await;
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.body);
        assert_eq!(
            reply.body["code"], case.code,
            "{}: {}",
            case.name, reply.body
        );
        assert!(
            !reply.body["error"].as_str().unwrap_or_default().is_empty(),
            "{}: no message",
            case.name
        );
        if case.status == 405 {
            assert!(
                reply.header("allow").is_some(),
                "{}: no Allow header",
                case.name
            );
        }
        assert_eq!(
            jobs.snapshot().await,
            before,
            "{}: a document changed",
            case.name
        );
    }
}

mod random_bodies {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use serde_json::{Value, json};

    use crate::support::Service;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("taskId".to_owned()),
            Just("userId".to_owned()),
            Just("type".to_owned()),
            Just("payload".to_owned()),
            Just("brandId".to_owned()),
            Just("maxRetries".to_owned()),
            Just("isSelfInvoke".to_owned()),
            Just("$where".to_owned()),
            ".{0,12}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::from),
            Just(json!("demo")),
            Just(json!({ "$ne": null })),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => vec(any::<u8>(), 0..300),
        ]
    }

    /// Random bodies at every action's decoder: never a panic, never a 5xx.
    #[tokio::test(flavor = "multi_thread")]
    async fn random_bodies_never_cause_a_5xx() {
        let jobs = Service::start().await;
        let handle = tokio::runtime::Handle::current();
        let base = jobs.base.clone();
        tokio::task::spawn_blocking(move || {
            let http = reqwest::Client::new();
            let mut runner = TestRunner::new(Config {
                cases: 400,
                failure_persistence: None,
                ..Config::default()
            });
            let actions = prop_oneof![
                Just("create"),
                Just("retry"),
                Just("cancel"),
                Just("process")
            ];
            runner
                .run(&(actions, body()), |(action, body)| {
                    let status = handle.block_on(async {
                        http.post(format!("{base}/api/jobs?action={action}"))
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                    });
                    let status =
                        status.map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
                    prop_assert!(
                        status < 500,
                        "{action} answered {status} to {:?}",
                        String::from_utf8_lossy(&body)
                    );
                    Ok(())
                })
                .unwrap();
        })
        .await
        .unwrap();
        assert_eq!(
            jobs.get("action=health").await.status,
            200,
            "the function is still serving"
        );
    }
}
