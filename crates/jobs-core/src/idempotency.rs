//! Idempotent `create` (docs/spec.md §5): the key a client sends with a create, and the
//! fingerprint of the request it was first used with. The store keeps one record per user and
//! key (`store::idempotency`).

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{JobsError, Result};
use crate::task::{Task, UserId};

/// Longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;
/// How long a key answers its first task; after that the same key creates a new task.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a key came from, so a bad one is reported under the name the client used.
#[derive(Debug, Clone, Copy)]
pub enum KeySource {
    /// The `Idempotency-Key` request header.
    Header,
    /// The `idempotencyKey` body field.
    Body,
}

impl KeySource {
    /// 400 `INVALID_BODY` saying what a key must be.
    pub fn invalid(self) -> JobsError {
        let name = match self {
            Self::Header => "the Idempotency-Key header",
            Self::Body => "idempotencyKey",
        };
        JobsError::InvalidBody(format!(
            "{name} must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces or control characters)"
        ))
    }
}

/// A client's idempotency key: 1..=[`MAX_KEY_LEN`] visible ASCII characters (`!` to `~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key from `source`.
    pub fn parse(raw: &str, source: KeySource) -> Result<Self> {
        let visible = raw.bytes().all(|b| b.is_ascii_graphic());
        match (1..=MAX_KEY_LEN).contains(&raw.len()) && visible {
            true => Ok(Self(raw.to_owned())),
            false => Err(source.invalid()),
        }
    }

    /// The key of a create: the header's, the body's, or none. Both sent and different is an
    /// `INVALID_BODY`: the request would be ambiguous.
    pub fn of_request(header: Option<&str>, body: Option<&str>) -> Result<Option<Self>> {
        let header = header
            .map(|k| Self::parse(k, KeySource::Header))
            .transpose()?;
        let body = body.map(|k| Self::parse(k, KeySource::Body)).transpose()?;
        match (header, body) {
            (Some(h), Some(b)) if h != b => Err(JobsError::InvalidBody(
                "the Idempotency-Key header and idempotencyKey differ; send one of them".into(),
            )),
            (header, body) => Ok(header.or(body)),
        }
    }

    /// The record id of this key for `user`: keys are per user. A user id has no control
    /// characters and a key only visible ones, so the NUL between them cannot be ambiguous.
    pub fn record_id(&self, user: &UserId) -> String {
        format!("{user}\u{0}{}", self.0)
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fingerprint of a create: the SHA-256, in hex, of its `type`, `payload`, `brandId`,
/// `maxRetries` and `autoRetry` as `task` holds them (defaults applied), in canonical JSON
/// (object keys sorted at every depth), so key order and whitespace do not make two requests
/// different. `payload` is the task's payload as the client sent it.
pub fn request_hash(task: &Task, payload: &Value) -> String {
    let mut request = serde_json::json!({
        "type": task.kind,
        "payload": payload,
        "brandId": task.brand_id,
        "maxRetries": task.max_retries,
        "autoRetry": task.auto_retry,
    });
    // Only when sent: a key stored before tags existed keeps its fingerprint.
    if !task.tags.is_empty() {
        request["tags"] = serde_json::json!(task.tags);
    }
    let mut text = String::new();
    canonical_json(&request, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` as JSON with every object's keys sorted. serde_json's `Map` keeps insertion order
/// in this build (bson turns on its `preserve_order` feature), so its own text is not canonical.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{AutoRetry, BrandId};
    use serde_json::json;

    fn task(brand: Option<&str>, max_retries: i32) -> Task {
        let brand = brand.map(|b| BrandId::parse(b).unwrap());
        let user = UserId::parse("alice").unwrap();
        Task::new(user, brand, "demo".into(), Default::default(), max_retries)
    }

    #[test]
    fn the_same_request_in_another_key_order_has_the_same_hash() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": "s"}}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, {"p": 1, "q": 2}]}, "b": 1}"#)
                .unwrap();
        assert_ne!(
            a.to_string(),
            b.to_string(),
            "the texts differ in key order"
        );
        // Two tasks: the id, times and hand-off of a task are not part of the request.
        let hash = request_hash(&task(None, 3), &a);
        assert_eq!(hash, request_hash(&task(None, 3), &b));
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn a_different_request_has_another_hash() {
        let payload = json!({ "steps": 1 });
        let base = request_hash(&task(None, 3), &payload);
        let others = [
            request_hash(&task(None, 3), &json!({ "steps": 2 })),
            request_hash(&task(None, 3), &json!({ "steps": 1.5 })),
            request_hash(&task(None, 3), &json!({})),
            request_hash(&task(None, 4), &payload),
            request_hash(&task(Some("acme"), 3), &payload),
            request_hash(
                &Task {
                    kind: "webhook".into(),
                    ..task(None, 3)
                },
                &payload,
            ),
            request_hash(
                &Task {
                    auto_retry: Some(AutoRetry {
                        attempts: 1,
                        delay_seconds: 10,
                        backoff: Default::default(),
                        max_delay_seconds: 3600,
                    }),
                    ..task(None, 3)
                },
                &payload,
            ),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        let long = "k".repeat(MAX_KEY_LEN);
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        let rows = [
            ("", false),
            ("a", true),
            ("3f6c-9a1e_~!", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("with space", false),
            ("tab\there", false),
            ("nul\u{0}", false),
            ("clé", false),
        ];
        for (raw, ok) in rows {
            assert_eq!(
                IdempotencyKey::parse(raw, KeySource::Body).is_ok(),
                ok,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn header_and_body_keys_must_agree() {
        let pick = |h, b| IdempotencyKey::of_request(h, b).map(|k| k.map(|k| k.0));
        assert_eq!(pick(None, None).unwrap(), None);
        assert_eq!(pick(Some("a"), None).unwrap().as_deref(), Some("a"));
        assert_eq!(pick(None, Some("b")).unwrap().as_deref(), Some("b"));
        assert_eq!(pick(Some("a"), Some("a")).unwrap().as_deref(), Some("a"));
        assert_eq!(
            pick(Some("a"), Some("b")).unwrap_err().code(),
            "INVALID_BODY"
        );
    }
}
