//! What a caller selects: the shapes of `list`'s query and of a bulk retry's filter, and the
//! cursor that pages through both. `requests` parses them from a request; `store` turns them
//! into MongoDB filters; neither owns them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mongodb::bson::DateTime;

use crate::error::{JobsError, Result};
use crate::task::{BrandId, TaskId, TaskStatus};

/// Most tags a task carries, and the longest tag (docs/spec.md §19).
pub const MAX_TAGS: usize = 10;
/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Most conditions on payload fields one search takes.
pub const MAX_FIELD_CONDITIONS: usize = 3;
/// Most of a user's tasks one search on payload fields examines per page (they are not
/// indexed): the page then ends there and `nextCursor` continues the search from it.
pub const SCAN_WINDOW: i64 = 5000;

/// What a search selects beyond status and cause: a tag, a type, a creation window, and
/// equality on top-level scalar payload fields (`list`'s query, `retryMany`'s filter).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Search {
    /// Only tasks carrying this tag (indexed with the user).
    pub tag: Option<String>,
    /// Only tasks of this type (indexed with the user).
    pub kind: Option<String>,
    /// Only tasks created at or after this time.
    pub created_after: Option<DateTime>,
    /// Only tasks created before this time.
    pub created_before: Option<DateTime>,
    /// `payload.<field>` equals the value, for each (not indexed: a page examines at most
    /// [`SCAN_WINDOW`] tasks).
    pub fields: Vec<(String, String)>,
}

impl Search {
    /// The search in one unambiguous form (part of `list`'s `ETag`).
    pub fn canonical(&self) -> serde_json::Value {
        serde_json::json!([
            self.tag,
            self.kind,
            self.created_after.map(|t| t.timestamp_millis()),
            self.created_before.map(|t| t.timestamp_millis()),
            self.fields,
        ])
    }
}

/// `list`: filters, page size and the cursor of the previous page.
#[derive(Debug)]
pub struct ListQuery {
    /// `?status=`: only tasks in this status; absent or empty means all.
    pub status: Option<TaskStatus>,
    /// `?brandId=`: only tasks of this tenant; absent or empty means all.
    pub brand_id: Option<BrandId>,
    /// `?limit=`: page size, [`crate::requests::DEFAULT_LIST_LIMIT`] unless given,
    /// 1..=[`crate::requests::MAX_LIST_LIMIT`] (`requests` checks it).
    pub limit: i64,
    /// `?cursor=`: start after this position, the previous page's `nextCursor`; `None` for the
    /// first page.
    pub after: Option<Cursor>,
    /// `?errorGroup=`: only tasks whose last failure had this cause (12 lower-case hex digits).
    pub error_group: Option<String>,
    /// `?tag=&type=&createdAfter=&createdBefore=&payload.<field>=`.
    pub search: Search,
}

impl ListQuery {
    /// The query in one unambiguous form, defaults applied: equal for two requests that ask for
    /// the same page, whatever order or spelling they used (part of `list`'s `ETag`).
    pub fn canonical(&self) -> String {
        serde_json::json!([
            self.status.map(TaskStatus::as_str),
            self.brand_id.as_ref().map(BrandId::as_str),
            self.error_group,
            self.limit,
            self.after.as_ref().map(Cursor::encode),
            self.search.canonical(),
        ])
        .to_string()
    }
}

/// Which failed tasks a bulk retry by filter selects (checked values).
#[derive(Debug, Default)]
pub struct BulkFilter {
    /// Only tasks of this type (also `search.kind`, which is kept empty here).
    pub kind: Option<String>,
    /// Only tasks that failed for this cause (12 lower-case hex digits).
    pub error_group: Option<String>,
    /// Only tasks of this tenant.
    pub brand_id: Option<BrandId>,
    /// A tag, a creation window and payload fields, as `list` takes them.
    pub search: Search,
}

/// Position after the last task of a page: `(createdAt, taskId)`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// `createdAt` of the last task of the page.
    pub created_at: DateTime,
    /// Its id, which orders tasks created in the same millisecond.
    pub task_id: TaskId,
}

impl Cursor {
    /// The opaque `nextCursor` a client passes back as `?cursor=` (base64url of `millis:taskId`).
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_millis(),
            self.task_id
        ))
    }

    /// Reads a cursor [`Cursor::encode`] made; anything else is an `InvalidQuery`.
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
}
