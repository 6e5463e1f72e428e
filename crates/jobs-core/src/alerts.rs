//! Alerts (docs/spec.md §21): a signed POST to `JOBS_ALERT_WEBHOOK_URL` when a new error group
//! appears, when a group's failures pass `JOBS_ALERT_GROUP_THRESHOLD` in a window of
//! `JOBS_ALERT_WINDOW_MINUTES`, or when a task fails with no retries left; at most one per
//! group per window across instances (the store's conditional update decides who sends).
//! Called after a failure is written: it never delays or fails that write, and errors are
//! logged, not returned.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use mongodb::bson::DateTime;
use serde_json::json;
use sha2::Sha256;

use crate::config::{Config, Secret};
use crate::error_groups::Cause;
use crate::processors::webhook::Webhook;
use crate::store::Store;
use crate::task::{TaskId, UserId, rfc3339};

/// The longest deciding whether a failure alerts may take (its writes and the claim).
const DECIDE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an alert's request may take, once its address is resolved and allowed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claim keeps the window's alert for the failure that won it; a claim older than
/// this (its instance died mid-send) may be taken by the window's next failure. Far longer than
/// a send, so instances' clocks may differ by a minute.
const CLAIM_HOLD: Duration = Duration::from_secs(120);
/// Most characters of a template the alert's `text` carries.
const TEMPLATE_CHARS: usize = 300;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-jobs-signature";

/// Why an alert is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// The group has not been seen in the last 30 days.
    NewGroup,
    /// The group's failures in the window passed the threshold.
    GroupThreshold,
    /// The task failed with no retry left, manual or automatic.
    RetriesExhausted,
}

impl AlertKind {
    /// Its name in the body's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewGroup => "new_group",
            Self::GroupThreshold => "group_threshold",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// A failure just written, as alerts see it.
pub struct Failure<'a> {
    /// The task.
    pub task_id: &'a TaskId,
    /// Its owner.
    pub user: &'a UserId,
    /// Its type.
    pub kind: &'a str,
    /// The failure's message (only its template is sent).
    pub message: &'a str,
    /// Whether the task is left with no retry: `failed` for good.
    pub exhausted: bool,
}

/// `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, as Stripe signs its webhooks.
pub fn signature(secret: &[u8], unix: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(format!("{unix}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={unix},v1={hex}")
}

/// Where alerts go, when configured.
struct Destination {
    url: String,
    secret: Secret,
    threshold: i64,
    window: Duration,
    outbound: Webhook,
}

/// The alerts of this process: off unless `JOBS_ALERT_WEBHOOK_URL` is set.
pub struct Alerts {
    store: Arc<Store>,
    destination: Option<Destination>,
}

impl Alerts {
    /// From the settings; off without a URL (and without a secret, which the configuration
    /// refuses anyway).
    pub fn new(config: &Config, store: Arc<Store>) -> Self {
        let destination = match (&config.alert_webhook_url, &config.alert_secret) {
            (Some(url), Some(secret)) => Some(Destination {
                url: url.clone(),
                secret: secret.clone(),
                threshold: config.alert_group_threshold,
                window: config.alert_window,
                outbound: Webhook::new(
                    &config.webhook_allowed_hosts,
                    config.webhook_allow_private_networks,
                ),
            }),
            _ => None,
        };
        Self { store, destination }
    }

    /// Decides whether `failure` alerts (within [`DECIDE_TIMEOUT`]), sends it if so (within
    /// [`SEND_TIMEOUT`]) and records how that ended. Never fails: what goes wrong is logged,
    /// and the failure it follows stands as written.
    pub async fn failed(&self, failure: Failure<'_>) {
        let Some(destination) = &self.destination else {
            return;
        };
        let cause = Cause::of(failure.message);
        let now = DateTime::now();
        let length = destination.window.as_millis().max(1) as i64;
        let window = DateTime::from_millis(now.timestamp_millis() / length * length);
        let key = (cause.group.as_str(), window);
        let decided = tokio::time::timeout(DECIDE_TIMEOUT, async {
            let store = &self.store;
            let (count, sent) = store
                .count_failure(&cause.group, window, destination.window)
                .await?;
            if sent {
                return Ok(None);
            }
            let kind = if store.sighted(&cause.group, window, now).await? {
                AlertKind::NewGroup
            } else if count > destination.threshold {
                AlertKind::GroupThreshold
            } else if failure.exhausted {
                AlertKind::RetriesExhausted
            } else {
                return Ok(None);
            };
            let claim = store
                .claim_alert(key, kind.as_str(), now, CLAIM_HOLD)
                .await?;
            Ok::<_, crate::error::JobsError>(claim.map(|claim| (kind, count, claim)))
        });
        let (kind, count, claim) = match decided.await {
            Ok(Ok(Some(decided))) => decided,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::warn!(%error, group = cause.group, "alert not decided");
                return;
            }
            Err(_) => {
                tracing::warn!(group = cause.group, "alert not decided in time");
                return;
            }
        };
        let body = json!({
            "kind": kind.as_str(),
            "text": text(kind, &failure, &cause, count, destination),
            "group": cause.group,
            "template": cause.template,
            "failuresInWindow": count,
            "windowStart": rfc3339(window),
            "windowMinutes": destination.window.as_secs() / 60,
            "task": { "taskId": failure.task_id, "userId": failure.user, "type": failure.kind },
            "at": rfc3339(now),
        })
        .to_string();
        let (kind, group) = (kind.as_str(), cause.group.as_str());
        let outcome = match destination.send(&body).await {
            Sent::Delivered(status) => {
                tracing::info!(kind, group, status, "alert sent");
                Some("delivered")
            }
            Sent::Refused(error) => {
                tracing::warn!(kind, group, error, "alert not delivered");
                None
            }
            Sent::Unknown(error) => {
                tracing::warn!(kind, group, error, "alert may not have arrived");
                Some("unknown")
            }
        };
        if let Err(error) = self.store.settle_alert(key, &claim, kind, outcome).await {
            tracing::warn!(%error, kind, group, "alert not settled");
        }
    }
}

/// The alert's one sentence, ready for Slack: the template cut to [`TEMPLATE_CHARS`] and
/// every text that reached it from outside escaped as Slack asks (`&`, `<`, `>`), so a failure
/// message cannot mention `@channel` or draw a link.
fn text(
    kind: AlertKind,
    failure: &Failure<'_>,
    cause: &Cause,
    count: i64,
    destination: &Destination,
) -> String {
    let escaped = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut template: String = cause.template.chars().take(TEMPLATE_CHARS).collect();
    if template.len() < cause.template.len() {
        template.push('…');
    }
    let (template, group) = (escaped(&template), escaped(&cause.group));
    let (kind_of_task, task) = (escaped(failure.kind), failure.task_id);
    match kind {
        AlertKind::NewGroup => format!(
            "New failure in jobs: \"{template}\" (group {group}), first on {kind_of_task} task \
             {task}."
        ),
        AlertKind::GroupThreshold => format!(
            "{count} failures of \"{template}\" (group {group}) in {} min, above the threshold \
             of {}.",
            destination.window.as_secs() / 60,
            destination.threshold
        ),
        AlertKind::RetriesExhausted => format!(
            "{kind_of_task} task {task} failed with no retries left: \"{template}\" (group \
             {group})."
        ),
    }
}

/// How an alert's request ended.
enum Sent {
    /// The receiver answered 2xx (its status).
    Delivered(u16),
    /// It was not delivered: the URL not allowed or not resolved, the connection refused, or
    /// the receiver answered an error status.
    Refused(String),
    /// No answer: it may have arrived.
    Unknown(String),
}

impl Destination {
    /// POSTs `body`, signed, to the allow-listed URL, its request within [`SEND_TIMEOUT`]
    /// once the address is resolved and allowed.
    async fn send(&self, body: &str) -> Sent {
        let (url, client) = match self.outbound.client_for_url(&self.url).await {
            Ok(resolved) => resolved,
            Err(error) => return Sent::Refused(error),
        };
        let unix = (DateTime::now().timestamp_millis() / 1000).max(0);
        let signature = signature(self.secret.expose().as_bytes(), unix, body);
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send();
        match tokio::time::timeout(SEND_TIMEOUT, request).await {
            Ok(Ok(answer)) if answer.status().is_success() => {
                Sent::Delivered(answer.status().as_u16())
            }
            Ok(Ok(answer)) => Sent::Refused(format!(
                "the alert URL answered HTTP {}",
                answer.status().as_u16()
            )),
            Ok(Err(error)) if error.is_connect() => {
                Sent::Refused(format!("alert request failed: {error}"))
            }
            Ok(Err(error)) => Sent::Unknown(format!("alert request failed: {error}")),
            Err(_) => Sent::Unknown("no answer within 5 s".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature as a receiver recomputes it (Stripe's scheme: `t.body`, hex); the vector
    /// is Python's `hmac.new(b"whsec_test", b'1700000000.{"a":1}', sha256).hexdigest()`.
    #[test]
    fn signatures_are_stripe_style() {
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(
            signature(b"other", 1_700_000_000, "{\"a\":1}"),
            signature(b"whsec_test", 1_700_000_000, "{\"a\":1}")
        );
    }
}
