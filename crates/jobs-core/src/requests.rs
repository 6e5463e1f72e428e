//! Typed request bodies and queries. Every field has its type; unknown fields are refused,
//! so an operator object like `{"$ne": null}` is a decoding error, never part of a filter.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mongodb::bson::DateTime;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{JobsError, Result};
use crate::http::Query;
use crate::task::{BrandId, DEFAULT_MAX_RETRIES, MAX_MAX_RETRIES, TaskId, TaskStatus, UserId};

pub const DEFAULT_LIST_LIMIT: i64 = 20;
pub const MAX_LIST_LIMIT: i64 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRequest {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
    #[serde(default)]
    pub brand_id: Option<String>,
    #[serde(default)]
    pub max_retries: Option<i64>,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl CreateRequest {
    pub fn max_retries(&self) -> Result<i32> {
        match self.max_retries {
            None => Ok(DEFAULT_MAX_RETRIES),
            Some(n) if (0..=MAX_MAX_RETRIES as i64).contains(&n) => Ok(n as i32),
            Some(_) => Err(JobsError::InvalidBody(format!(
                "maxRetries must be between 0 and {MAX_MAX_RETRIES}"
            ))),
        }
    }

    pub fn brand_id(&self) -> Result<Option<BrandId>> {
        self.brand_id
            .clone()
            .map(BrandId::parse)
            .transpose()
            .map_err(JobsError::InvalidBody)
    }
}

/// `retry` and `cancel`: the plan's `{taskId, userId}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskRequest {
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProcessRequest {
    pub task_id: String,
    #[serde(default)]
    pub is_self_invoke: Option<bool>,
}

/// Where a client value came from, so a bad one is reported as a bad body or a bad query.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Body,
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

/// `list`: filters, page size and the cursor of the previous page.
#[derive(Debug)]
pub struct ListQuery {
    pub status: Option<TaskStatus>,
    pub brand_id: Option<BrandId>,
    pub limit: i64,
    pub after: Option<Cursor>,
}

impl ListQuery {
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
        Ok(Self {
            status,
            brand_id,
            limit,
            after,
        })
    }
}

/// Position after the last task of a page: `(createdAt, taskId)`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub created_at: DateTime,
    pub task_id: TaskId,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_millis(),
            self.task_id
        ))
    }

    pub fn decode(raw: &str) -> Result<Self> {
        let bogus = || JobsError::InvalidQuery("cursor is not one this service issued".into());
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bogus())?;
        let text = String::from_utf8(bytes).map_err(|_| bogus())?;
        let (millis, task_id) = text.split_once(':').ok_or_else(bogus)?;
        Ok(Self {
            created_at: DateTime::from_millis(millis.parse().map_err(|_| bogus())?),
            task_id: TaskId::parse(task_id).map_err(|_| bogus())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_forgeries() {
        let cursor = Cursor {
            created_at: DateTime::from_millis(1_700_000_000_123),
            task_id: TaskId::generate(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for bogus in ["", "!!!", "bm90LWEtY3Vyc29y", "MTIzOg"] {
            assert!(Cursor::decode(bogus).is_err(), "{bogus}");
        }
    }

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
