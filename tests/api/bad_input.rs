//! Bad input gets a clear 4xx and changes nothing (SPEC section 5).

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
async fn bad_requests_are_refused_and_change_nothing() {
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

    let cases = [
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
            "JSON that is not an object",
            post.clone(),
            "action=retry",
            "[1,2]",
            400,
            "INVALID_BODY",
        ),
        case(
            "taskId is a number",
            post.clone(),
            "action=retry",
            retry_with(json!(42)),
            400,
            "INVALID_BODY",
        ),
        case(
            "taskId is an operator object",
            post.clone(),
            "action=retry",
            retry_with(json!({ "$ne": null })),
            400,
            "INVALID_BODY",
        ),
        case(
            "userId is an operator object",
            post.clone(),
            "action=retry",
            json!({ "taskId": failed, "userId": { "$gt": "" } }).to_string(),
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
        case(
            "taskId over 256 characters",
            post.clone(),
            "action=retry",
            long_id,
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
            "maxRetries of the wrong type",
            post.clone(),
            "action=create",
            r#"{"type":"demo","userId":"alice","maxRetries":"3"}"#,
            400,
            "INVALID_BODY",
        ),
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
        case(
            "body over 256 KiB",
            post.clone(),
            "action=create",
            big,
            413,
            "PAYLOAD_TOO_LARGE",
        ),
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
            "retry with GET",
            get.clone(),
            "action=retry",
            "",
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
            "bogus cursor",
            get.clone(),
            "action=list&userId=alice&cursor=bm9wZQ",
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
        case(
            "process with an operator object",
            post.clone(),
            "action=process",
            r#"{"taskId":{"$ne":null}}"#,
            400,
            "INVALID_BODY",
        ),
    ];

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
