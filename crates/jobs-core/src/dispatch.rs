//! Dispatch: how a queued task reaches `process`. The choice between QStash and
//! self-invocation is one pure function of the configuration ([`decide`], SPEC section 7);
//! [`Dispatcher`] carries it out.

use std::time::Duration;

use qstash_rs::client::{Client as QStashClient, Destination, PublishRequest};
use serde_json::json;

use mongodb::bson::DateTime;

use crate::config::Config;
use crate::task::TaskId;

pub const PROCESS_PATH: &str = "/api/jobs?action=process";
/// Header carrying `JOBS_INTERNAL_SECRET` on self-invocations.
pub const INTERNAL_SECRET_HEADER: &str = "x-jobs-internal-secret";
pub const QSTASH_DEV_BASE_URL_MISSING: &str =
    "QStash is enabled in development, but QSTASH_BASE_URL (your ngrok URL) is not set.";
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a task is sent to be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Publish `{taskId}` to QStash, which delivers it to `destination`.
    QStash { destination: String },
    /// POST `{taskId, isSelfInvoke: true}` to `url` directly.
    SelfInvoke { url: String },
}

impl Route {
    pub fn transport(&self) -> &'static str {
        match self {
            Self::QStash { .. } => "qstash",
            Self::SelfInvoke { .. } => "self",
        }
    }

    /// The URL `process` is reached at: QStash signs exactly this as the JWT subject.
    pub fn process_url(&self) -> &str {
        match self {
            Self::QStash { destination } => destination,
            Self::SelfInvoke { url } => url,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Err` holds the exact message of a configuration that cannot dispatch at all.
    pub route: Result<Route, &'static str>,
    /// Production without `QSTASH_TOKEN` works, but should not go unnoticed.
    pub warning: Option<&'static str>,
}

/// The decision table of SPEC section 7, as a pure function.
pub fn decide(config: &Config) -> Decision {
    let use_qstash =
        config.qstash_token.is_some() && (config.is_production || config.use_qstash_in_dev);
    let vercel_base = config
        .vercel_url
        .as_ref()
        .map(|host| format!("https://{host}"));

    if use_qstash {
        let base = config
            .public_url
            .clone()
            .or(if config.is_production {
                vercel_base
            } else {
                None
            })
            .or_else(|| config.qstash_base_url.clone());
        let route = base
            .map(|base| Route::QStash {
                destination: format!("{base}{PROCESS_PATH}"),
            })
            .ok_or(QSTASH_DEV_BASE_URL_MISSING);
        return Decision {
            route,
            warning: None,
        };
    }

    let base = config
        .public_url
        .clone()
        .or(vercel_base)
        .unwrap_or_else(|| format!("http://localhost:{}", config.port));
    let warning = (config.is_production && config.qstash_token.is_none()).then_some(
        "QSTASH_TOKEN is not set in production: tasks are dispatched by self-invocation, \
         which has no retries or delivery guarantees (and process accepts it only with \
         JOBS_INTERNAL_SECRET set)",
    );
    Decision {
        route: Ok(Route::SelfInvoke {
            url: format!("{base}{PROCESS_PATH}"),
        }),
        warning,
    }
}

/// One hand-off of a task to the queue. Its deduplication id names the task, its retry count
/// and the moment it was queued: a re-sent publish of the same hand-off is delivered once,
/// while a new retry is a new message — even one that reuses a retry count because an earlier
/// re-queue failed and was undone (its publish may still have reached QStash).
pub struct Handoff<'a> {
    pub task_id: &'a TaskId,
    pub retry_count: i32,
    pub queued_at: DateTime,
}

impl Handoff<'_> {
    pub fn deduplication_id(&self) -> String {
        format!(
            "{}-r{}-{}",
            self.task_id,
            self.retry_count,
            self.queued_at.timestamp_millis()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("dispatch is not configured: {0}")]
    NotConfigured(&'static str),
    #[error("self-invocation failed: {0}")]
    SelfInvoke(String),
    #[error("QStash publish failed: {0}")]
    Publish(String),
}

/// Sends tasks along the route [`decide`] chose at start-up.
pub struct Dispatcher {
    route: Result<Route, &'static str>,
    http: reqwest::Client,
    qstash: Option<QStashClient>,
    internal_secret: Option<String>,
    qstash_retries: u32,
}

impl Dispatcher {
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, DispatchError> {
        let decision = decide(config);
        if let Some(warning) = decision.warning {
            tracing::warn!(warning);
        }
        let qstash = match (&decision.route, &config.qstash_token) {
            (Ok(Route::QStash { .. }), Some(token)) => {
                let mut builder = QStashClient::builder(token.expose());
                if let Some(url) = &config.qstash_url {
                    builder = builder.base_url(url.clone());
                }
                Some(
                    builder
                        .build()
                        .map_err(|e| DispatchError::Publish(e.to_string()))?,
                )
            }
            _ => None,
        };
        Ok(Self {
            route: decision.route,
            http,
            qstash,
            internal_secret: config
                .internal_secret
                .as_ref()
                .map(|s| s.expose().to_owned()),
            qstash_retries: config.qstash_retries,
        })
    }

    pub fn route(&self) -> Result<&Route, &'static str> {
        self.route.as_ref().map_err(|e| *e)
    }

    /// Sends one task on its way.
    pub async fn dispatch(&self, handoff: Handoff<'_>) -> Result<(), DispatchError> {
        let task_id = handoff.task_id;
        let route = self.route().map_err(DispatchError::NotConfigured)?;
        let sent = match route {
            Route::QStash { destination } => self.publish(destination, &handoff).await,
            Route::SelfInvoke { url } => self.self_invoke(url, task_id).await,
        };
        match &sent {
            Ok(()) => {
                tracing::info!(task_id = %task_id, transport = route.transport(), destination = route.process_url(), "task dispatched")
            }
            Err(error) => {
                tracing::error!(task_id = %task_id, transport = route.transport(), %error, "dispatch failed")
            }
        }
        sent
    }

    async fn publish(&self, destination: &str, handoff: &Handoff<'_>) -> Result<(), DispatchError> {
        let client = self
            .qstash
            .as_ref()
            .ok_or(DispatchError::NotConfigured("QSTASH_TOKEN"))?;
        let failed = |e: &dyn std::fmt::Display| DispatchError::Publish(e.to_string());
        let request =
            PublishRequest::builder(Destination::url(destination).map_err(|e| failed(&e))?)
                .json_body(&json!({ "taskId": handoff.task_id }))
                .map_err(|e| failed(&e))?
                .method(reqwest::Method::POST)
                .deduplication_id(handoff.deduplication_id())
                .retries(self.qstash_retries)
                .build();
        tokio::time::timeout(DISPATCH_TIMEOUT, client.publish(request))
            .await
            .map_err(|_| DispatchError::Publish("timed out".into()))?
            .map_err(|e| failed(&e))?;
        Ok(())
    }

    async fn self_invoke(&self, url: &str, task_id: &TaskId) -> Result<(), DispatchError> {
        let mut request = self
            .http
            .post(url)
            .timeout(DISPATCH_TIMEOUT)
            .json(&json!({ "taskId": task_id, "isSelfInvoke": true }));
        if let Some(secret) = &self.internal_secret {
            request = request.header(INTERNAL_SECRET_HEADER, secret);
        }
        let response = request
            .send()
            .await
            .map_err(|e| DispatchError::SelfInvoke(e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(DispatchError::SelfInvoke(format!(
                "process answered {}",
                response.status()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    fn qstash(base: &str) -> Result<Route, &'static str> {
        Ok(Route::QStash {
            destination: format!("{base}{PROCESS_PATH}"),
        })
    }

    fn self_invoke(base: &str) -> Result<Route, &'static str> {
        Ok(Route::SelfInvoke {
            url: format!("{base}{PROCESS_PATH}"),
        })
    }

    /// (name, environment, expected route, whether a warning is logged)
    type Row = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Result<Route, &'static str>,
        bool,
    );

    /// One row per line of the decision table in SPEC section 7.
    #[test]
    fn a_new_retry_is_a_new_message_even_with_a_reused_retry_count() {
        let task_id = TaskId::parse("t-1").unwrap();
        let at = |ms| Handoff {
            task_id: &task_id,
            retry_count: 1,
            queued_at: DateTime::from_millis(ms),
        };
        assert_eq!(
            at(1000).deduplication_id(),
            at(1000).deduplication_id(),
            "a re-sent publish"
        );
        assert_ne!(
            at(1000).deduplication_id(),
            at(2000).deduplication_id(),
            "a new hand-off"
        );
        assert_eq!(at(1000).deduplication_id(), "t-1-r1-1000");
    }

    #[test]
    fn decision_table() {
        let rows: Vec<Row> = vec![
            (
                "dev, nothing set",
                vec![],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "dev, PORT",
                vec![("PORT", "4100")],
                self_invoke("http://localhost:4100"),
                false,
            ),
            (
                "dev, VERCEL_URL (vercel dev / preview)",
                vec![("VERCEL_URL", "app-git-x.vercel.app")],
                self_invoke("https://app-git-x.vercel.app"),
                false,
            ),
            (
                "dev, JOBS_PUBLIC_URL wins over VERCEL_URL",
                vec![
                    ("JOBS_PUBLIC_URL", "https://jobs.example.com/"),
                    ("VERCEL_URL", "a.vercel.app"),
                ],
                self_invoke("https://jobs.example.com"),
                false,
            ),
            (
                "dev, token but USE_QSTASH_IN_DEV unset",
                vec![
                    ("QSTASH_TOKEN", "t"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                ],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "dev, USE_QSTASH_IN_DEV without token",
                vec![
                    ("USE_QSTASH_IN_DEV", "true"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                ],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "dev, QStash with ngrok base",
                vec![
                    ("QSTASH_TOKEN", "t"),
                    ("USE_QSTASH_IN_DEV", "true"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                ],
                qstash("https://x.ngrok.app"),
                false,
            ),
            (
                "dev, QStash without base URL",
                vec![("QSTASH_TOKEN", "t"), ("USE_QSTASH_IN_DEV", "true")],
                Err(QSTASH_DEV_BASE_URL_MISSING),
                false,
            ),
            (
                "dev, QStash, JOBS_PUBLIC_URL wins over ngrok",
                vec![
                    ("QSTASH_TOKEN", "t"),
                    ("USE_QSTASH_IN_DEV", "true"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                    ("JOBS_PUBLIC_URL", "https://jobs.example.com"),
                ],
                qstash("https://jobs.example.com"),
                false,
            ),
            (
                "dev, QStash ignores VERCEL_URL outside production",
                vec![
                    ("QSTASH_TOKEN", "t"),
                    ("USE_QSTASH_IN_DEV", "true"),
                    ("VERCEL_URL", "a.vercel.app"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                ],
                qstash("https://x.ngrok.app"),
                false,
            ),
            (
                "production (VERCEL_ENV), QStash to VERCEL_URL",
                vec![
                    ("VERCEL_ENV", "production"),
                    ("QSTASH_TOKEN", "t"),
                    ("VERCEL_URL", "app.vercel.app"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                ],
                qstash("https://app.vercel.app"),
                false,
            ),
            (
                "production (NODE_ENV), QStash to VERCEL_URL",
                vec![
                    ("NODE_ENV", "production"),
                    ("QSTASH_TOKEN", "t"),
                    ("VERCEL_URL", "app.vercel.app"),
                ],
                qstash("https://app.vercel.app"),
                false,
            ),
            (
                "production, JOBS_PUBLIC_URL wins over VERCEL_URL",
                vec![
                    ("VERCEL_ENV", "production"),
                    ("QSTASH_TOKEN", "t"),
                    ("VERCEL_URL", "app.vercel.app"),
                    ("JOBS_PUBLIC_URL", "https://app.example.com"),
                ],
                qstash("https://app.example.com"),
                false,
            ),
            (
                "production without token falls back to self-invocation, with a warning",
                vec![
                    ("VERCEL_ENV", "production"),
                    ("VERCEL_URL", "app.vercel.app"),
                ],
                self_invoke("https://app.vercel.app"),
                true,
            ),
        ];
        for (name, vars, route, warns) in rows {
            let decision = decide(&config(&vars));
            assert_eq!(decision.route, route, "{name}");
            assert_eq!(decision.warning.is_some(), warns, "{name}");
        }
    }
}
