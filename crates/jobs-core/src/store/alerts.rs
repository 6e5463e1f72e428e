//! Who sends an alert (docs/spec.md §21), decided in MongoDB so instances agree: the
//! `alerts` collection holds one document per error group and window (its failures counted,
//! and whether its alert went out) and one per group seen in the last 30 days.

use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};

use super::{Store, integer};
use crate::error::{Result, is_duplicate_key};

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
    /// answers the window's count with it.
    pub async fn count_failure(
        &self,
        group: &str,
        window: DateTime,
        length: Duration,
    ) -> Result<i64> {
        let alerts = self.alerts().await?;
        let update = alerts
            .find_one_and_update(
                doc! { "_id": format!("window:{group}:{}", window.timestamp_millis()) },
                doc! {
                    "$inc": { "failures": 1 },
                    "$setOnInsert": { "group": group, "windowStart": window,
                        "expiresAt": later(window, length * 2) },
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After);
        let counted = self.run(update).await?;
        Ok(counted.and_then(|d| integer(&d, "failures")).unwrap_or(1))
    }

    /// Whether `group` is new: not seen in the last 30 days. ONE insert; its duplicate-key
    /// answer means another failure saw it first.
    pub async fn first_sighting(&self, group: &str, now: DateTime) -> Result<bool> {
        let alerts = self.alerts().await?;
        let insert = alerts.insert_one(
            doc! { "_id": format!("known:{group}"), "at": now, "expiresAt": later(now, KNOWN_FOR) },
        );
        match insert.await {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Claims the window's one alert for `kind`: ONE conditional update, which only one
    /// failure of the window, on any instance, can win.
    pub async fn claim_alert(&self, group: &str, window: DateTime, kind: &str) -> Result<bool> {
        let alerts = self.alerts().await?;
        let claim = alerts.update_one(
            doc! { "_id": format!("window:{group}:{}", window.timestamp_millis()),
            "sent": { "$exists": false } },
            doc! { "$set": { "sent": kind, "sentAt": DateTime::now() } },
        );
        Ok(self.run(claim).await?.modified_count == 1)
    }
}
