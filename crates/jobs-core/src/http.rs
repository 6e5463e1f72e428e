//! HTTP plumbing the edge needs and should not re-invent: the action table, query and body
//! decoding with their limits, and the development-only static file server.

use std::collections::HashMap;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use crate::error::{JobsError, Result};

/// Largest request body accepted (docs/spec.md §5).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The actions of docs/spec.md §5, each with its one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `create` (POST): stores a new task and hands it off.
    Create,
    /// `get` (GET): one of the caller's tasks.
    Get,
    /// `list` (GET): the caller's tasks, newest first, a page at a time.
    List,
    /// `retry` (POST): re-queues a failed task of the caller, within its retry budget.
    Retry,
    /// `cancel` (POST): stops a queued, scheduled or processing task of the caller.
    Cancel,
    /// `process` (POST): a delivery from QStash or a self-invocation; claims the task and runs it.
    Process,
    /// `sweep` (GET): the rescuer: re-sends lost hand-offs, hands off due automatic retries, and
    /// fails tasks whose worker was lost or that were never picked up.
    Sweep,
    /// `health` (GET): the database, dispatch and deployed settings, checked.
    Health,
    /// `deliveryFailed` (POST): QStash's failure callback, signed; fails a task whose hand-off
    /// QStash gave up delivering.
    DeliveryFailed,
    /// `retryMany` (POST): retries many failed tasks of the caller, by ids or by filter.
    RetryMany,
    /// `groups` (GET): the caller's failures grouped by cause.
    Groups,
    /// `watch` (GET): a `text/event-stream` of changes to the caller's tasks.
    Watch,
    /// `metrics` (GET): the OpenMetrics text, for a scraper holding `JOBS_METRICS_TOKEN`.
    Metrics,
    /// `failures` (GET): the caller's failures, retries and recoveries per hour, last 24 h.
    Failures,
}

impl Action {
    /// Every action, in the order of docs/spec.md §5.
    pub const ALL: [Action; 14] = [
        Self::Create,
        Self::Get,
        Self::List,
        Self::Retry,
        Self::Cancel,
        Self::Process,
        Self::Sweep,
        Self::Health,
        Self::DeliveryFailed,
        Self::RetryMany,
        Self::Groups,
        Self::Watch,
        Self::Metrics,
        Self::Failures,
    ];

    /// The `?action=` value that names it (lower-case, matched exactly).
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::Retry => "retry",
            Self::Cancel => "cancel",
            Self::Process => "process",
            Self::Sweep => "sweep",
            Self::Health => "health",
            Self::DeliveryFailed => "deliveryFailed",
            Self::RetryMany => "retryMany",
            Self::Groups => "groups",
            Self::Watch => "watch",
            Self::Metrics => "metrics",
            Self::Failures => "failures",
        }
    }

    /// The one method it takes; HEAD is also accepted where this is GET.
    pub fn method(self) -> Method {
        match self {
            Self::Create
            | Self::Retry
            | Self::Cancel
            | Self::Process
            | Self::DeliveryFailed
            | Self::RetryMany => Method::POST,
            Self::Get
            | Self::List
            | Self::Sweep
            | Self::Health
            | Self::Groups
            | Self::Watch
            | Self::Metrics
            | Self::Failures => Method::GET,
        }
    }

    /// POST actions: their input is a JSON body, not the query.
    pub fn takes_body(self) -> bool {
        self.method() == Method::POST
    }

    /// The action named by `?action=`, if `method` is the one it takes (HEAD counts as GET).
    pub fn route(name: Option<&str>, method: &Method) -> Result<Self> {
        let name = name.ok_or_else(|| JobsError::UnknownAction("(none); pass ?action=".into()))?;
        let action = Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| JobsError::UnknownAction(name.chars().take(64).collect()))?;
        let expected = action.method();
        if *method == expected || (*method == Method::HEAD && expected == Method::GET) {
            Ok(action)
        } else {
            Err(JobsError::MethodNotAllowed {
                method: method.as_str().chars().take(16).collect(),
                action: action.name(),
                allow: if expected == Method::GET {
                    "GET"
                } else {
                    "POST"
                },
            })
        }
    }
}

/// Query parameters; a repeated parameter is ambiguous and refused.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Decodes a raw query string (`None` counts as empty); a repeated parameter is an
    /// `InvalidQuery`.
    pub fn parse(raw: Option<&str>) -> Result<Self> {
        let mut params = HashMap::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if params.insert(key.to_string(), value.into_owned()).is_some() {
                return Err(JobsError::InvalidQuery(format!(
                    "parameter {key} is repeated"
                )));
            }
        }
        Ok(Self(params))
    }

    /// The decoded value of `key`, if present (possibly empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The parameters whose name starts with `prefix`, the rest of the name with the value,
    /// sorted by name.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = self
            .0
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix(prefix)?.to_owned(), value.clone())))
            .collect();
        found.sort();
        found
    }
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
pub async fn read_body<B>(body: B, content_length: Option<u64>) -> Result<Bytes>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = JobsError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    if content_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(error) => Err(JobsError::InvalidBody(format!(
            "could not read the body: {error}"
        ))),
    }
}

/// Decodes a JSON body into a typed request; unknown and ill-typed fields are errors.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(JobsError::InvalidBody("expected a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| JobsError::InvalidBody(e.to_string()))
}

/// The security headers of every Task Manager page response, in development from the function
/// (`JOBS_STATIC_DIR`) and on Vercel from `vercel.json` `headers`: one set, compared by a test.
/// The page has no inline script, event handler or style attribute, and calls only `/api/jobs`
/// on its own origin; `frame-ancestors 'none'` keeps it out of other sites' frames.
pub const PAGE_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

/// Development only: a file of the Task Manager page under `dir`, by URL path.
pub async fn static_file(dir: &str, path: &str) -> Option<(&'static str, Vec<u8>)> {
    let relative = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    let safe = relative
        .split('/')
        .all(|part| !part.is_empty() && part != ".." && !part.starts_with('.'));
    if !safe {
        return None;
    }
    let content_type = match relative.rsplit('.').next()? {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => return None,
    };
    let bytes = tokio::fs::read(std::path::Path::new(dir).join(relative))
        .await
        .ok()?;
    Some((content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_table() {
        let rows: [(Option<&str>, Method, std::result::Result<Action, &str>); 12] = [
            (Some("retry"), Method::POST, Ok(Action::Retry)),
            (Some("retryMany"), Method::POST, Ok(Action::RetryMany)),
            (Some("groups"), Method::GET, Ok(Action::Groups)),
            (
                Some("deliveryFailed"),
                Method::POST,
                Ok(Action::DeliveryFailed),
            ),
            (Some("retryMany"), Method::GET, Err("METHOD_NOT_ALLOWED")),
            (Some("list"), Method::GET, Ok(Action::List)),
            (Some("health"), Method::HEAD, Ok(Action::Health)),
            (Some("retry"), Method::GET, Err("METHOD_NOT_ALLOWED")),
            (Some("get"), Method::DELETE, Err("METHOD_NOT_ALLOWED")),
            (Some("drop"), Method::POST, Err("UNKNOWN_ACTION")),
            (Some("RETRY"), Method::POST, Err("UNKNOWN_ACTION")),
            (None, Method::GET, Err("UNKNOWN_ACTION")),
        ];
        for (name, method, expected) in rows {
            let got = Action::route(name, &method).map_err(|e| e.code());
            assert_eq!(got, expected, "{name:?} {method}");
        }
    }

    /// The development server and Vercel send the same page headers: `PAGE_HEADERS` is the one
    /// `headers` entry of vercel.json, which covers every path outside `/api/`.
    #[test]
    fn page_headers_are_the_headers_of_vercel_json() {
        let config: serde_json::Value =
            serde_json::from_str(include_str!("../../../vercel.json")).expect("vercel.json");
        let entries = config["headers"]
            .as_array()
            .expect("vercel.json has `headers`");
        assert_eq!(entries.len(), 1, "one `headers` entry, the page's");
        assert_eq!(entries[0]["source"], "/((?!api/).*)");
        let in_vercel_json: Vec<(&str, &str)> = entries[0]["headers"]
            .as_array()
            .expect("a list of {key, value}")
            .iter()
            .map(|h| (h["key"].as_str().unwrap(), h["value"].as_str().unwrap()))
            .collect();
        assert_eq!(in_vercel_json, PAGE_HEADERS);
    }

    #[test]
    fn repeated_query_parameters_are_refused() {
        assert!(Query::parse(Some("taskId=a&taskId=b")).is_err());
        let q = Query::parse(Some("taskId=a%20b&limit=5")).unwrap();
        assert_eq!(q.get("taskId"), Some("a b"));
    }
}
