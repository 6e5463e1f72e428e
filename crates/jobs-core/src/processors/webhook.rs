//! `webhook`: calls a URL on an allow-listed host and port with a 10 s timeout; a non-2xx answer
//! is a failure carrying its status. No open SSRF:
//!
//! - only `JOBS_WEBHOOK_ALLOWED_HOSTS` may be called, each entry `host[:port]`: an entry without
//!   a port allows the scheme's default port only (443 for https, 80 for http), a URL on any
//!   other port needs its `host:port` listed (IPv6 literals in brackets: `[2001:db8::1]:8443`);
//! - a host that resolves to a loopback, private (RFC 1918, `fc00::/7`), link-local
//!   (`169.254.0.0/16`, `fe80::/10`), unspecified or other non-global address is refused unless
//!   `JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`. Names are resolved when the task runs, every
//!   address they resolve to is checked, and the request connects only to those checked
//!   addresses (a client of its own per call, DNS pinned with `resolve_to_addrs`, no proxy), so
//!   a DNS answer that changes between the check and the connection cannot bypass it;
//! - redirects are not followed (they could leave the allow-list);
//! - the user's `Host` and the hop-by-hop and framing headers (`Connection`, `Keep-Alive`,
//!   `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Content-Length`) are dropped,
//!   not refused: the client sets them from the URL and the body.
//!
//! With `steps: true` in the payload the host reports the steps it completed and the one it
//! failed in, and is sent the completed ones again on a later attempt to resume after them
//! (docs/spec.md §16, "Steps behind a webhook"; [`Answer`]).
//!
//! `create` refuses what it can without DNS (a bad URL or scheme, a host or port not allowed, an
//! IP literal that is not global, a header that is not valid HTTP); the address check of a name
//! happens when the task runs, and its refusal fails the task with a message starting
//! `Refused:`. Header values are secrets as far as the API is concerned: [`redact`] hides them
//! (and a password in the URL) from `get` and `list`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use url::Host;

use super::{Job, Processor, ProcessorError, ProcessorFuture};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What a stored header value is replaced with in API output.
pub const REDACTED: &str = "[redacted]";

/// Headers the client derives itself, or that only concern one connection: a payload's own are
/// dropped before sending (`proxy-*` too).
const DROPPED_HEADERS: [&str; 8] = [
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

const ALLOW_PRIVATE_HINT: &str = "set JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow";

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
    #[serde(default)]
    steps: bool,
}

/// A payload accepted by [`Webhook::parse`]: what `run` sends.
struct Target {
    url: reqwest::Url,
    method: reqwest::Method,
    body: Option<Value>,
    /// Valid names and values, without the dropped ones.
    headers: reqwest::header::HeaderMap,
    /// The host reports steps (docs/spec.md §16, "Steps behind a webhook").
    steps: bool,
}

/// The largest answer read from a host that reports steps: its step outputs (at most 1 MiB for
/// the task, [`crate::steps::MAX_STEPS_OUTPUT`]) with room for the rest.
const MAX_ANSWER: usize = 2 * 1024 * 1024;

/// What a host that reports steps answers (docs/spec.md §16): the steps this call completed,
/// in order, the step it failed in (with a non-2xx status), and the result. Every field may be
/// absent; an answer that is not such a JSON object reports nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Answer {
    steps: Vec<Reported>,
    failed_step: Option<ReportedFailure>,
    result: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Reported {
    name: String,
    #[serde(default)]
    output: Value,
}

#[derive(Debug, Deserialize)]
struct ReportedFailure {
    name: String,
    #[serde(default)]
    error: String,
}

impl Answer {
    /// The answer in `response`, read up to [`MAX_ANSWER`] bytes.
    async fn read(mut response: reqwest::Response) -> Result<Self, ProcessorError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("Webhook request failed: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER {
                return Err(ProcessorError::Permanent(format!(
                    "Webhook answer is above {MAX_ANSWER} bytes"
                )));
            }
        }
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }

    /// Records what the host reported as the run's steps: the stored ones replayed first (so
    /// the reported ones follow them), then each reported step this call completed (one the
    /// task already stores is skipped: the stored output stands), then, when the call `failed`,
    /// the step it failed in. `Err` only when the run must stop or a step breaks the rules.
    async fn record(
        self,
        job: &Job<'_>,
        stored: &[(String, Value)],
        failed: bool,
    ) -> Result<Option<Value>, ProcessorError> {
        for (name, output) in stored {
            let _: Value = job
                .step(name, std::future::ready(Ok(output.clone())))
                .await?;
        }
        for step in self.steps {
            if stored.iter().any(|(name, _)| *name == step.name) {
                continue;
            }
            let _: Value = job
                .step(&step.name, std::future::ready(Ok(step.output)))
                .await?;
        }
        if let Some(failed) = self.failed_step.filter(|_| failed) {
            let error = ProcessorError::Failed(failed.error);
            match job
                .step::<Value, _>(&failed.name, std::future::ready(Err(error)))
                .await
            {
                Err(ProcessorError::Failed(_)) => {}
                other => return other.map(|_| None),
            }
        }
        Ok(self.result)
    }
}

/// One `JOBS_WEBHOOK_ALLOWED_HOSTS` entry.
#[derive(Debug, PartialEq)]
struct AllowedHost {
    host: Host<String>,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

impl AllowedHost {
    /// `host`, `host:port`, `[v6]`, `[v6]:port` (or a bare IPv6 address); `None` if unusable.
    fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim();
        if let Ok(v6) = entry.parse::<Ipv6Addr>() {
            return Some(Self {
                host: Host::Ipv6(v6),
                port: None,
            });
        }
        let (host, port) = match entry.rfind(':') {
            Some(colon) if !entry[colon..].contains(']') => {
                (&entry[..colon], Some(entry[colon + 1..].parse().ok()?))
            }
            _ => (entry, None),
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            host: Host::parse(host).ok()?,
            port,
        })
    }

    fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        host.to_owned() == self.host
            && match self.port {
                Some(port) => url.port_or_known_default() == Some(port),
                // `Url` forgets a port that is the scheme's default.
                None => url.port().is_none(),
            }
    }
}

/// The `webhook` processor. Payload `{url, method?, body?, headers?, steps?}`: calls `url` (http
/// or https, on an allowed host and port) with `method` (GET, POST by default, PUT, PATCH or
/// DELETE), the JSON `body` (in an envelope with the completed steps when `steps`) and
/// `headers`; a 2xx answer completes the task with `{status}` (and the host's `result`). See the
/// module documentation for what is refused.
pub struct Webhook {
    allowed_hosts: Vec<AllowedHost>,
    allow_private_networks: bool,
}

impl Webhook {
    /// A webhook caller for the `JOBS_WEBHOOK_ALLOWED_HOSTS` entries `allowed_hosts`
    /// (`host[:port]`; an unusable entry is logged and ignored), refusing hosts with non-global
    /// addresses unless `allow_private_networks`. Each call uses a client of its own that
    /// follows no redirects and uses no proxy.
    pub fn new(allowed_hosts: &[String], allow_private_networks: bool) -> Self {
        let allowed_hosts = allowed_hosts
            .iter()
            .filter_map(|entry| {
                let parsed = AllowedHost::parse(entry);
                if parsed.is_none() {
                    tracing::warn!(
                        entry,
                        "ignoring a JOBS_WEBHOOK_ALLOWED_HOSTS entry that is not host[:port]"
                    );
                }
                parsed
            })
            .collect();
        Self {
            allowed_hosts,
            allow_private_networks,
        }
    }

    /// Everything that can be checked without DNS.
    fn parse(&self, payload: &Value) -> Result<Target, String> {
        let p: WebhookPayload =
            serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&p.url).map_err(|e| format!("url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url must be http or https".into());
        }
        let Some(host) = url.host() else {
            return Err("url must have a host".into());
        };
        if !self
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.allows(&url))
        {
            let listed = self.allowed_hosts.iter().any(|a| a.host == host.to_owned());
            return Err(match url.port_or_known_default() {
                Some(port) if listed => format!(
                    "port {port} of host {host} is not allowed: JOBS_WEBHOOK_ALLOWED_HOSTS \
                     does not list {host}:{port}"
                ),
                _ => format!("host {host} is not in JOBS_WEBHOOK_ALLOWED_HOSTS"),
            });
        }
        if !self.allow_private_networks {
            let literal = match host {
                Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
                Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
                Host::Domain(_) => None,
            };
            if let Some(kind) = literal.and_then(non_global) {
                return Err(format!(
                    "webhook host {host} is a {kind} address ({ALLOW_PRIVATE_HINT})"
                ));
            }
        }
        let method = p.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
        let method = match method.as_str() {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
                reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?
            }
            _ => return Err(format!("method {method} is not supported")),
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &p.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not valid"))?;
            // The value is a secret: never echo it.
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {name} is not valid"))?;
            if !is_dropped(name.as_str()) {
                headers.append(name, value);
            }
        }
        Ok(Target {
            url,
            method,
            body: p.body,
            headers,
            steps: p.steps,
        })
    }

    /// The addresses `url`'s host may be reached at: every address it resolves to, each one
    /// global unless private networks are allowed. `None`: connect as usual (an IP literal,
    /// already checked by `parse`, or no check to make).
    async fn checked_addresses(
        &self,
        url: &reqwest::Url,
    ) -> Result<Option<Vec<SocketAddr>>, String> {
        let (Some(Host::Domain(domain)), false) = (url.host(), self.allow_private_networks) else {
            return Ok(None);
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let resolved = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((domain, port)))
            .await
            .map_err(|_| format!("Webhook request failed: resolving {domain} timed out"))?
            .map_err(|e| format!("Webhook request failed: could not resolve {domain}: {e}"))?;
        let mut addresses: Vec<SocketAddr> = Vec::new();
        for address in resolved {
            if let Some(kind) = non_global(address.ip()) {
                return Err(format!(
                    "Refused: webhook host {domain} resolves to {}, a {kind} address \
                     ({ALLOW_PRIVATE_HINT})",
                    address.ip()
                ));
            }
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if addresses.is_empty() {
            return Err(format!(
                "Webhook request failed: {domain} resolves to no address"
            ));
        }
        Ok(Some(addresses))
    }
}

impl Webhook {
    /// A client for `url` under the same rules as a webhook task (http(s), an allowed host and
    /// port, global addresses unless private networks are allowed, pinned to the addresses
    /// checked): for other outbound calls, such as alerts (docs/spec.md §21).
    pub async fn client_for_url(
        &self,
        url: &str,
    ) -> Result<(reqwest::Url, reqwest::Client), String> {
        let target = self.parse(&serde_json::json!({ "url": url }))?;
        let pinned = self.checked_addresses(&target.url).await?;
        let domain = match target.url.host() {
            Some(Host::Domain(domain)) => Some(domain.to_owned()),
            _ => None,
        };
        let client = client_for(domain.as_deref(), pinned.as_deref())?;
        Ok((target.url, client))
    }
}

/// A client for one call: no redirects, no proxy (a proxy would resolve the name itself), and,
/// when `pinned` is given, `domain` resolved to those addresses only.
fn client_for(
    domain: Option<&str>,
    pinned: Option<&[SocketAddr]>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(TIMEOUT);
    if let (Some(domain), Some(addresses)) = (domain, pinned) {
        builder = builder.resolve_to_addrs(domain, addresses);
    }
    builder
        .build()
        .map_err(|e| format!("Webhook request failed: {e}"))
}

fn is_dropped(lower_case_name: &str) -> bool {
    DROPPED_HEADERS.contains(&lower_case_name) || lower_case_name.starts_with("proxy-")
}

/// Why `ip` may not be called without `JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS`: `loopback`,
/// `private`, `link-local`, `unspecified`, `multicast` or `non-global`; `None` for a global
/// unicast address. IPv4 addresses inside IPv6 ones (mapped, NAT64, 6to4) are judged as IPv4.
fn non_global(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_global_v4(v4),
        IpAddr::V6(v6) => non_global_v6(v6),
    }
}

fn non_global_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (224..=239, ..) => "multicast",
        // Shared (carrier-grade NAT), IETF protocol assignments, documentation,
        // benchmarking, reserved and broadcast.
        (100, 64..=127, _)
        | (192, 0, 0)
        | (192, 0, 2)
        | (198, 51, 100)
        | (203, 0, 113)
        | (198, 18..=19, _)
        | (240..=255, ..) => "non-global",
        _ => return None,
    })
}

fn non_global_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_global_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the gateway connects to the embedded IPv4 address.
        return non_global_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4.
        return non_global_v4(embedded(s[1], s[2]));
    }
    Some(if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] & 0xe000 != 0x2000
        // Outside global unicast 2000::/3, or in it but reserved: IETF protocol assignments
        // (Teredo among them) and documentation.
        || (s[0] == 0x2001 && s[1] < 0x0200)
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || s[0] & 0xfff0 == 0x3ff0
    {
        "non-global"
    } else {
        return None;
    })
}

/// A webhook payload as the API shows it: every header value replaced by [`REDACTED`], and
/// credentials in the URL (`user:password@`, sent as basic auth) by `redacted`; anything else
/// unchanged.
pub fn redact(mut payload: Value) -> Value {
    if let Some(headers) = payload.get_mut("headers").and_then(Value::as_object_mut) {
        for value in headers.values_mut() {
            *value = Value::String(REDACTED.into());
        }
    }
    if let Some(url) = payload.get_mut("url") {
        let with_credentials = url
            .as_str()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .filter(|u| !u.username().is_empty() || u.password().is_some());
        if let Some(mut parsed) = with_credentials {
            let had_password = parsed.password().is_some();
            let _ = parsed.set_username("redacted");
            let _ = parsed.set_password(had_password.then_some("redacted"));
            *url = Value::String(parsed.into());
        }
    }
    payload
}

/// Refuses what `get` shows in place of a secret (a header value [`REDACTED`], URL credentials
/// `redacted`): a payload read from the API and sent back would replace the secrets with the
/// placeholders. Checked where a payload comes in (`create`, an edit), not when a stored task
/// runs.
fn refuse_placeholders(payload: &Value) -> Result<(), String> {
    if let Some(headers) = payload.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            if value == REDACTED {
                return Err(format!(
                    "the value of header {name} is the {REDACTED} placeholder that get shows; \
                     send its real value"
                ));
            }
        }
    }
    let url = payload
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if reqwest::Url::parse(url).is_ok_and(|u| u.username() == "redacted") {
        return Err("url holds the redacted credentials that get shows; send the real ones".into());
    }
    Ok(())
}

impl Processor for Webhook {
    fn validate(&self, payload: &Value) -> Result<(), String> {
        self.parse(payload)?;
        refuse_placeholders(payload)
    }

    fn run<'a>(&'a self, job: Job<'a>) -> ProcessorFuture<'a> {
        Box::pin(async move {
            // Checked again: the allow-list may have changed since `create`.
            let target = self
                .parse(job.payload)
                .map_err(|e| ProcessorError::Permanent(format!("Refused: {e}")))?;
            // A refused address stays refused: no automatic retry.
            let pinned = self.checked_addresses(&target.url).await.map_err(|e| {
                match e.starts_with("Refused") {
                    true => ProcessorError::Permanent(e),
                    false => ProcessorError::Failed(e),
                }
            })?;
            let client = client_for(target.url.domain(), pinned.as_deref())?;
            let mut request = client
                .request(target.method, target.url)
                .headers(target.headers);
            // A host that reports steps gets the completed ones, to resume after them.
            let stored = match target.steps {
                true => job.stored_steps(),
                false => Vec::new(),
            };
            if target.steps {
                let steps: Vec<Value> = stored
                    .iter()
                    .map(|(name, output)| json!({ "name": name, "output": output }))
                    .collect();
                request = request
                    .header("x-jobs-task-id", job.task_id)
                    .header("x-jobs-attempt", job.attempt.to_string())
                    .json(&json!({ "taskId": job.task_id, "attempt": job.attempt,
                                   "body": target.body, "steps": steps }));
            } else if let Some(body) = &target.body {
                request = request.json(body);
            }
            // A run that must stop drops its request: the host sees the connection close, and
            // never a second call of the task while this one is in flight.
            let response = tokio::select! {
                response = request.send() => response,
                () = job.cancelled() => return Err(ProcessorError::Stopped),
            }
            .map_err(|e| format!("Webhook request failed: {e}"))?;
            let status = response.status();
            let (result, failed_in) = match target.steps {
                true => {
                    let answer = Answer::read(response).await?;
                    let failed_in = answer
                        .failed_step
                        .as_ref()
                        .map(|f| (f.name.clone(), f.error.clone()));
                    let failed = !status.is_success();
                    (answer.record(&job, &stored, failed).await?, failed_in)
                }
                false => (None, None),
            };
            if !status.is_success() {
                let mut message = format!("Webhook answered HTTP {}", status.as_u16());
                match failed_in {
                    Some((step, error)) if error.is_empty() => {
                        message = format!("{message} in step \"{step}\"");
                    }
                    Some((step, error)) => {
                        message = format!("{message} in step \"{step}\": {error}");
                    }
                    None => {}
                }
                // 4xx says the request itself is wrong, except 408 (timeout) and 429 (slow
                // down): another attempt will not fix it.
                let permanent = status.is_client_error() && !matches!(status.as_u16(), 408 | 429);
                return Err(match permanent {
                    true => ProcessorError::Permanent(message),
                    false => ProcessorError::Failed(message),
                });
            }
            job.progress(100).await?;
            Ok(match result {
                Some(result) => json!({ "status": status.as_u16(), "result": result }),
                None => json!({ "status": status.as_u16() }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(allowed: &[&str], allow_private_networks: bool) -> Webhook {
        let allowed: Vec<String> = allowed.iter().map(|h| h.to_string()).collect();
        Webhook::new(&allowed, allow_private_networks)
    }

    #[test]
    fn only_allowed_hosts_and_methods() {
        let webhook = webhook(&["hooks.example.com"], false);
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

    #[test]
    fn ports_need_listing_unless_they_are_the_scheme_default() {
        let webhook = webhook(
            &[
                "hooks.example.com",
                "api.example.com:8443",
                "[2001:db8::1]:9000",
                "2001:db8::2",
                "93.184.215.14:8080",
                "bad:port:entry:",
                "nothing:",
            ],
            true,
        );
        let cases = [
            ("https://hooks.example.com/", true),
            ("https://hooks.example.com:443/", true),
            ("http://hooks.example.com/", true),
            ("http://hooks.example.com:80/", true),
            ("https://hooks.example.com:8443/", false),
            ("http://hooks.example.com:443/", false),
            ("https://api.example.com:8443/", true),
            ("https://api.example.com/", false),
            ("https://api.example.com:8444/", false),
            ("http://[2001:db8::1]:9000/", true),
            ("http://[2001:db8::1]/", false),
            ("https://[2001:db8::2]/", true),
            ("http://93.184.215.14:8080/", true),
            ("http://93.184.215.14/", false),
        ];
        for (url, ok) in cases {
            assert_eq!(
                webhook.validate(&json!({ "url": url })).is_ok(),
                ok,
                "{url}"
            );
        }
        let refused = webhook
            .validate(&json!({ "url": "https://hooks.example.com:8443/" }))
            .unwrap_err();
        assert!(refused.contains("hooks.example.com:8443"), "{refused}");
        assert_eq!(
            webhook.allowed_hosts.len(),
            5,
            "unusable entries are ignored"
        );
    }

    #[test]
    fn non_global_ip_literals_are_refused_at_create_unless_allowed() {
        let allowed = [
            "127.0.0.1:8080",
            "10.1.2.3",
            "169.254.169.254",
            "[::1]",
            "[fd00::1]",
            "[::ffff:127.0.0.1]",
            "0.0.0.0",
            "93.184.215.14",
        ];
        let strict = webhook(&allowed, false);
        let open = webhook(&allowed, true);
        let cases = [
            ("http://127.0.0.1:8080/", Some("loopback")),
            ("http://10.1.2.3/", Some("private")),
            ("http://169.254.169.254/", Some("link-local")),
            ("http://[::1]/", Some("loopback")),
            ("http://[fd00::1]/", Some("private")),
            ("http://[::ffff:127.0.0.1]/", Some("loopback")),
            ("http://0.0.0.0/", Some("unspecified")),
            ("http://93.184.215.14/", None),
        ];
        for (url, refused) in cases {
            let payload = json!({ "url": url });
            assert!(open.validate(&payload).is_ok(), "{url}");
            match (strict.validate(&payload), refused) {
                (Ok(()), None) => {}
                (Err(message), Some(kind)) => assert!(
                    message.contains(&format!("a {kind} address"))
                        && message.contains("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true"),
                    "{url}: {message}"
                ),
                (outcome, _) => panic!("{url}: {outcome:?}"),
            }
        }
    }

    #[test]
    fn address_classes() {
        let cases: [(&str, Option<&str>); 24] = [
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("non-global")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("non-global")),
            ("8.8.8.8", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fc00::1", Some("private")),
            ("fdff::1", Some("private")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:10.0.0.1", Some("private")),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("2002:a9fe:a9fe::1", Some("link-local")),
            ("2001:db8::1", Some("non-global")),
            ("2606:4700::1111", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(non_global(ip.parse().unwrap()), expected, "{ip}");
        }
    }

    #[test]
    fn framing_and_hop_by_hop_headers_are_dropped_and_bad_ones_refused() {
        let webhook = webhook(&["hooks.example.com"], false);
        let target = webhook
            .parse(&json!({
                "url": "https://hooks.example.com/",
                "headers": {
                    "Host": "internal.example", "Connection": "close", "Keep-Alive": "5",
                    "Proxy-Authorization": "Basic eA==", "TE": "trailers", "Trailer": "x",
                    "Transfer-Encoding": "chunked", "Upgrade": "h2c", "Content-Length": "1",
                    "Authorization": "Bearer xyz", "X-Kept": "yes"
                }
            }))
            .ok()
            .unwrap();
        let mut names: Vec<&str> = target.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "x-kept"]);
        for headers in [
            json!({ "bad name": "x" }),
            json!({ "X-Ok": "line\r\nInjected: 1" }),
        ] {
            let refused = webhook
                .validate(&json!({ "url": "https://hooks.example.com/", "headers": headers }))
                .unwrap_err();
            assert!(!refused.contains("Injected"), "{refused}");
        }
    }

    #[test]
    fn header_values_and_url_passwords_are_redacted() {
        let shown = redact(json!({
            "url": "https://user:s3cret@hooks.example.com/x?y=1",
            "headers": { "Authorization": "Bearer xyz", "X-Other": "abc" },
            "body": { "kept": true }
        }));
        assert_eq!(
            shown,
            json!({
                "url": "https://redacted:redacted@hooks.example.com/x?y=1",
                "headers": { "Authorization": REDACTED, "X-Other": REDACTED },
                "body": { "kept": true }
            })
        );
        let token_as_user = redact(json!({ "url": "https://tok3n@hooks.example.com/" }));
        assert_eq!(token_as_user["url"], "https://redacted@hooks.example.com/");
        let plain = json!({ "url": "https://hooks.example.com/" });
        assert_eq!(redact(plain.clone()), plain);
    }

    /// The request goes to the checked address, whatever DNS would answer for the name later.
    #[tokio::test]
    async fn the_pinned_client_connects_only_to_the_checked_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        });
        // `.invalid` never resolves (RFC 6761): only the pin can make this name reachable.
        let client = client_for(Some("rebound.invalid"), Some(&[address])).unwrap();
        let url = format!("http://rebound.invalid:{}/", address.port());
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 204);
    }
}
