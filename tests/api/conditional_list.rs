//! `list`'s `ETag` and `If-None-Match` (docs/spec.md §5, `list`): 304 with no body, for one
//! indexed read, while nothing the caller would be shown changed; a full answer as soon as
//! anything did, and for any other query.

use reqwest::Method;
use serde_json::json;

use crate::support::{Reply, Service};

const ALICE: &str = "action=list&userId=alice";

async fn list(jobs: &Service, query: &str, if_none_match: Option<&str>) -> Reply {
    let mut request = jobs.request(Method::GET, query);
    if let Some(value) = if_none_match {
        request = request.header("if-none-match", value);
    }
    jobs.send(request).await
}

/// A 200 `list` reply's `ETag`, checked to be a strong validator.
fn etag(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let etag = reply
        .header("etag")
        .expect("list answers an ETag")
        .to_owned();
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "a strong, quoted tag: {etag}"
    );
    etag
}

fn assert_not_modified(reply: &Reply, etag: &str) {
    assert_eq!(reply.status, 304, "{}", reply.body);
    assert_eq!(reply.body, json!(""), "a 304 has no body");
    assert_eq!(reply.header("etag"), Some(etag), "the same tag");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), None);
    assert_eq!(reply.db_commands(), 1, "one indexed read");
}

#[tokio::test]
async fn list_answers_304_while_nothing_the_user_sees_changed() {
    let jobs = Service::start().await;
    let first = jobs.failed_task("alice", 1, 3).await;
    jobs.failed_task("alice", 1, 3).await;
    let bobs = jobs.failed_task("bob", 1, 3).await;

    let full = list(&jobs, ALICE, None).await;
    let tag = etag(&full);
    assert_eq!(full.header("cache-control"), Some("no-store"));
    assert_eq!(full.body["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(full.db_commands(), 1);

    assert_not_modified(&list(&jobs, ALICE, Some(&tag)).await, &tag);
    // RFC 9110 §13.1.2: weak comparison, a list, and `*` (a current list always exists).
    for value in [
        format!("W/{tag}"),
        format!("\"other\", {tag}"),
        format!(" , W/\"x\",{tag} "),
        "*".to_owned(),
    ] {
        assert_not_modified(&list(&jobs, ALICE, Some(&value)).await, &tag);
    }

    // Another tag, or a malformed header, is a miss: the full answer, never an error.
    let unquoted = tag.trim_matches('"').to_owned();
    for value in [
        "\"other\"".to_owned(),
        unquoted,
        format!("{tag} garbage"),
        format!("*, {tag}"),
        format!("w/{tag}"),
    ] {
        let reply = list(&jobs, ALICE, Some(&value)).await;
        assert_eq!(etag(&reply), tag, "If-None-Match: {value}");
        assert_eq!(reply.body, full.body, "If-None-Match: {value}");
    }

    // Another user's tasks are not in alice's view: their changes keep her tag.
    assert_eq!(jobs.retry(&bobs, "bob").await.status, 200);
    jobs.create_demo("bob", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    assert_not_modified(&list(&jobs, ALICE, Some(&tag)).await, &tag);

    // A change to one of hers is a new tag: her retry, then her create.
    assert_eq!(jobs.retry(&first, "alice").await.status, 200);
    let retried = list(&jobs, ALICE, Some(&tag)).await;
    let after_retry = etag(&retried);
    assert_ne!(after_retry, tag);
    assert_ne!(retried.body, full.body);
    jobs.wait_for_status(&first, "completed").await;
    let settled = etag(&list(&jobs, ALICE, Some(&after_retry)).await);
    assert_not_modified(&list(&jobs, ALICE, Some(&settled)).await, &settled);
    let created = jobs
        .create_demo("alice", json!({ "steps": 1, "stepMs": 0 }))
        .await;
    jobs.wait_for_status(&created, "completed").await;
    let with_new = list(&jobs, ALICE, Some(&settled)).await;
    assert_ne!(etag(&with_new), settled);
    assert_eq!(with_new.body["tasks"][0]["taskId"], json!(created));
}

#[tokio::test]
async fn each_query_has_its_own_tag() {
    let jobs = Service::start().await;
    for _ in 0..3 {
        jobs.failed_task("alice", 1, 3).await;
    }
    let all = list(&jobs, ALICE, None).await;
    let all_tag = etag(&all);

    // Every task is failed, so `status=failed` lists the same tasks: still another query.
    let failed_query = format!("{ALICE}&status=failed");
    let failed = list(&jobs, &failed_query, Some(&all_tag)).await;
    assert_eq!(failed.body, all.body);
    assert_ne!(etag(&failed), all_tag);
    // The defaults spelled out are the same query, in any order.
    let spelled = "action=list&limit=20&status=&userId=alice";
    assert_not_modified(&list(&jobs, spelled, Some(&all_tag)).await, &all_tag);

    // Pages: the first and the second of two have their own tags.
    let page_one = list(&jobs, &format!("{ALICE}&limit=2"), None).await;
    let page_one_tag = etag(&page_one);
    assert_ne!(page_one_tag, all_tag);
    let cursor = page_one.body["nextCursor"].as_str().unwrap();
    let next_query = format!("{ALICE}&limit=2&cursor={cursor}");
    let page_two = list(&jobs, &next_query, Some(&page_one_tag)).await;
    let page_two_tag = etag(&page_two);
    assert_ne!(page_two_tag, page_one_tag);
    assert_not_modified(
        &list(&jobs, &next_query, Some(&page_two_tag)).await,
        &page_two_tag,
    );

    // An empty list is no exception: bob's empty failed list is not his empty cancelled one.
    let bob_failed = etag(&list(&jobs, "action=list&userId=bob&status=failed", None).await);
    let bob_cancelled = list(
        &jobs,
        "action=list&userId=bob&status=cancelled",
        Some(&bob_failed),
    )
    .await;
    assert_ne!(etag(&bob_cancelled), bob_failed);
}

#[tokio::test]
async fn a_refused_list_ignores_if_none_match() {
    let jobs = Service::start().await;
    let tag = etag(&list(&jobs, ALICE, None).await);
    let refused = list(&jobs, &format!("{ALICE}&status=bogus"), Some("*")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["code"], json!("INVALID_QUERY"));
    assert_eq!(refused.header("etag"), None);
    let anonymous = list(&jobs, "action=list", Some(&tag)).await;
    assert_eq!(anonymous.status, 400, "{}", anonymous.body);
}

/// `HEAD` counts as `GET` (§5): the same `ETag` without a body, and 304 for a tag that still
/// matches.
#[tokio::test]
async fn head_answers_the_same_tag_and_honours_if_none_match() {
    let jobs = Service::start().await;
    jobs.failed_task("alice", 1, 3).await;
    let tag = etag(&list(&jobs, ALICE, None).await);
    let head = jobs.send(jobs.request(Method::HEAD, ALICE)).await;
    assert_eq!(
        (head.status, head.header("etag")),
        (200, Some(tag.as_str()))
    );
    assert_eq!(head.body, json!(""), "HEAD has no body");
    let matched = jobs
        .request(Method::HEAD, ALICE)
        .header("if-none-match", &tag);
    assert_not_modified(&jobs.send(matched).await, &tag);
}
