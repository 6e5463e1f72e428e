//! Bad and hostile input gets a clear 4xx and changes nothing (docs/spec.md §5): tables of
//! malformed and malicious requests, one per concern, each run by `refused_and_unchanged`;
//! and random bodies thrown at the decoder.

use reqwest::Method;
use serde_json::{Value, json};

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

/// A POST of `body`, answered 400 `INVALID_BODY`.
fn invalid_body(name: &'static str, query: &'static str, body: impl Into<Vec<u8>>) -> Case {
    case(name, Method::POST, query, body, 400, "INVALID_BODY")
}

/// A GET of `query`, answered 400 `INVALID_QUERY`.
fn invalid_query(name: &'static str, query: &'static str) -> Case {
    case(name, Method::GET, query, "", 400, "INVALID_QUERY")
}

/// A GET of `query`, answered 400 `MISSING_FIELDS`.
fn missing_fields(name: &'static str, query: &'static str) -> Case {
    case(name, Method::GET, query, "", 400, "MISSING_FIELDS")
}

fn retry_with(task_id: Value) -> String {
    json!({ "taskId": task_id, "userId": "alice" }).to_string()
}

fn op() -> Value {
    json!({ "$ne": null })
}

/// A table of rows, given the id of a failed task of `alice` to aim at.
type Table = fn(&str) -> Vec<Case>;

/// Sends every row to a fresh service holding one failed task of `alice`: each is answered
/// with its status and code and a message (a 405 also with an `Allow` header), and no
/// stored document changes.
async fn refused_and_unchanged(table: Table) {
    let jobs = Service::start().await;
    let failed = jobs.failed_task("alice", 5, 3).await;
    for case in table(&failed) {
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

const TABLES: [Table; 9] = [
    malformed_bodies,
    refused_edits,
    wrongly_typed_fields,
    operator_objects,
    control_characters_and_long_strings,
    oversize_bodies,
    invalid_tasks,
    unknown_actions_and_wrong_methods,
    bad_queries,
];

/// The tables together keep at least as many rows as the one table they were split from
/// was required to have.
#[test]
fn the_hostile_tables_keep_their_rows() {
    let rows: usize = TABLES.iter().map(|table| table("t").len()).sum();
    assert!(rows >= 40, "{rows} rows");
}

#[tokio::test]
async fn malformed_bodies_are_invalid_body() {
    refused_and_unchanged(malformed_bodies).await;
}

fn malformed_bodies(failed: &str) -> Vec<Case> {
    let mut invalid_utf8 = br#"{"taskId":""#.to_vec();
    invalid_utf8.extend([0xff, 0xfe, 0xfd]);
    invalid_utf8.extend(br#"","userId":"alice"}"#);
    let nested = format!(
        r#"{{"type":"demo","userId":"alice","payload":{{"a":{}1{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    vec![
        invalid_body("malformed JSON", "action=retry", r#"{"taskId": "#),
        invalid_body("empty body", "action=create", ""),
        invalid_body("JSON null", "action=retry", "null"),
        invalid_body("JSON string", "action=retry", r#""retry me""#),
        invalid_body("JSON that is not an object", "action=retry", "[1,2]"),
        invalid_body(
            "trailing garbage",
            "action=retry",
            format!(r#"{{"taskId":"{failed}","userId":"alice"}} x"#),
        ),
        invalid_body("invalid UTF-8", "action=retry", invalid_utf8),
        invalid_body("nested 300 deep", "action=create", nested),
        invalid_body(
            "duplicate keys",
            "action=retry",
            format!(r#"{{"taskId":"{failed}","taskId":"x","userId":"alice"}}"#),
        ),
        invalid_body(
            "unknown field",
            "action=retry",
            json!({ "taskId": failed, "userId": "alice", "status": "queued" }).to_string(),
        ),
    ]
}

#[tokio::test]
async fn wrongly_typed_fields_are_invalid_body() {
    refused_and_unchanged(wrongly_typed_fields).await;
}

fn wrongly_typed_fields(failed: &str) -> Vec<Case> {
    vec![
        invalid_body("taskId is a number", "action=retry", retry_with(json!(42))),
        invalid_body(
            "taskId is an array",
            "action=retry",
            retry_with(json!([failed])),
        ),
        invalid_body(
            "retry from a place that is not failedStep or start",
            "action=retry",
            json!({ "taskId": failed, "userId": "alice", "from": "step-4" }).to_string(),
        ),
        invalid_body(
            "retry from a number",
            "action=retry",
            json!({ "taskId": failed, "userId": "alice", "from": 4 }).to_string(),
        ),
        invalid_body(
            "retryMany from a place that is not failedStep or start",
            "action=retryMany",
            json!({ "taskIds": [failed], "userId": "alice", "from": "START" }).to_string(),
        ),
        invalid_body(
            "maxRetries is a string",
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":"3"}"#,
        ),
        invalid_body(
            "maxRetries is fractional",
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":2.5}"#,
        ),
        invalid_body(
            "maxRetries negative",
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":-1}"#,
        ),
        invalid_body(
            "maxRetries enormous",
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":1e300}"#,
        ),
        invalid_body(
            "maxRetries out of range",
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":21}"#,
        ),
        invalid_body(
            "payload is an array",
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":[1]}"#,
        ),
        invalid_body(
            "payload is a string",
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":"steps=5"}"#,
        ),
        invalid_body(
            "isSelfInvoke is a string",
            "action=process",
            format!(r#"{{"taskId":"{failed}","isSelfInvoke":"yes"}}"#),
        ),
    ]
}

#[tokio::test]
async fn operator_objects_are_refused_in_bodies_and_queries() {
    refused_and_unchanged(operator_objects).await;
}

/// An operator object in every string field of every action, and PHP-style in a query.
fn operator_objects(failed: &str) -> Vec<Case> {
    vec![
        invalid_body("retry: taskId operator", "action=retry", retry_with(op())),
        invalid_body(
            "retry: userId operator",
            "action=retry",
            json!({ "taskId": failed, "userId": { "$gt": "" } }).to_string(),
        ),
        invalid_body(
            "cancel: taskId operator",
            "action=cancel",
            json!({ "taskId": op(), "userId": "alice" }).to_string(),
        ),
        invalid_body(
            "cancel: userId operator",
            "action=cancel",
            json!({ "taskId": failed, "userId": op() }).to_string(),
        ),
        invalid_body(
            "create: type operator",
            "action=create",
            json!({ "type": op(), "userId": "alice" }).to_string(),
        ),
        invalid_body(
            "create: userId operator",
            "action=create",
            json!({ "type": "demo", "userId": op() }).to_string(),
        ),
        invalid_body(
            "create: brandId operator",
            "action=create",
            json!({ "type": "demo", "userId": "alice", "brandId": op() }).to_string(),
        ),
        invalid_body(
            "process: taskId operator",
            "action=process",
            r#"{"taskId":{"$ne":null}}"#,
        ),
        missing_fields(
            "get: PHP-style operator in query",
            "action=get&taskId[$ne]=x&userId=alice",
        ),
        missing_fields(
            "list: PHP-style operator for userId",
            "action=list&userId[$ne]=x",
        ),
    ]
}

#[tokio::test]
async fn control_characters_and_overlong_ids_are_refused() {
    refused_and_unchanged(control_characters_and_long_strings).await;
}

fn control_characters_and_long_strings(_failed: &str) -> Vec<Case> {
    vec![
        invalid_body(
            "taskId with NUL",
            "action=retry",
            retry_with(json!("abc\u{0}")),
        ),
        invalid_body(
            "userId with a newline",
            "action=create",
            r#"{"type":"demo","userId":"ali\nce"}"#,
        ),
        invalid_body(
            "brandId with an escape sequence",
            "action=create",
            r#"{"type":"demo","userId":"alice","brandId":"\u001b[31m"}"#,
        ),
        invalid_query(
            "userId with a control character in the query",
            "action=list&userId=al%07ice",
        ),
        invalid_body(
            "taskId over 256 characters",
            "action=retry",
            retry_with(json!("t".repeat(257))),
        ),
        invalid_body(
            "userId over 256 characters",
            "action=create",
            json!({ "type": "demo", "userId": "u".repeat(257) }).to_string(),
        ),
    ]
}

#[tokio::test]
async fn oversize_bodies_and_payloads_are_refused() {
    refused_and_unchanged(oversize_bodies).await;
}

fn oversize_bodies(_failed: &str) -> Vec<Case> {
    let padded = |kib: usize| {
        format!(
            r#"{{"type":"demo","userId":"alice","payload":{{"pad":"{}"}}}}"#,
            "x".repeat(kib * 1024)
        )
    };
    vec![
        case(
            "body over 256 KiB",
            Method::POST,
            "action=create",
            padded(300),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        case(
            "payload over 64 KiB",
            Method::POST,
            "action=create",
            padded(100),
            400,
            "INVALID_PAYLOAD",
        ),
    ]
}

#[tokio::test]
async fn refused_edits_change_nothing() {
    refused_and_unchanged(refused_edits).await;
}

/// Edits of the failed task's payload (docs/spec.md §17) that are refused, each before any
/// write: the task keeps its payload, its version and its retries.
fn refused_edits(failed: &str) -> Vec<Case> {
    let edit = |payload: Value, extra: Value| {
        let mut body = json!({ "taskId": failed, "userId": "alice", "payload": payload });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body.to_string()
    };
    let post =
        |name, body, status, code| case(name, Method::POST, "action=retry", body, status, code);
    vec![
        post(
            "an edit the processor refuses",
            edit(json!({ "steps": 0 }), json!({})),
            400,
            "INVALID_PAYLOAD",
        ),
        post(
            "an edit over 64 KiB",
            edit(json!({ "steps": 1, "pad": "x".repeat(70_000) }), json!({})),
            400,
            "INVALID_PAYLOAD",
        ),
        post(
            "an edit from a stale version",
            edit(json!({ "steps": 2 }), json!({ "expectedVersion": 7 })),
            409,
            "VERSION_CONFLICT",
        ),
        invalid_body(
            "an edit whose payload is not an object",
            "action=retry",
            edit(json!([1, 2]), json!({})),
        ),
        invalid_body(
            "an edit whose expectedVersion is not a number",
            "action=retry",
            edit(json!({ "steps": 2 }), json!({ "expectedVersion": "1" })),
        ),
        invalid_body(
            "a group correction whose patch is not an object",
            "action=retryMany",
            json!({ "userId": "alice", "filter": {}, "patch": [{ "op": "remove", "path": "/steps" }] })
                .to_string(),
        ),
        invalid_body(
            "a group correction of more than 100 tasks a call",
            "action=retryMany",
            json!({ "userId": "alice", "filter": {}, "patch": { "steps": 2 }, "limit": 101 })
                .to_string(),
        ),
        invalid_body(
            "a group correction by ids",
            "action=retryMany",
            json!({ "userId": "alice", "taskIds": [failed], "patch": { "steps": 2 } }).to_string(),
        ),
        invalid_body(
            "a dry run that is not a boolean",
            "action=retryMany",
            json!({ "userId": "alice", "taskIds": [failed], "dryRun": "yes" }).to_string(),
        ),
        post(
            "an edit of another user's task",
            json!({ "taskId": failed, "userId": "bob", "payload": { "steps": 2 } }).to_string(),
            403,
            "NOT_OWNER",
        ),
    ]
}

#[tokio::test]
async fn unknown_task_types_and_invalid_payloads_are_refused() {
    refused_and_unchanged(invalid_tasks).await;
}

fn invalid_tasks(_failed: &str) -> Vec<Case> {
    vec![
        case(
            "unknown task type",
            Method::POST,
            "action=create",
            r#"{"type":"rm-rf","userId":"alice"}"#,
            400,
            "UNKNOWN_TASK_TYPE",
        ),
        case(
            "invalid demo payload",
            Method::POST,
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":{"steps":0}}"#,
            400,
            "INVALID_PAYLOAD",
        ),
        case(
            "demo failAtStep beyond its steps",
            Method::POST,
            "action=create",
            r#"{"type":"demo","userId":"alice","payload":{"steps":3,"failAtStep":4}}"#,
            400,
            "INVALID_PAYLOAD",
        ),
        case(
            "webhook to a host not allowed",
            Method::POST,
            "action=create",
            r#"{"type":"webhook","userId":"alice","payload":{"url":"http://169.254.169.254/"}}"#,
            400,
            "INVALID_PAYLOAD",
        ),
    ]
}

#[tokio::test]
async fn unknown_actions_and_wrong_methods_are_refused() {
    refused_and_unchanged(unknown_actions_and_wrong_methods).await;
}

fn unknown_actions_and_wrong_methods(failed: &str) -> Vec<Case> {
    vec![
        case(
            "unknown action",
            Method::POST,
            "action=drop",
            "{}",
            400,
            "UNKNOWN_ACTION",
        ),
        case("no action", Method::GET, "", "", 400, "UNKNOWN_ACTION"),
        case(
            "action with a NUL",
            Method::GET,
            "action=list%00",
            "",
            400,
            "UNKNOWN_ACTION",
        ),
        invalid_query("repeated action", "action=list&action=retry"),
        case(
            "retry with GET",
            Method::GET,
            "action=retry",
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "create with PUT",
            Method::PUT,
            "action=create",
            r#"{"type":"demo","userId":"alice"}"#,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "retry with PATCH",
            Method::PATCH,
            "action=retry",
            retry_with(json!(failed)),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "list with DELETE",
            Method::DELETE,
            "action=list&userId=alice",
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "get with OPTIONS",
            Method::OPTIONS,
            "action=get&taskId=a&userId=alice",
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ]
}

#[tokio::test]
async fn bad_list_and_get_queries_are_refused() {
    refused_and_unchanged(bad_queries).await;
}

fn bad_queries(_failed: &str) -> Vec<Case> {
    vec![
        invalid_query("limit 0", "action=list&userId=alice&limit=0"),
        invalid_query("limit 101", "action=list&userId=alice&limit=101"),
        invalid_query("limit negative", "action=list&userId=alice&limit=-1"),
        invalid_query(
            "limit enormous",
            "action=list&userId=alice&limit=99999999999999999999999",
        ),
        invalid_query("limit not a number", "action=list&userId=alice&limit=ten"),
        invalid_query("bogus cursor", "action=list&userId=alice&cursor=bm9wZQ"),
        invalid_query(
            "cursor with a bad time",
            "action=list&userId=alice&cursor=YWJjOmRlZg",
        ),
        invalid_query(
            "cursor that is not base64",
            "action=list&userId=alice&cursor=%24%7B%7D",
        ),
        invalid_query(
            "unknown status filter",
            "action=list&userId=alice&status=stuck",
        ),
        invalid_query(
            "repeated parameter",
            "action=get&taskId=a&taskId=b&userId=alice",
        ),
        missing_fields("get without taskId", "action=get&userId=alice"),
        missing_fields("list without userId", "action=list"),
    ]
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
