//! `webhook`: calls a URL on an allow-listed host with a 10 s timeout; a non-2xx answer is a
//! failure carrying its status. Only `JOBS_WEBHOOK_ALLOWED_HOSTS` may be called (no open SSRF).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Job, Processor, ProcessorFuture};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPayload {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    headers: HashMap<String, String>,
}

pub struct Webhook {
    allowed_hosts: Vec<String>,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(allowed_hosts: Vec<String>, http: reqwest::Client) -> Self {
        Self {
            allowed_hosts,
            http,
        }
    }

    fn parse(
        &self,
        payload: &Value,
    ) -> Result<(WebhookPayload, reqwest::Url, reqwest::Method), String> {
        let p: WebhookPayload =
            serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&p.url).map_err(|e| format!("url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url must be http or https".into());
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.allowed_hosts.contains(&host) {
            return Err(format!("host {host} is not in JOBS_WEBHOOK_ALLOWED_HOSTS"));
        }
        let method = p.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
        let method = match method.as_str() {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
                reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?
            }
            _ => return Err(format!("method {method} is not supported")),
        };
        Ok((p, url, method))
    }
}

impl Processor for Webhook {
    fn validate(&self, payload: &Value) -> Result<(), String> {
        self.parse(payload).map(drop)
    }

    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            let (p, url, method) = self.parse(job.payload)?;
            // Redirects could leave the allow-list; the client used here does not follow them.
            let mut request = self.http.request(method, url).timeout(TIMEOUT);
            for (name, value) in &p.headers {
                request = request.header(name, value);
            }
            if let Some(body) = &p.body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("Webhook request failed: {e}"))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("Webhook answered HTTP {}", status.as_u16()).into());
            }
            job.progress(100).await?;
            Ok(json!({ "status": status.as_u16() }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_hosts_and_methods() {
        let webhook = Webhook::new(vec!["hooks.example.com".into()], reqwest::Client::new());
        let cases = [
            (json!({ "url": "https://hooks.example.com/x" }), true),
            (
                json!({ "url": "https://HOOKS.example.com/x", "method": "put" }),
                true,
            ),
            (json!({ "url": "http://169.254.169.254/latest" }), false),
            (json!({ "url": "file:///etc/passwd" }), false),
            (
                json!({ "url": "https://hooks.example.com/x", "method": "TRACE" }),
                false,
            ),
            (json!({ "url": "not a url" }), false),
            (json!({}), false),
        ];
        for (payload, ok) in cases {
            assert_eq!(webhook.validate(&payload).is_ok(), ok, "{payload}");
        }
    }
}
