//! Payload versions (docs/spec.md §17): what an edit stores, and a task's payload as it was at
//! any version kept. The current payload stays whole in `payload`; `payloadBase` keeps the
//! oldest version kept whole, and `payloadHistory` the RFC 6902 patch of each later version
//! from the one before it (computed with `json-patch`), the newest [`PAYLOAD_HISTORY_LEN`]
//! kept: an edit beyond that folds the oldest patch into the base, and says so.

use mongodb::bson::{self, Bson, DateTime, Document};
use serde_json::Value;

use crate::task::{PAYLOAD_HISTORY_LEN, PayloadBase, PayloadChange, Task, document_to_json};

/// The largest patch an edit may store, as JSON text.
pub const MAX_PATCH_BYTES: usize = 64 * 1024;

/// What an edit stores on its task: the next version, whole, and the history that leads to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    /// The version the edit makes: the task's plus one.
    pub version: i32,
    /// The new payload.
    pub payload: Document,
    /// The kept edits, this one last.
    pub history: Vec<PayloadChange>,
    /// The oldest version kept whole.
    pub base: PayloadBase,
    /// The versions this edit folded into the base (no longer rebuildable), if any:
    /// `(first, last)`.
    pub folded: Option<(i32, i32)>,
}

impl Edit {
    /// The edit of `task`'s payload into `payload` by `by` at `at`; `None` when `payload` is
    /// the current one (nothing to store).
    pub fn of(task: &Task, payload: Document, by: &str, at: DateTime) -> Option<Self> {
        let current = document_to_json(task.payload.clone());
        let patch = json_patch::diff(&current, &document_to_json(payload.clone()));
        if patch.0.is_empty() {
            return None;
        }
        let patch = serde_json::to_string(&patch).expect("a JSON patch is JSON");
        let version = task.payload_version + 1;
        let mut base = task.payload_base.clone().unwrap_or_else(|| PayloadBase {
            version: task.payload_version,
            payload: task.payload.clone(),
        });
        let mut history = task.payload_history.clone();
        history.push(PayloadChange {
            version,
            at,
            by: by.to_owned(),
            patch,
        });
        let mut folded: Option<(i32, i32)> = None;
        while history.len() > PAYLOAD_HISTORY_LEN {
            let oldest = history.remove(0);
            let mut whole = document_to_json(base.payload.clone());
            apply(&mut whole, &oldest).expect("a stored patch applies to the version before it");
            folded = Some((
                folded.map_or(base.version, |(first, _)| first),
                base.version,
            ));
            base = PayloadBase {
                version: oldest.version,
                payload: to_document(&whole),
            };
        }
        Some(Self {
            version,
            payload,
            history,
            base,
            folded,
        })
    }

    /// Why this edit is refused: its patch (JSON text) is above [`MAX_PATCH_BYTES`], so 20
    /// kept patches stay within about 1.3 MiB of a task document. `None`: it is not.
    pub fn refusal(&self) -> Option<String> {
        let len = self.history.last().map_or(0, |change| change.patch.len());
        (len > MAX_PATCH_BYTES).then(|| {
            format!(
                "the change from version {} is {len} bytes as a JSON patch, above the limit of \
                 {MAX_PATCH_BYTES}; send a payload closer to the current one",
                self.version - 1
            )
        })
    }

    /// What the `retried` event says of this edit.
    pub fn message(&self) -> String {
        match self.folded {
            None => format!("Payload edited: version {}", self.version),
            Some((first, last)) if first == last => format!(
                "Payload edited: version {}; version {first} folded into the base",
                self.version
            ),
            Some((first, last)) => format!(
                "Payload edited: version {}; versions {first} to {last} folded into the base",
                self.version
            ),
        }
    }
}

fn apply(whole: &mut Value, change: &PayloadChange) -> Result<(), String> {
    let patch: json_patch::Patch = serde_json::from_str(&change.patch)
        .map_err(|e| format!("version {}: {e}", change.version))?;
    json_patch::patch(whole, &patch).map_err(|e| format!("version {}: {e}", change.version))
}

fn to_document(value: &Value) -> Document {
    match bson::to_bson(value) {
        Ok(Bson::Document(document)) => document,
        _ => Document::new(),
    }
}

/// `task`'s payload as it was at `version`: the current one, or the base with the kept patches
/// up to `version` applied. `Err` says which versions are kept.
pub fn payload_at(task: &Task, version: i32) -> Result<Value, String> {
    let current = task.payload_version;
    if version == current {
        return Ok(document_to_json(task.payload.clone()));
    }
    let oldest = task.payload_base.as_ref().map_or(current, |b| b.version);
    if version > current || version < 1 {
        return Err(format!(
            "there is no payload version {version}: the payload is at version {current}"
        ));
    }
    if version < oldest {
        return Err(format!(
            "payload version {version} is no longer kept: versions {oldest} to {current} are"
        ));
    }
    let base = task
        .payload_base
        .as_ref()
        .expect("an edited task keeps a base");
    let mut whole = document_to_json(base.payload.clone());
    for change in task.payload_history.iter().filter(|c| c.version <= version) {
        apply(&mut whole, change)?;
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::UserId;
    use mongodb::bson::doc;
    use serde_json::json;

    fn task(payload: Document) -> Task {
        Task::new(
            UserId::parse("alice").unwrap(),
            None,
            "demo".into(),
            payload,
            3,
        )
    }

    fn edited(task: &Task, edit: &Edit) -> Task {
        Task {
            payload: edit.payload.clone(),
            payload_version: edit.version,
            payload_history: edit.history.clone(),
            payload_base: Some(edit.base.clone()),
            ..task.clone()
        }
    }

    #[test]
    fn an_edit_stores_the_patch_and_every_kept_version_can_be_rebuilt() {
        let mut t = task(doc! { "steps": 5, "brand": { "name": "a" } });
        let at = DateTime::from_millis(1);
        let same = Edit::of(&t, t.payload.clone(), "user:alice", at);
        assert_eq!(same, None, "the same payload is no edit");
        let edit = Edit::of(
            &t,
            doc! { "steps": 3, "brand": { "name": "a" } },
            "user:alice",
            at,
        )
        .unwrap();
        assert_eq!(edit.version, 2);
        assert_eq!(
            edit.history[0].patch_json(),
            json!([{ "op": "replace", "path": "/steps", "value": 3 }])
        );
        assert_eq!(edit.message(), "Payload edited: version 2");
        t = edited(&t, &edit);
        assert_eq!(
            payload_at(&t, 1).unwrap(),
            json!({ "steps": 5, "brand": { "name": "a" } })
        );
        assert_eq!(
            payload_at(&t, 2).unwrap(),
            json!({ "steps": 3, "brand": { "name": "a" } })
        );
        assert_eq!(
            payload_at(&t, 3),
            Err("there is no payload version 3: the payload is at version 2".into())
        );
        assert!(payload_at(&t, 0).is_err());
    }

    #[test]
    fn an_edit_whose_patch_is_above_64_kib_is_refused() {
        let t = task(doc! { "n": 0 });
        // Control characters are 1 byte in BSON, 6 in JSON text (`\u0001`).
        let small_in_bson = "\u{1}".repeat(12_000);
        let edit = Edit::of(
            &t,
            doc! { "n": small_in_bson },
            "user:alice",
            DateTime::now(),
        )
        .unwrap();
        let refused = edit.refusal().expect("refused");
        assert!(
            refused.starts_with("the change from version 1 is ")
                && refused.contains("above the limit of 65536"),
            "{refused}"
        );
        let fine = Edit::of(&t, doc! { "n": 1 }, "user:alice", DateTime::now()).unwrap();
        assert_eq!(fine.refusal(), None);
    }

    #[test]
    fn edits_beyond_the_cap_fold_into_the_base_and_say_so() {
        let mut t = task(doc! { "n": 0 });
        let mut messages = Vec::new();
        for n in 1..=(PAYLOAD_HISTORY_LEN as i32 + 2) {
            let edit = Edit::of(&t, doc! { "n": n }, "user:alice", DateTime::now()).unwrap();
            messages.push(edit.message());
            t = edited(&t, &edit);
        }
        assert_eq!(t.payload_version, PAYLOAD_HISTORY_LEN as i32 + 3);
        assert_eq!(t.payload_history.len(), PAYLOAD_HISTORY_LEN);
        assert_eq!(t.payload_base.as_ref().unwrap().version, 3);
        assert_eq!(
            messages[PAYLOAD_HISTORY_LEN],
            format!(
                "Payload edited: version {}; version 1 folded into the base",
                PAYLOAD_HISTORY_LEN + 2
            )
        );
        for version in 3..=t.payload_version {
            assert_eq!(
                payload_at(&t, version).unwrap(),
                json!({ "n": version - 1 })
            );
        }
        assert_eq!(
            payload_at(&t, 2),
            Err(format!(
                "payload version 2 is no longer kept: versions 3 to {} are",
                t.payload_version
            ))
        );
    }
}
