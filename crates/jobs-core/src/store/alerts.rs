//! Who sends an alert (docs/spec.md §21), decided in MongoDB so instances agree: the
//! `alerts` collection holds one document per error group and window (its failures counted,
//! and whether its alert went out) and one per group seen in the last 30 days.

use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};

use super::{Store, integer};
use crate::error::Result;

const ALERTS: &str = "alerts";
/// A group not seen for this long is new again.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);

fn later(now: DateTime, by: Duration) -> DateTime {
    DateTime::from_millis(now.timestamp_millis() + by.as_millis() as i64)
}

impl Store {
    async fn alerts(&self) -> Result<mongodb::Collection<Document>> {
        let alerts = self.database().await?.collection::<Document>(ALERTS);
        self.alert_indexes
            .get_or_try_init(|| async {
                let ttl = IndexModel::builder()
                    .keys(doc! { "expiresAt": 1 })
                    .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
                    .build();
                self.run(alerts.create_index(ttl)).await.map(drop)
            })
            .await?;
        Ok(alerts)
    }

    /// Counts one failure of `group` in the window starting at `window`: ONE upsert, which
    /// answers the window's count and whether its alert went out.
    pub async fn count_failure(
        &self,
        group: &str,
        window: DateTime,
        length: Duration,
    ) -> Result<(i64, bool)> {
        let alerts = self.alerts().await?;
        let update = alerts
            .find_one_and_update(
                doc! { "_id": window_id(group, window) },
                doc! {
                    "$inc": { "failures": 1 },
                    "$setOnInsert": { "group": group, "windowStart": window,
                        "expiresAt": later(window, length * 2) },
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After);
        let counted = self.run(update).await?;
        let count = counted.as_ref().and_then(|d| integer(d, "failures"));
        let sent = counted.is_some_and(|d| d.contains_key("sent"));
        Ok((count.unwrap_or(1), sent))
    }

    /// Records that `group` failed at `now` and answers whether it is new in the window
    /// starting at `window`: unseen for 30 days before this window. ONE upsert of
    /// `known:<group>`, which keeps the window it was first seen in and moves its expiry 30 days
    /// past each failure; every failure of a window whose alert has not gone out asks, so a
    /// decision cut short is taken again by the window's next failure.
    pub async fn sighted(&self, group: &str, window: DateTime, now: DateTime) -> Result<bool> {
        let alerts = self.alerts().await?;
        let update = alerts
            .find_one_and_update(
                doc! { "_id": format!("known:{group}") },
                doc! {
                    "$set": { "lastAt": now, "expiresAt": later(now, KNOWN_FOR) },
                    "$setOnInsert": { "at": now, "firstWindow": window },
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After);
        let known = self.run(update).await?;
        Ok(known.is_some_and(|d| d.get_datetime("firstWindow").ok() == Some(&window)))
    }

    /// Claims the window's one alert for `kind` until `now + hold`: ONE conditional update,
    /// which only one failure of the window, on any instance, can win while the alert has not
    /// gone out and no other claim holds. The claim won (when it holds until), or `None`.
    pub async fn claim_alert(
        &self,
        (group, window): (&str, DateTime),
        kind: &str,
        now: DateTime,
        hold: Duration,
    ) -> Result<Option<DateTime>> {
        let until = later(now, hold);
        let alerts = self.alerts().await?;
        let free = doc! { "$or": [
            { "claimedUntil": { "$exists": false } },
            { "claimedUntil": { "$lte": now } },
        ] };
        let claim = alerts.update_one(
            doc! { "_id": window_id(group, window), "sent": { "$exists": false }, "$and": [free] },
            doc! { "$set": { "claimedFor": kind, "claimedUntil": until } },
        );
        Ok((self.run(claim).await?.modified_count == 1).then_some(until))
    }

    /// Settles the alert claimed until `claim`: `outcome` is how its delivery ended
    /// (`delivered`, or `unknown` when no answer came: it may have arrived, so it is not sent
    /// again), or `None` when it was refused (the claim is let go for the window's next
    /// failure). Only that claim: one another instance took since (this one's expired, its
    /// clock far behind) is left to its owner.
    pub async fn settle_alert(
        &self,
        (group, window): (&str, DateTime),
        claim: &DateTime,
        kind: &str,
        outcome: Option<&str>,
    ) -> Result<()> {
        let alerts = self.alerts().await?;
        let update = match outcome {
            Some(outcome) => doc! {
                "$set": { "sent": kind, "sentAt": DateTime::now(), "delivery": outcome },
                "$unset": { "claimedUntil": "" },
            },
            None => doc! { "$unset": { "claimedUntil": "", "claimedFor": "" } },
        };
        let ours = doc! { "_id": window_id(group, window), "claimedUntil": claim };
        let settle = alerts.update_one(ours, update);
        self.run(settle).await.map(drop)
    }
}

/// The `_id` of a group's window.
fn window_id(group: &str, window: DateTime) -> String {
    format!("window:{group}:{}", window.timestamp_millis())
}
