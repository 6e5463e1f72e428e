//! The answer of `groups` for `failed` kept per user (docs/spec.md §14), so an open page does
//! not re-group a large user's failures every time it asks. One document per user in
//! `failureGroups`: `{_id: <userId>, version, cached: {version, at, groups}}`.
//!
//! - `version` counts the changes to the user's `failed` tasks: every transition into or out
//!   of `failed` adds one right after its own write ([`Store::failed_changed`]).
//! - `cached` is the aggregation's answer at `cached.version`, stored only while `version` is
//!   still the one read before aggregating, so an answer computed before a change can never be
//!   stored as the answer after it.
//! - It is used while `version` has not moved and for at most `JOBS_GROUPS_CACHE_SECONDS` by
//!   the reader's clock: the bound on what a process killed between a task's write and its
//!   `version`, or an earlier version of the service during a rolling deploy, can leave stale.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};

use super::{PRIMARY, Store, integer};
use crate::error::{Result, is_duplicate_key};
use crate::task::{TaskStatus, UserId};

const FAILURE_GROUPS: &str = "failureGroups";
/// The longest a note may take: it follows a transition that already took place.
const NOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `failureGroups` holds for one user, as read.
#[derive(Debug, Default)]
pub struct Summary {
    /// How many times the user's `failed` tasks changed (0: never, or no document yet).
    pub version: i64,
    /// The groups aggregated at `cached.0`, at `cached.1` by the writer's clock.
    cached: Option<(i64, DateTime, Vec<Document>)>,
}

impl Summary {
    /// The kept groups, if they were aggregated at the current version less than `max_age` ago
    /// (a time in the future, a writer's clock ahead of ours, does not count as fresh).
    pub fn fresh(&self, now: DateTime, max_age: Duration) -> Option<&[Document]> {
        let (version, at, groups) = self.cached.as_ref()?;
        let age = now.timestamp_millis() - at.timestamp_millis();
        let fresh = *version == self.version && (0..max_age.as_millis() as i64).contains(&age);
        fresh.then_some(groups.as_slice())
    }
}

impl Store {
    /// `user`'s summary: ONE `find` by `_id`.
    pub async fn failure_summary(&self, user: &UserId) -> Result<Summary> {
        let summaries = self
            .database()
            .await?
            .collection::<Document>(FAILURE_GROUPS);
        // From the primary, as the aggregation: a lagging secondary could pair a new version
        // with old tasks.
        let find = summaries
            .find_one(doc! { "_id": user.as_str() })
            .selection_criteria(PRIMARY);
        let found = self.run(find).await?;
        let Some(found) = found else {
            return Ok(Summary::default());
        };
        let cached = found.get_document("cached").ok().and_then(|cached| {
            let groups = cached.get_array("groups").ok()?;
            let groups = groups.iter().filter_map(Bson::as_document).cloned();
            Some((
                integer(cached, "version").unwrap_or(0),
                *cached.get_datetime("at").ok()?,
                groups.collect(),
            ))
        });
        Ok(Summary {
            version: integer(&found, "version").unwrap_or(0),
            cached,
        })
    }

    /// `user`'s `failed` tasks grouped by cause ([`Store::error_groups`]), from the answer kept
    /// for them while it is fresh ([`Summary::fresh`]): ONE `find`; otherwise aggregated
    /// and kept, three commands. `max_age` zero: the aggregation alone.
    pub async fn failed_groups(&self, user: &UserId, max_age: Duration) -> Result<Vec<Document>> {
        if max_age.is_zero() {
            return self.error_groups(user, TaskStatus::Failed).await;
        }
        // The kept answer's age counts from before the version was read, not from after the
        // aggregation.
        let read_at = DateTime::now();
        let summary = self.failure_summary(user).await?;
        if let Some(groups) = summary.fresh(read_at, max_age) {
            return Ok(groups.to_vec());
        }
        let groups = self.error_groups(user, TaskStatus::Failed).await?;
        // Not kept: answered all the same, and aggregated again next time.
        if let Err(error) = self
            .keep_failure_groups(user, (summary.version, read_at), &groups)
            .await
        {
            tracing::warn!(user = %user, %error, "could not keep the groups of failed tasks");
        }
        Ok(groups)
    }

    /// Keeps `groups`, aggregated after reading `version` at `read_at`, unless the version
    /// moved since (then the answer may predate a change and is dropped): ONE `update` with
    /// upsert, whose insert breaks `_id`'s uniqueness exactly when another version is stored.
    pub async fn keep_failure_groups(
        &self,
        user: &UserId,
        (version, read_at): (i64, DateTime),
        groups: &[Document],
    ) -> Result<()> {
        let summaries = self
            .database()
            .await?
            .collection::<Document>(FAILURE_GROUPS);
        let cached = doc! { "version": version, "at": read_at, "groups": groups.to_vec() };
        let filter = match version {
            0 => doc! { "_id": user.as_str(), "version": { "$in": [0_i64, Bson::Null] } },
            _ => doc! { "_id": user.as_str(), "version": version },
        };
        let kept = summaries
            .update_one(filter, doc! { "$set": { "cached": cached } })
            .upsert(true);
        self.run(async {
            match kept.await {
                Err(error) if is_duplicate_key(&error) => Ok(()),
                other => other.map(drop),
            }
        })
        .await
    }

    /// Notes that `user`'s `failed` tasks changed (or may have: a write that did not answer):
    /// ONE `update` adding one to its version, after the transition's own write, given at most
    /// [`NOTE_TIMEOUT`] (an outage must not double a transition's wait); once more only when
    /// its upsert raced a keep's insert of the same `_id`. A failure is logged, not returned:
    /// the transition took place, and the kept answer expires by itself ([`Summary::fresh`]).
    pub(crate) async fn failed_changed(&self, user: &UserId) {
        let note = async || {
            let database = self.database().await.map_err(|e| e.to_string())?;
            let summaries = database.collection::<Document>(FAILURE_GROUPS);
            let bump = summaries
                .update_one(
                    doc! { "_id": user.as_str() },
                    doc! { "$inc": { "version": 1_i64 } },
                )
                .upsert(true);
            let timeout = self.operation_timeout.min(NOTE_TIMEOUT);
            match tokio::time::timeout(timeout, bump.into_future()).await {
                Ok(Err(error)) if is_duplicate_key(&error) => Ok(false),
                Ok(outcome) => outcome.map(|_| true).map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        };
        let noted = match note().await {
            Ok(false) => note().await, // the keep's insert won: the document exists now
            other => other,
        };
        if let Err(error) = noted {
            tracing::warn!(user = %user, error, "could not note a change of failed tasks");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_groups_are_fresh_only_at_the_current_version_and_within_their_age() {
        let at = DateTime::from_millis(1_000_000);
        let groups = vec![doc! { "_id": "g" }];
        let summary = |version, cached_version| Summary {
            version,
            cached: Some((cached_version, at, groups.clone())),
        };
        let ms = |n: i64| DateTime::from_millis(1_000_000 + n);
        let max_age = Duration::from_secs(30);
        // (summary, now, fresh)
        let rows = [
            (summary(3, 3), ms(0), true),
            (summary(3, 3), ms(29_999), true),
            (summary(3, 3), ms(30_000), false),
            (summary(4, 3), ms(10), false),
            (summary(3, 3), ms(-1), false),
            (Summary::default(), ms(10), false),
        ];
        for (summary, now, fresh) in rows {
            assert_eq!(
                summary.fresh(now, max_age).is_some(),
                fresh,
                "{summary:?} at {now}"
            );
        }
        assert!(summary(3, 3).fresh(ms(1), Duration::ZERO).is_none());
    }
}
