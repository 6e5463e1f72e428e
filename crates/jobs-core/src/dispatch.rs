//! Dispatch: how a queued task reaches `process`. The choice between QStash and
//! self-invocation is one pure function of the configuration ([`decide`], docs/spec.md §7);
//! [`Dispatcher`] carries it out.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::DateTime;
use qstash_rs::client::{BatchRequest, Client as QStashClient, Destination, PublishRequest};
use serde_json::json;

use crate::config::{Config, INTERNAL_SECRET_HEADER, Secret};
use crate::task::{Handoff, TaskId};

/// The function's path; `?action=` names what is called.
pub const FUNCTION_PATH: &str = "/api/jobs";
/// Vercel's header that lets automation through Deployment Protection.
pub const PROTECTION_BYPASS_HEADER: &str = "x-vercel-protection-bypass";
/// Dispatch error: QStash in development without a URL QStash can reach (docs/spec.md §7).
pub const QSTASH_DEV_BASE_URL_MISSING: &str =
    "QStash is enabled in development, but QSTASH_BASE_URL (your ngrok URL) is not set.";
/// Dispatch error: QStash on a deployment without any URL of its own.
pub const QSTASH_PUBLIC_URL_MISSING: &str =
    "QStash needs a public URL for this deployment: set JOBS_PUBLIC_URL.";
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Self-invocations a bulk retry keeps in flight at once (docs/spec.md §13).
pub const SELF_INVOCATIONS_IN_FLIGHT: usize = 8;
/// Messages per QStash `POST /v2/batch` (docs/spec.md §7): QStash documents no count limit for
/// a batch, only its request size (1 MB on the Free and Pay-as-you-go plans) and messages per
/// second; 100 hand-offs are about 30 KB. More hand-offs are split into several batches.
pub const QSTASH_BATCH: usize = 100;
/// QStash batches a bulk retry keeps in flight at once: a call's 1,000 hand-offs in one round
/// (Upstash applies no requests-per-second limit to `/v2/batch`, only to its management API).
pub const QSTASH_BATCHES_IN_FLIGHT: usize = 10;

/// How a hand-off reaches `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Publish `{taskId, handoffId}` to QStash, which delivers it to `process`.
    QStash,
    /// POST `{taskId, handoffId, isSelfInvoke: true}` to `process` directly.
    SelfInvoke,
}

/// Where and how a task is sent to be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// QStash or self-invocation.
    pub transport: Transport,
    /// Normalised by the `url` crate exactly as QStash's client normalises a destination, so
    /// the URL published to and the URL a signature is checked against are one string.
    base: String,
    /// `VERCEL_AUTOMATION_BYPASS_SECRET`, sent with every hand-off.
    pub protection_bypass: Option<Secret>,
}

impl Route {
    /// `qstash` or `self`, as `health` and the logs name it.
    pub fn transport(&self) -> &'static str {
        match self.transport {
            Transport::QStash => "qstash",
            Transport::SelfInvoke => "self",
        }
    }

    /// `<base>/api/jobs?action=<action>`: what QStash delivers to (and signs as the JWT
    /// subject), or what self-invocation calls.
    pub fn url(&self, action: &str) -> String {
        format!("{}{FUNCTION_PATH}?action={action}", self.base)
    }

    /// Where hand-offs are delivered: `<base>/api/jobs?action=process`.
    pub fn process_url(&self) -> String {
        self.url("process")
    }
}

/// What [`decide`] chose for a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Err` holds the exact message of a configuration that cannot dispatch at all.
    pub route: Result<Route, String>,
    /// Deployed without `QSTASH_TOKEN` works, but should not go unnoticed.
    pub warning: Option<&'static str>,
}

/// The decision table of docs/spec.md §7, as a pure function.
pub fn decide(config: &Config) -> Decision {
    let local = !config.is_deployed();
    let use_qstash = config.qstash_token.is_some() && (!local || config.use_qstash_in_dev);
    let from = |name: &'static str, value: &str| normalise_base(name, value);
    let base = if let Some(url) = &config.public_url {
        from("JOBS_PUBLIC_URL", url)
    } else if use_qstash && local {
        match &config.qstash_base_url {
            Some(url) => from("QSTASH_BASE_URL", url),
            None => Err(QSTASH_DEV_BASE_URL_MISSING.to_owned()),
        }
    } else if let (true, Some(host)) = (config.vercel_dev, &config.vercel_url) {
        from("VERCEL_URL", &format!("http://{host}"))
    } else if let (true, Some(host)) = (
        config.is_production(),
        &config.vercel_project_production_url,
    ) {
        from("VERCEL_PROJECT_PRODUCTION_URL", &format!("https://{host}"))
    } else if let (false, Some(host)) = (local, &config.vercel_url) {
        from("VERCEL_URL", &format!("https://{host}"))
    } else if use_qstash {
        Err(QSTASH_PUBLIC_URL_MISSING.to_owned())
    } else {
        from("PORT", &format!("http://localhost:{}", config.port))
    };
    let transport = if use_qstash {
        Transport::QStash
    } else {
        Transport::SelfInvoke
    };
    let warning = (!local && config.qstash_token.is_none()).then_some(
        "QSTASH_TOKEN is not set on a deployment: tasks are dispatched by self-invocation, \
         which has no retries or delivery guarantees (and process accepts it only with \
         JOBS_INTERNAL_SECRET set)",
    );
    Decision {
        route: base.map(|base| Route {
            transport,
            base,
            protection_bypass: config.automation_bypass_secret.clone(),
        }),
        warning,
    }
}

/// `scheme://host[:port][/path]` as the `url` crate prints it (lower-case host, default port
/// dropped), without a trailing slash; only http(s) without query or fragment.
fn normalise_base(name: &str, value: &str) -> Result<String, String> {
    let url = crate::config::parse_base_url(value)
        .map_err(|why| format!("{name} is not a valid base URL ({why}): {value:?}"))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `Upstash-Not-Before` for a hand-off due at `at`: whole unix seconds, rounded up, so QStash
/// never delivers before it is due and the claim's skew allowance is left for clock skew.
pub fn not_before_seconds(at: DateTime) -> u64 {
    (at.timestamp_millis().max(0) as u64).div_ceil(1000)
}

/// Why a hand-off was not sent; the caller decides what that means for the task.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No route: the configuration cannot dispatch (the sentence says why).
    #[error("dispatch is not configured: {0}")]
    NotConfigured(String),
    /// `process` could not be reached, or did not answer 2xx within the timeout.
    #[error("self-invocation failed: {0}")]
    SelfInvoke(String),
    /// QStash refused the publish, was unreachable, or did not answer in time.
    #[error("QStash publish failed: {0}")]
    Publish(String),
}

/// A crash point armed to fail a hand-off: sent, but its answer lost.
impl From<crate::failpoints::Injected> for DispatchError {
    fn from(injected: crate::failpoints::Injected) -> Self {
        Self::Publish(format!("answer lost at crash point {}", injected.0))
    }
}

/// Sends tasks along the route [`decide`] chose at start-up.
pub struct Dispatcher {
    route: Result<Route, String>,
    http: reqwest::Client,
    qstash: Option<QStashClient>,
    internal_secret: Option<Secret>,
    qstash_retries: u32,
}

impl Dispatcher {
    /// Decides the route once (logging a deployed fallback) and builds the QStash client
    /// when the route needs it.
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, DispatchError> {
        let decision = decide(config);
        if let Some(warning) = decision.warning {
            tracing::warn!(warning);
        }
        let qstash = match (&decision.route, &config.qstash_token) {
            (Ok(route), Some(token)) if route.transport == Transport::QStash => {
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
            internal_secret: config.internal_secret.clone(),
            qstash_retries: config.qstash_retries,
        })
    }

    /// The route, or the sentence saying why there is none.
    pub fn route(&self) -> Result<&Route, &str> {
        self.route.as_ref().map_err(String::as_str)
    }

    /// Sends one hand-off of a task on its way: `{taskId, handoffId}` to `process`.
    pub async fn dispatch(&self, task_id: &TaskId, handoff: &Handoff) -> Result<(), DispatchError> {
        let route = self
            .route()
            .map_err(|e| DispatchError::NotConfigured(e.to_owned()))?;
        let destination = route.process_url();
        let sent = match route.transport {
            Transport::QStash => self.publish(route, task_id, handoff).await,
            Transport::SelfInvoke => {
                self.self_invoke(route, &destination, task_id, handoff)
                    .await
            }
        };
        match &sent {
            Ok(()) => {
                tracing::info!(task_id = %task_id, transport = route.transport(), destination, "task dispatched")
            }
            Err(error) => {
                tracing::error!(task_id = %task_id, transport = route.transport(), %error, "dispatch failed")
            }
        }
        sent
    }

    /// The publish of one hand-off: `{taskId, handoffId}` to `process`, deduplicated on the
    /// hand-off, with the failure callback, the protection bypass, and `Upstash-Not-Before`
    /// when the hand-off is due later (a scheduled automatic retry).
    fn publish_request(
        &self,
        route: &Route,
        task_id: &TaskId,
        handoff: &Handoff,
    ) -> Result<PublishRequest, DispatchError> {
        let failed = |e: &dyn std::fmt::Display| DispatchError::Publish(e.to_string());
        let destination = route.process_url();
        let mut request =
            PublishRequest::builder(Destination::url(&destination).map_err(|e| failed(&e))?)
                .json_body(&json!({ "taskId": task_id, "handoffId": handoff.dedup_id }))
                .map_err(|e| failed(&e))?
                .method(reqwest::Method::POST)
                // A re-sent publish of the same hand-off is delivered once.
                .deduplication_id(handoff.dedup_id.clone())
                .retries(self.qstash_retries)
                // When QStash gives up, it says so at once instead of leaving the task queued.
                .failure_callback(route.url("deliveryFailed"));
        if handoff.at > DateTime::now() {
            request = request.not_before(not_before_seconds(handoff.at));
        }
        if let Some(bypass) = &route.protection_bypass {
            // qstash-rs sends the first as `Upstash-Forward-x-vercel-protection-bypass`, and
            // passes `Upstash-*` names through as they are: QStash sends the second's suffix
            // with the failure callback, which a protected deployment refuses without it.
            request = request
                .header(PROTECTION_BYPASS_HEADER, bypass.expose())
                .map_err(|e| failed(&e))?
                .header(
                    &format!("Upstash-Failure-Callback-Forward-{PROTECTION_BYPASS_HEADER}"),
                    bypass.expose(),
                )
                .map_err(|e| failed(&e))?;
        }
        Ok(request.build())
    }

    async fn publish(
        &self,
        route: &Route,
        task_id: &TaskId,
        handoff: &Handoff,
    ) -> Result<(), DispatchError> {
        let client = self.qstash_client()?;
        let request = self.publish_request(route, task_id, handoff)?;
        tokio::time::timeout(DISPATCH_TIMEOUT, client.publish(request))
            .await
            .map_err(|_| DispatchError::Publish("timed out".into()))?
            .map_err(|e| DispatchError::Publish(e.to_string()))?;
        Ok(())
    }

    fn qstash_client(&self) -> Result<&QStashClient, DispatchError> {
        self.qstash
            .as_ref()
            .ok_or_else(|| DispatchError::NotConfigured("QSTASH_TOKEN".into()))
    }

    /// Whether a hand-off can wait in the queue until it is due (QStash's
    /// `Upstash-Not-Before`); self-invocation cannot.
    pub fn can_wait(&self) -> bool {
        matches!(self.route(), Ok(route) if route.transport == Transport::QStash)
    }

    /// Sends many hand-offs at once: through QStash in batches of [`QSTASH_BATCH`] (ONE `POST
    /// /v2/batch` each, [`QSTASH_BATCHES_IN_FLIGHT`] at a time), by self-invocation with at
    /// most [`SELF_INVOCATIONS_IN_FLIGHT`] at a time. Returns, per hand-off in order, whether it
    /// was sent.
    pub async fn dispatch_many(&self, handoffs: &[(TaskId, Handoff)]) -> Vec<bool> {
        let Ok(route) = self.route() else {
            return vec![false; handoffs.len()];
        };
        if handoffs.is_empty() {
            return Vec::new();
        }
        match route.transport {
            Transport::QStash => {
                // Boxed up front, as below.
                let batches: Vec<Pin<Box<dyn Future<Output = Vec<bool>> + Send + '_>>> = handoffs
                    .chunks(QSTASH_BATCH)
                    .map(|batch| {
                        let publish = async move {
                            match self.publish_batch(route, batch).await {
                                Ok(sent) => sent,
                                Err(error) => {
                                    tracing::error!(count = batch.len(), %error, "batch publish failed");
                                    vec![false; batch.len()]
                                }
                            }
                        };
                        Box::pin(publish) as Pin<Box<dyn Future<Output = Vec<bool>> + Send + '_>>
                    })
                    .collect();
                let sent: Vec<Vec<bool>> = futures_util::stream::iter(batches)
                    .buffered(QSTASH_BATCHES_IN_FLIGHT)
                    .collect()
                    .await;
                sent.concat()
            }
            Transport::SelfInvoke => {
                let url = route.process_url();
                // Boxed up front: a closure over borrowed hand-offs inside `buffered` would
                // not be `Send` for every lifetime, which the request's future must be.
                let calls: Vec<Pin<Box<dyn Future<Output = bool> + Send + '_>>> = handoffs
                    .iter()
                    .map(|(task_id, handoff)| {
                        let url = url.as_str();
                        let call = async move {
                            let sent = self.self_invoke(route, url, task_id, handoff).await;
                            sent.is_ok()
                        };
                        Box::pin(call) as Pin<Box<dyn Future<Output = bool> + Send + '_>>
                    })
                    .collect();
                futures_util::stream::iter(calls)
                    .buffered(SELF_INVOCATIONS_IN_FLIGHT)
                    .collect()
                    .await
            }
        }
    }

    /// One `POST /v2/batch`; QStash answers each message in order, and an item can fail on
    /// its own (qstash-rs does not check items: an `error`, or no `messageId`, is a failure).
    async fn publish_batch(
        &self,
        route: &Route,
        handoffs: &[(TaskId, Handoff)],
    ) -> Result<Vec<bool>, DispatchError> {
        let client = self.qstash_client()?;
        let requests = handoffs
            .iter()
            .map(|(task_id, handoff)| {
                self.publish_request(route, task_id, handoff)
                    .map(BatchRequest::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let answers = tokio::time::timeout(DISPATCH_TIMEOUT, client.batch(requests))
            .await
            .map_err(|_| DispatchError::Publish("timed out".into()))?
            .map_err(|e| DispatchError::Publish(e.to_string()))?;
        let sent: Vec<bool> = (0..handoffs.len())
            .map(|i| {
                answers
                    .get(i)
                    .is_some_and(|a| a.error.is_none() && a.message_id.is_some())
            })
            .collect();
        let published = sent.iter().filter(|s| **s).count();
        tracing::info!(
            count = handoffs.len(),
            published,
            "hand-offs published in one batch"
        );
        Ok(sent)
    }

    async fn self_invoke(
        &self,
        route: &Route,
        url: &str,
        task_id: &TaskId,
        handoff: &Handoff,
    ) -> Result<(), DispatchError> {
        let body =
            json!({ "taskId": task_id, "handoffId": handoff.dedup_id, "isSelfInvoke": true });
        let mut request = self.http.post(url).timeout(DISPATCH_TIMEOUT).json(&body);
        if let Some(secret) = &self.internal_secret {
            request = request.header(INTERNAL_SECRET_HEADER, secret.expose());
        }
        if let Some(bypass) = &route.protection_bypass {
            request = request.header(PROTECTION_BYPASS_HEADER, bypass.expose());
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
    }

    fn route(transport: Transport, base: &str) -> Result<Route, String> {
        Ok(Route {
            transport,
            base: base.into(),
            protection_bypass: None,
        })
    }

    fn qstash(base: &str) -> Result<Route, String> {
        route(Transport::QStash, base)
    }

    fn self_invoke(base: &str) -> Result<Route, String> {
        route(Transport::SelfInvoke, base)
    }

    fn bypassed(route: Result<Route, String>) -> Result<Route, String> {
        route.map(|r| Route {
            protection_bypass: Some(Secret::new("bypass-1")),
            ..r
        })
    }

    /// (name, environment, expected route, whether a warning is logged)
    type Row = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Result<Route, String>,
        bool,
    );

    /// One row per line of the decision table in docs/spec.md §7.
    #[test]
    fn decision_table() {
        let qstash_dev = [("QSTASH_TOKEN", "t"), ("USE_QSTASH_IN_DEV", "true")];
        let with = |extra: &[(&'static str, &'static str)],
                    base: &[(&'static str, &'static str)]| {
            base.iter().chain(extra).copied().collect::<Vec<_>>()
        };
        let public_url_missing = Err(QSTASH_PUBLIC_URL_MISSING.to_owned());
        let rows: Vec<Row> = vec![
            ("dev, nothing set", vec![], self_invoke("http://localhost:3000"), false),
            ("dev, PORT", vec![("PORT", "4100")], self_invoke("http://localhost:4100"), false),
            (
                "dev, VERCEL_URL outside vercel dev is not this machine",
                vec![("VERCEL_URL", "app-git-x.vercel.app")],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "vercel dev: plain http to VERCEL_URL",
                vec![("VERCEL_DEV", "1"), ("VERCEL_ENV", "development"), ("VERCEL_URL", "localhost:3000")],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "dev, JOBS_PUBLIC_URL wins over vercel dev",
                vec![
                    ("JOBS_PUBLIC_URL", "https://jobs.example.com/"),
                    ("VERCEL_DEV", "1"),
                    ("VERCEL_URL", "localhost:3000"),
                ],
                self_invoke("https://jobs.example.com"),
                false,
            ),
            (
                "dev, token but USE_QSTASH_IN_DEV unset",
                vec![("QSTASH_TOKEN", "t"), ("QSTASH_BASE_URL", "https://x.ngrok.app")],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "dev, USE_QSTASH_IN_DEV without token",
                vec![("USE_QSTASH_IN_DEV", "true"), ("QSTASH_BASE_URL", "https://x.ngrok.app")],
                self_invoke("http://localhost:3000"),
                false,
            ),
            (
                "dev, QStash with ngrok base",
                with(&[("QSTASH_BASE_URL", "https://x.ngrok.app")], &qstash_dev),
                qstash("https://x.ngrok.app"),
                false,
            ),
            (
                "vercel dev, QStash: ngrok wins over VERCEL_URL (QStash cannot reach localhost)",
                with(
                    &[("QSTASH_BASE_URL", "https://x.ngrok.app"), ("VERCEL_DEV", "1"), ("VERCEL_URL", "localhost:3000")],
                    &qstash_dev,
                ),
                qstash("https://x.ngrok.app"),
                false,
            ),
            (
                "dev, QStash without base URL",
                with(&[("VERCEL_DEV", "1"), ("VERCEL_URL", "localhost:3000")], &qstash_dev),
                Err(QSTASH_DEV_BASE_URL_MISSING.to_owned()),
                false,
            ),
            (
                "dev, QStash, JOBS_PUBLIC_URL wins over ngrok",
                with(
                    &[("QSTASH_BASE_URL", "https://x.ngrok.app"), ("JOBS_PUBLIC_URL", "https://jobs.example.com")],
                    &qstash_dev,
                ),
                qstash("https://jobs.example.com"),
                false,
            ),
            (
                "production: the production domain before the deployment URL",
                vec![
                    ("VERCEL_ENV", "production"),
                    ("QSTASH_TOKEN", "t"),
                    ("VERCEL_URL", "app-abc123.vercel.app"),
                    ("VERCEL_PROJECT_PRODUCTION_URL", "app.example.com"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app"),
                ],
                qstash("https://app.example.com"),
                false,
            ),
            (
                "production without a production domain: VERCEL_URL",
                vec![("VERCEL_ENV", "production"), ("QSTASH_TOKEN", "t"), ("VERCEL_URL", "app.vercel.app")],
                qstash("https://app.vercel.app"),
                false,
            ),
            (
                "production by NODE_ENV",
                vec![("NODE_ENV", "production"), ("QSTASH_TOKEN", "t"), ("VERCEL_URL", "app.vercel.app")],
                qstash("https://app.vercel.app"),
                false,
            ),
            (
                "production, JOBS_PUBLIC_URL wins",
                vec![
                    ("VERCEL_ENV", "production"),
                    ("QSTASH_TOKEN", "t"),
                    ("VERCEL_URL", "app.vercel.app"),
                    ("VERCEL_PROJECT_PRODUCTION_URL", "app.example.com"),
                    ("JOBS_PUBLIC_URL", "https://jobs.example.org"),
                ],
                qstash("https://jobs.example.org"),
                false,
            ),
            (
                "preview: QStash to this deployment, never to production",
                vec![
                    ("VERCEL_ENV", "preview"),
                    ("NODE_ENV", "production"),
                    ("QSTASH_TOKEN", "t"),
                    ("VERCEL_URL", "app-git-x.vercel.app"),
                    ("VERCEL_PROJECT_PRODUCTION_URL", "app.example.com"),
                ],
                qstash("https://app-git-x.vercel.app"),
                false,
            ),
            (
                "preview without token: self-invocation to this deployment, with a warning",
                vec![("VERCEL_ENV", "preview"), ("VERCEL_URL", "app-git-x.vercel.app")],
                self_invoke("https://app-git-x.vercel.app"),
                true,
            ),
            (
                "production without token: self-invocation to the production domain, with a warning",
                vec![
                    ("VERCEL_ENV", "production"),
                    ("VERCEL_URL", "app-abc123.vercel.app"),
                    ("VERCEL_PROJECT_PRODUCTION_URL", "app.example.com"),
                ],
                self_invoke("https://app.example.com"),
                true,
            ),
            (
                "deployed QStash without any URL",
                vec![("NODE_ENV", "production"), ("QSTASH_TOKEN", "t")],
                public_url_missing,
                false,
            ),
            (
                "deployed self-invocation without any URL: this machine",
                vec![("NODE_ENV", "production")],
                self_invoke("http://localhost:3000"),
                true,
            ),
            (
                "protection bypass on self-invocation",
                vec![("VERCEL_ENV", "preview"), ("VERCEL_URL", "a.vercel.app"), ("QSTASH_TOKEN", ""),
                     ("VERCEL_AUTOMATION_BYPASS_SECRET", "bypass-1")],
                bypassed(self_invoke("https://a.vercel.app")),
                true,
            ),
            (
                "protection bypass through QStash",
                vec![("VERCEL_ENV", "preview"), ("VERCEL_URL", "a.vercel.app"), ("QSTASH_TOKEN", "t"),
                     ("VERCEL_AUTOMATION_BYPASS_SECRET", "bypass-1")],
                bypassed(qstash("https://a.vercel.app")),
                false,
            ),
            (
                "the base is normalised as QStash's client would (host case, default port)",
                vec![("JOBS_PUBLIC_URL", "https://Jobs.Example.COM:443/")],
                self_invoke("https://jobs.example.com"),
                false,
            ),
            (
                "a base that is not a URL names its variable",
                vec![("JOBS_PUBLIC_URL", "jobs.example.com")],
                Err("JOBS_PUBLIC_URL is not a valid base URL (relative URL without a base): \"jobs.example.com\"".into()),
                false,
            ),
        ];
        for (name, vars, route, warns) in rows {
            let decision = decide(&config(&vars));
            assert_eq!(decision.route, route, "{name}");
            assert_eq!(decision.warning.is_some(), warns, "{name}");
        }
    }

    #[test]
    fn published_and_verified_urls_are_one_string() {
        let c = config(&[("JOBS_PUBLIC_URL", "https://Jobs.Example.com")]);
        let url = decide(&c).route.unwrap().process_url();
        assert_eq!(url, "https://jobs.example.com/api/jobs?action=process");
        let Destination::Url(published) = Destination::url(&url).unwrap() else {
            unreachable!()
        };
        assert_eq!(
            published.as_str(),
            url,
            "qstash-rs publishes exactly this string"
        );
    }
}
