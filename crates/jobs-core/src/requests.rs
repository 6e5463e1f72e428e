//! Typed request bodies and queries. Every field has its type; unknown fields are refused,
//! so an operator object like `{"$ne": null}` is a decoding error, never part of a filter.

use base64::Engine;
use mongodb::bson::{self, Document};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{JobsError, Result};
use crate::error_groups::is_group_id;
use crate::http::Query;
pub use crate::selection::{BulkFilter, Cursor, ListQuery, Search};
use crate::selection::{MAX_FIELD_CONDITIONS, MAX_TAG_CHARS, MAX_TAGS};
use crate::steps::Resume;
use crate::task::{
    AutoRetry, Backoff, BrandId, DEFAULT_MAX_RETRIES, MAX_MAX_RETRIES, TaskId, TaskStatus, UserId,
};

/// Page size of `list` without `?limit=`.
pub const DEFAULT_LIST_LIMIT: i64 = 20;
/// Largest `?limit=` `list` accepts.
pub const MAX_LIST_LIMIT: i64 = 100;

/// `create`'s body: `{type, payload?, brandId?, maxRetries?, autoRetry?, idempotencyKey?,
/// userId?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRequest {
    /// `type`: the task type; must name a registered processor.
    #[serde(rename = "type")]
    pub kind: String,
    /// `payload`: the processor's input, a JSON object; absent means `{}`.
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
    /// `brandId`: optional tenant scope, as sent; read it through [`CreateRequest::brand_id`].
    #[serde(default)]
    pub brand_id: Option<String>,
    /// `maxRetries`, as sent; read it through [`CreateRequest::max_retries`], which checks its
    /// range.
    #[serde(default)]
    pub max_retries: Option<i64>,
    /// `userId`: the owner in development; with tokens it may be left out, and must match the
    /// token's `sub` when sent.
    #[serde(default)]
    pub user_id: Option<String>,
    /// `autoRetry`: the automatic-retry policy, as sent; read it through
    /// [`CreateRequest::auto_retry`], which checks its ranges.
    #[serde(default)]
    pub auto_retry: Option<AutoRetryRequest>,
    /// `idempotencyKey`: the `Idempotency-Key` header's alternative for clients that cannot
    /// set headers (`crate::idempotency`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// `tags`, as sent; read them through [`CreateRequest::tags`].
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// `autoRetry` as a client sends it (docs/spec.md §12).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoRetryRequest {
    /// `attempts`, 0..=10.
    pub attempts: i64,
    /// `delaySeconds`, 1..=86400 (default 10).
    #[serde(default)]
    pub delay_seconds: Option<i64>,
    /// `backoff`: `exponential` (default) or `fixed`.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// `maxDelaySeconds`, 1..=86400 (default 3600).
    #[serde(default)]
    pub max_delay_seconds: Option<i64>,
}

impl CreateRequest {
    /// The checked automatic-retry policy, if sent; out of range is an `InvalidBody`.
    pub fn auto_retry(&self) -> Result<Option<AutoRetry>> {
        let Some(sent) = &self.auto_retry else {
            return Ok(None);
        };
        let within = |name: &str, value: i64, range: std::ops::RangeInclusive<i64>| {
            range.contains(&value).then_some(value).ok_or_else(|| {
                JobsError::InvalidBody(format!(
                    "autoRetry.{name} must be between {} and {}",
                    range.start(),
                    range.end()
                ))
            })
        };
        let policy = AutoRetry {
            attempts: within("attempts", sent.attempts, 0..=10)? as i32,
            delay_seconds: within("delaySeconds", sent.delay_seconds.unwrap_or(10), 1..=86_400)?,
            backoff: sent.backoff.unwrap_or_default(),
            max_delay_seconds: within(
                "maxDelaySeconds",
                sent.max_delay_seconds.unwrap_or(3600),
                1..=86_400,
            )?,
        };
        Ok(Some(policy))
    }

    /// The retry budget: [`DEFAULT_MAX_RETRIES`] when absent, else 0..=[`MAX_MAX_RETRIES`]; out of
    /// range is an `InvalidBody`.
    pub fn max_retries(&self) -> Result<i32> {
        match self.max_retries {
            None => Ok(DEFAULT_MAX_RETRIES),
            Some(n) if (0..=MAX_MAX_RETRIES as i64).contains(&n) => Ok(n as i32),
            Some(_) => Err(JobsError::InvalidBody(format!(
                "maxRetries must be between 0 and {MAX_MAX_RETRIES}"
            ))),
        }
    }

    /// The checked `tags`: at most [`MAX_TAGS`], each a tag [`checked_tag`] accepts, repeats
    /// dropped (order kept); a bad one is an `InvalidBody`.
    pub fn tags(&self) -> Result<Vec<String>> {
        let sent = self.tags.as_deref().unwrap_or_default();
        if sent.len() > MAX_TAGS {
            return Err(JobsError::InvalidBody(format!(
                "tags holds at most {MAX_TAGS} tags"
            )));
        }
        let mut tags: Vec<String> = Vec::with_capacity(sent.len());
        for tag in sent {
            let tag = checked_tag(tag, "tags").map_err(JobsError::InvalidBody)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Ok(tags)
    }

    /// The checked `brandId`, if sent; a bad one is an `InvalidBody`.
    pub fn brand_id(&self) -> Result<Option<BrandId>> {
        self.brand_id
            .clone()
            .map(BrandId::parse)
            .transpose()
            .map_err(JobsError::InvalidBody)
    }
}

/// `retryMany`'s body (docs/spec.md §13): exactly one of `taskIds` and `filter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryManyRequest {
    /// `taskIds`: 1..=[`MAX_BULK`] ids to retry.
    #[serde(default)]
    pub task_ids: Option<Vec<String>>,
    /// `filter`: retry this user's failed tasks matching it, newest first, a page at a time.
    #[serde(default)]
    pub filter: Option<BulkFilterRequest>,
    /// `cursor`: the previous call's `nextCursor` (with `filter`).
    #[serde(default)]
    pub cursor: Option<String>,
    /// `limit`: at most this many tasks a call (with `filter`; 1..=[`MAX_BULK`], the default).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `userId`, as for `retry`.
    #[serde(default)]
    pub user_id: Option<String>,
    /// `from`, as for `retry`: every task of the call resumes from it (after a `patch`, the
    /// start unless given).
    #[serde(default)]
    pub from: Option<String>,
    /// `patch` (with `filter`): an RFC 7396 JSON Merge Patch applied to each selected task's
    /// payload, each result validated by its processor and stored as the next version
    /// (docs/spec.md §17).
    #[serde(default)]
    pub patch: Option<Map<String, Value>>,
    /// `dryRun`: change nothing; answer what the call would do.
    #[serde(default)]
    pub dry_run: bool,
}

/// A `retryMany` call, checked: what it selects, where the retried runs start (`None`: the
/// default), the merge patch to apply, and whether it only says what it would do.
#[derive(Debug)]
pub struct BulkRetry {
    /// The tasks.
    pub selection: BulkSelection,
    /// `from`, if given.
    pub from: Option<Resume>,
    /// `patch`, with a filter.
    pub patch: Option<Value>,
    /// `dryRun`.
    pub dry_run: bool,
}

/// `retryMany`'s `filter` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkFilterRequest {
    /// `type`: only tasks of this type.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `errorGroup`: only tasks that failed for this cause.
    #[serde(default)]
    pub error_group: Option<String>,
    /// `brandId`: only tasks of this tenant.
    #[serde(default)]
    pub brand_id: Option<String>,
    /// `tag`: only tasks carrying this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// `createdAfter`: only tasks created at or after this RFC 3339 time.
    #[serde(default)]
    pub created_after: Option<String>,
    /// `createdBefore`: only tasks created before this RFC 3339 time.
    #[serde(default)]
    pub created_before: Option<String>,
    /// `payload`: equality on top-level payload fields, `{"brandId": "b1"}` (strings, numbers
    /// or booleans; at most [`MAX_FIELD_CONDITIONS`]).
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
}

/// A tag as stored: 1..=[`MAX_TAG_CHARS`] characters, no control characters, trimmed.
pub fn checked_tag(tag: &str, name: &str) -> std::result::Result<String, String> {
    let tag = tag.trim();
    let length = tag.chars().count();
    if length == 0 || length > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
        return Err(format!(
            "{name}: a tag is 1 to {MAX_TAG_CHARS} characters without control characters"
        ));
    }
    Ok(tag.to_owned())
}

/// The longest value a payload condition compares with, in characters.
const MAX_FIELD_VALUE_CHARS: usize = 256;

/// A search, checked (docs/spec.md §19): `invalid` makes the error (`INVALID_QUERY` for
/// `list`, `INVALID_BODY` for `retryMany`), `prefix` names the parameters in it.
pub fn checked_search(
    (tag, kind): (Option<&str>, Option<&str>),
    (after, before): (Option<&str>, Option<&str>),
    fields: Vec<(String, String)>,
    (prefix, invalid): (&str, fn(String) -> JobsError),
) -> Result<Search> {
    fn present(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty())
    }
    let time = |raw: Option<&str>, name: &str| {
        present(raw)
            .map(|raw| {
                bson::DateTime::parse_rfc3339_str(raw).map_err(|_| {
                    invalid(format!(
                        "{prefix}{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let created_after = time(after, "createdAfter")?;
    let created_before = time(before, "createdBefore")?;
    if let (Some(a), Some(b)) = (created_after, created_before)
        && a >= b
    {
        return Err(invalid(format!(
            "{prefix}createdAfter must be earlier than {prefix}createdBefore"
        )));
    }
    let kind = present(kind)
        .map(|k| {
            TaskId::parse(k.to_owned())
                .map(|_| k.to_owned())
                .map_err(|e| invalid(e.replace("taskId", &format!("{prefix}type"))))
        })
        .transpose()?;
    let tag = present(tag)
        .map(|t| checked_tag(t, &format!("{prefix}tag")).map_err(invalid))
        .transpose()?;
    if fields.len() > MAX_FIELD_CONDITIONS {
        return Err(invalid(format!(
            "at most {MAX_FIELD_CONDITIONS} payload conditions (payload.<field>=<value>) per search"
        )));
    }
    for (field, value) in &fields {
        let top_level = !field.is_empty()
            && field.len() <= 64
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !top_level {
            return Err(invalid(format!(
                "{prefix}payload.{}: a condition names one top-level payload field (letters, digits, _ and -, at most 64), as payload.brandId=b1",
                field.chars().take(64).collect::<String>()
            )));
        }
        if value.chars().count() > MAX_FIELD_VALUE_CHARS || value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "{prefix}payload.{field}: the value is at most {MAX_FIELD_VALUE_CHARS} characters without control characters"
            )));
        }
    }
    Ok(Search {
        tag,
        kind,
        created_after,
        created_before,
        fields,
    })
}

/// Most tasks one `retryMany` call handles (docs/spec.md §13).
pub const MAX_BULK: usize = 1000;

/// Most tasks one `retryMany` call with a `patch` handles (docs/spec.md §17): each is read with
/// its payload and versions, and rewritten whole.
pub const MAX_PATCHED: usize = 100;

/// What a `retryMany` call asks for, checked.
#[derive(Debug)]
pub enum BulkSelection {
    /// These ids (1..=[`MAX_BULK`], duplicates removed, order kept).
    Ids(Vec<TaskId>),
    /// A page of at most `limit` failed tasks matching the filter, after the cursor.
    Filter(BulkFilter, Option<Cursor>, usize),
}

impl RetryManyRequest {
    /// The whole call, checked: [`RetryManyRequest::selection`], `from`, and a `patch` only
    /// with a filter.
    pub fn checked(mut self) -> Result<BulkRetry> {
        let from = match self.from.take() {
            None => None,
            Some(from) => Some(resume_from(Some(&from))?),
        };
        let (patch, dry_run) = (self.patch.take().map(Value::Object), self.dry_run);
        if patch.is_some() && self.filter.is_none() {
            return Err(JobsError::InvalidBody(
                "patch goes with filter, not with taskIds".into(),
            ));
        }
        // A correction reads each task's payload and versions and builds a new one: at most
        // MAX_PATCHED a call keeps a call's memory bounded.
        if patch.is_some() {
            match self.limit {
                None => self.limit = Some(MAX_PATCHED as u32),
                Some(n) if n as usize > MAX_PATCHED => {
                    return Err(JobsError::InvalidBody(format!(
                        "limit must be 1 to {MAX_PATCHED} with a patch"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(BulkRetry {
            selection: self.selection()?,
            from,
            patch,
            dry_run,
        })
    }

    /// Exactly one of `taskIds` and `filter`, checked; anything else is an `InvalidBody`.
    pub fn selection(self) -> Result<BulkSelection> {
        let invalid = |m: &str| JobsError::InvalidBody(m.to_owned());
        match (self.task_ids, self.filter) {
            (Some(ids), None) => {
                if self.cursor.is_some() {
                    return Err(invalid("cursor goes with filter, not with taskIds"));
                }
                if self.limit.is_some() {
                    return Err(invalid("limit goes with filter, not with taskIds"));
                }
                if ids.is_empty() || ids.len() > MAX_BULK {
                    return Err(invalid("taskIds must hold 1 to 1000 ids"));
                }
                let mut unique: Vec<TaskId> = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = TaskId::parse(id).map_err(JobsError::InvalidBody)?;
                    if !unique.contains(&id) {
                        unique.push(id);
                    }
                }
                Ok(BulkSelection::Ids(unique))
            }
            (None, Some(filter)) => {
                let text = |value: Option<String>, name: &str| {
                    value
                        .filter(|v| !v.is_empty())
                        .map(|v| {
                            TaskId::parse(v.clone())
                                .map(|_| v)
                                .map_err(|e| JobsError::InvalidBody(e.replace("taskId", name)))
                        })
                        .transpose()
                };
                let error_group = text(filter.error_group, "filter.errorGroup")?;
                if error_group.as_deref().is_some_and(|g| !is_group_id(g)) {
                    return Err(invalid("filter.errorGroup must be 12 hex digits"));
                }
                let fields = filter
                    .payload
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(field, value)| match value {
                        Value::String(text) => Ok((field, text)),
                        Value::Number(_) | Value::Bool(_) => Ok((field, value.to_string())),
                        _ => Err(JobsError::InvalidBody(format!(
                            "filter.payload.{field} must be a string, number or boolean"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let search = checked_search(
                    (filter.tag.as_deref(), None),
                    (
                        filter.created_after.as_deref(),
                        filter.created_before.as_deref(),
                    ),
                    fields,
                    ("filter.", JobsError::InvalidBody),
                )?;
                let filter = BulkFilter {
                    kind: text(filter.kind, "filter.type")?,
                    error_group,
                    brand_id: filter
                        .brand_id
                        .filter(|b| !b.is_empty())
                        .map(BrandId::parse)
                        .transpose()
                        .map_err(JobsError::InvalidBody)?,
                    search,
                };
                let cursor = self
                    .cursor
                    .filter(|c| !c.is_empty())
                    .map(|c| {
                        Cursor::decode(&c)
                            .map_err(|_| invalid("cursor is not one this service issued"))
                    })
                    .transpose()?;
                let limit = match self.limit {
                    None => MAX_BULK,
                    Some(n @ 1..=1000) => n as usize,
                    Some(_) => return Err(invalid("limit must be 1 to 1000")),
                };
                Ok(BulkSelection::Filter(filter, cursor, limit))
            }
            _ => Err(invalid("send exactly one of taskIds and filter")),
        }
    }
}

/// `cancel`: the plan's `{taskId, userId}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskRequest {
    /// `taskId`: the task to act on; absent or empty is a `MissingFields`.
    #[serde(default)]
    pub task_id: Option<String>,
    /// `userId`: who acts; required in development, and with tokens optional but it must match
    /// `sub`.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `retry`: the plan's `{taskId, userId}`, and `from` (docs/spec.md §16): `"failedStep"` (the
/// default) or `"start"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryRequest {
    /// `taskId`, as for [`TaskRequest`].
    #[serde(default)]
    pub task_id: Option<String>,
    /// `userId`, as for [`TaskRequest`].
    #[serde(default)]
    pub user_id: Option<String>,
    /// `from`: where the retried run starts; after an edit the start, unless given.
    #[serde(default)]
    pub from: Option<String>,
    /// `payload`: a new payload (docs/spec.md §17), validated as at `create` and stored as the
    /// next version.
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
    /// `expectedVersion`: the payload version the edit was made from; another one is
    /// `VERSION_CONFLICT`.
    #[serde(default)]
    pub expected_version: Option<i32>,
}

/// Largest payload accepted, as BSON (docs/spec.md §3).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A payload as `create` and an edit take it: a JSON object of at most [`MAX_PAYLOAD_BYTES`] as
/// BSON; as JSON and as it is stored.
pub fn checked_payload(payload: Map<String, Value>) -> Result<(Value, Document)> {
    let payload = Value::Object(payload);
    let stored: Document =
        bson::to_document(&payload).map_err(|e| JobsError::InvalidPayload(e.to_string()))?;
    if bson::to_vec(&stored).map_or(true, |bytes| bytes.len() > MAX_PAYLOAD_BYTES) {
        return Err(JobsError::InvalidPayload(format!(
            "payload is larger than {} KiB",
            MAX_PAYLOAD_BYTES / 1024
        )));
    }
    Ok((payload, stored))
}

/// `from` of `retry` or `retryMany`, checked: anything but the two is an `InvalidBody`.
pub fn resume_from(from: Option<&str>) -> Result<Resume> {
    Resume::parse(from).map_err(JobsError::InvalidBody)
}

/// `process`'s body, sent by a hand-off: `{taskId, handoffId}` through QStash,
/// `{taskId, handoffId, isSelfInvoke: true}` by self-invocation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProcessRequest {
    /// `taskId`: the task to claim.
    pub task_id: String,
    /// `handoffId`: the hand-off's deduplication id (absent from hand-offs sent before they
    /// were recorded). QStash's failure callback returns this body, so the callback fails the
    /// task only while this hand-off is still the one it waits for.
    #[serde(default)]
    pub handoff_id: Option<String>,
    /// `isSelfInvoke`: set by self-invocations. Informational: the credentials, never this flag,
    /// decide whether a delivery is accepted.
    #[serde(default)]
    pub is_self_invoke: Option<bool>,
}

/// QStash's failure callback body (its documented fields that the service reads; others are
/// ignored): sent, signed, when QStash gave up delivering a message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureCallback {
    /// The destination's last HTTP status; absent when it could not be reached.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many times QStash retried the delivery (deliveries = `retried + 1`).
    #[serde(default)]
    pub retried: u32,
    /// The original message body, base64.
    pub source_body: String,
}

impl FailureCallback {
    /// The hand-off QStash gave up on: the original `process` body.
    pub fn source(&self) -> Result<ProcessRequest> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.source_body)
            .map_err(|_| JobsError::InvalidBody("sourceBody is not base64".into()))?;
        serde_json::from_slice(&raw).map_err(|e| JobsError::InvalidBody(format!("sourceBody: {e}")))
    }

    /// The task's `lastError`: `Delivery failed after <n> attempts (HTTP <status>).`
    pub fn message(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "no response".to_owned(), |s| format!("HTTP {s}"));
        format!(
            "Delivery failed after {} attempts ({status}).",
            self.retried + 1
        )
    }
}

/// Where a client value came from, so a bad one is reported as a bad body or a bad query.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A JSON body field: a bad value is an `InvalidBody`.
    Body,
    /// A query parameter: a bad value is an `InvalidQuery`.
    Query,
}

impl Source {
    fn invalid(self, message: String) -> JobsError {
        match self {
            Self::Body => JobsError::InvalidBody(message),
            Self::Query => JobsError::InvalidQuery(message),
        }
    }
}

/// An optional task id: empty counts as absent.
pub fn task_id(raw: Option<&str>, source: Source) -> Result<Option<TaskId>> {
    raw.filter(|r| !r.is_empty())
        .map(|r| TaskId::parse(r).map_err(|e| source.invalid(e)))
        .transpose()
}

/// An optional claimed user id: empty counts as absent.
pub fn user_id(raw: Option<&str>, source: Source) -> Result<Option<UserId>> {
    raw.filter(|r| !r.is_empty())
        .map(|r| UserId::parse(r).map_err(|e| source.invalid(e)))
        .transpose()
}

impl ListQuery {
    /// Reads `status`, `brandId`, `limit` and `cursor`; a bad one is an `InvalidQuery`.
    pub fn parse(query: &Query) -> Result<Self> {
        let invalid = |m: String| JobsError::InvalidQuery(m);
        let status = query
            .get("status")
            .filter(|s| !s.is_empty())
            .map(|s| {
                TaskStatus::parse(s).ok_or_else(|| {
                    invalid(format!(
                        "unknown status {:?}",
                        s.chars().take(32).collect::<String>()
                    ))
                })
            })
            .transpose()?;
        let brand_id = query
            .get("brandId")
            .filter(|s| !s.is_empty())
            .map(BrandId::parse)
            .transpose()
            .map_err(invalid)?;
        let limit = match query.get("limit") {
            None | Some("") => DEFAULT_LIST_LIMIT,
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "limit must be a whole number between 1 and {MAX_LIST_LIMIT}"
                    ))
                })?,
        };
        let after = query
            .get("cursor")
            .filter(|s| !s.is_empty())
            .map(Cursor::decode)
            .transpose()?;
        let error_group = query
            .get("errorGroup")
            .filter(|s| !s.is_empty())
            .map(|g| {
                is_group_id(g)
                    .then(|| g.to_owned())
                    .ok_or_else(|| invalid("errorGroup must be 12 hex digits".into()))
            })
            .transpose()?;
        let search = checked_search(
            (query.get("tag"), query.get("type")),
            (query.get("createdAfter"), query.get("createdBefore")),
            query.prefixed("payload."),
            ("", JobsError::InvalidQuery),
        )?;
        Ok(Self {
            status,
            brand_id,
            limit,
            after,
            error_group,
            search,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_limits() {
        let cases = [
            ("", Some(20)),
            ("limit=1", Some(1)),
            ("limit=100", Some(100)),
            ("limit=0", None),
            ("limit=101", None),
            ("limit=-5", None),
            ("limit=1e3", None),
            ("limit=99999999999999999999", None),
        ];
        for (raw, expected) in cases {
            let got = ListQuery::parse(&Query::parse(Some(raw)).unwrap())
                .ok()
                .map(|q| q.limit);
            assert_eq!(got, expected, "{raw}");
        }
    }
}
