//! Who may call what (SPEC section 6). User identity is decided here and only here, so moving
//! from trusted development ids to signed tokens changes this file and nothing else.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use qstash_rs::{Receiver, ReceiverConfig, VerifyRequest};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, INTERNAL_SECRET_HEADER, Secret};
use crate::error::{JobsError, Result};
use crate::task::UserId;

/// Clock skew tolerated on QStash signatures.
const SIGNATURE_LEEWAY_SECONDS: u64 = 5;

/// Clock skew tolerated on user tokens' `exp` and `nbf`, between the host application that
/// mints them and this function.
pub const TOKEN_LEEWAY_SECONDS: u64 = 30;

enum UserAuth {
    /// Development without `JOBS_AUTH_SECRET`: the `userId` the client sends is trusted.
    Trusted,
    /// The key and the rules (HS256 only, `exp` and `sub` required, `nbf` checked when present,
    /// `iss` and `aud` required and pinned when configured), built once.
    Jwt(Box<(DecodingKey, Validation)>),
    /// Deployed (production or preview) without `JOBS_AUTH_SECRET`, or without
    /// `JOBS_AUTH_AUDIENCE` (a token minted for another service sharing the secret would do):
    /// refuse rather than trust anyone. Carries the variable.
    Misconfigured(&'static str),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Required by the validation; kept so a stream can end when the token does.
    #[serde(default)]
    exp: Option<u64>,
}

/// The headers auth looks at, copied out of the request by the edge.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// `Authorization`: `Bearer <JWT>` from users, `Bearer $CRON_SECRET` from Vercel Cron.
    pub authorization: Option<String>,
    /// `Upstash-Signature`: QStash's signed JWT on deliveries and scheduled calls.
    pub upstash_signature: Option<String>,
    /// `x-jobs-internal-secret`: `JOBS_INTERNAL_SECRET` on self-invocations.
    pub internal_secret: Option<String>,
}

impl Credentials {
    /// Copies the three headers; one that is not valid text counts as absent.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            authorization: get("authorization"),
            upstash_signature: get("upstash-signature"),
            internal_secret: get(INTERNAL_SECRET_HEADER),
        }
    }

    fn bearer(&self) -> Option<&str> {
        let (scheme, token) = self.authorization.as_deref()?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// The checks of SPEC section 6, built once from [`Config`]: who the user is, whether a delivery is
/// genuine, whether a `sweep` comes from the cron.
pub struct Auth {
    users: UserAuth,
    qstash: Option<Receiver>,
    internal_secret: Option<Secret>,
    cron_secret: Option<Secret>,
    metrics_token: Option<Secret>,
    /// Production or preview: nothing is open.
    deployed: bool,
}

impl Auth {
    /// Builds the checks; without `JOBS_AUTH_SECRET` in development, logs a warning that client
    /// `userId`s are trusted.
    pub fn new(config: &Config) -> Self {
        let users = match (&config.auth_secret, config.is_deployed()) {
            (Some(_), true) if config.auth_audience.is_none() => {
                UserAuth::Misconfigured("JOBS_AUTH_AUDIENCE")
            }
            (Some(secret), _) => {
                let key = DecodingKey::from_secret(secret.expose().as_bytes());
                UserAuth::Jwt(Box::new((key, token_rules(config))))
            }
            (None, true) => UserAuth::Misconfigured("JOBS_AUTH_SECRET"),
            (None, false) => {
                tracing::warn!(
                    "JOBS_AUTH_SECRET is not set: trusting the userId clients send (development only)"
                );
                UserAuth::Trusted
            }
        };
        let current = config.qstash_current_signing_key.as_ref();
        let next = config.qstash_next_signing_key.as_ref().or(current);
        let qstash = current.zip(next).map(|(current, next)| {
            Receiver::new(ReceiverConfig {
                current_signing_key: current.expose().to_owned(),
                next_signing_key: next.expose().to_owned(),
            })
        });
        Self {
            users,
            qstash,
            internal_secret: config.internal_secret.clone(),
            cron_secret: config.cron_secret.clone(),
            metrics_token: config.metrics_token.clone(),
            deployed: config.is_deployed(),
        }
    }

    /// The user a request acts for. `claimed` is the `userId` from the body or query: trusted
    /// in development, and with tokens it must match `sub` when present.
    pub fn user(&self, credentials: &Credentials, claimed: Option<UserId>) -> Result<UserId> {
        self.user_until(credentials, claimed).map(|(user, _)| user)
    }

    /// [`Auth::user`], and until when its token is accepted (Unix seconds, the leeway
    /// included; `None` without tokens): a `watch` stream ends then (docs/spec.md §18).
    pub fn user_until(
        &self,
        credentials: &Credentials,
        claimed: Option<UserId>,
    ) -> Result<(UserId, Option<u64>)> {
        match &self.users {
            UserAuth::Trusted => claimed
                .ok_or(JobsError::MissingFields("userId"))
                .map(|user| (user, None)),
            UserAuth::Misconfigured(name) => Err(JobsError::missing_setting(name)),
            UserAuth::Jwt(jwt) => {
                let (key, validation) = &**jwt;
                let token = credentials
                    .bearer()
                    .ok_or(JobsError::Unauthenticated("Missing bearer token"))?;
                let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|_| JobsError::Unauthenticated("Invalid or expired token"))?
                    .claims;
                let user = UserId::parse(claims.sub)
                    .map_err(|_| JobsError::Unauthenticated("Invalid or expired token"))?;
                // Accepted through the whole second `exp + leeway` (the check is in seconds).
                let until = claims.exp.map(|exp| exp + TOKEN_LEEWAY_SECONDS + 1);
                match claimed {
                    Some(claimed) if claimed != user => Err(JobsError::UserMismatch),
                    _ => Ok((user, until)),
                }
            }
        }
    }

    /// A `process` delivery: a valid QStash signature over the raw body for `url` (the URL
    /// the service publishes to, never one rebuilt from `Host`), or the internal secret of a
    /// self-invocation. Open only in development with neither configured.
    pub fn delivery(
        &self,
        credentials: &Credentials,
        raw_body: &[u8],
        url: Option<&str>,
    ) -> Result<Deliverer> {
        if let Some(verified) = self.signature(credentials, raw_body, url) {
            return verified.map(|()| Deliverer::QStash);
        }
        if let (Some(expected), Some(given)) = (&self.internal_secret, &credentials.internal_secret)
        {
            return if constant_time_eq(expected.expose().as_bytes(), given.as_bytes()) {
                Ok(Deliverer::SelfInvocation)
            } else {
                Err(JobsError::Unauthenticated("Invalid internal secret"))
            };
        }
        if self.qstash.is_none() && self.internal_secret.is_none() && !self.deployed {
            return Ok(Deliverer::SelfInvocation);
        }
        Err(JobsError::Unauthenticated("Missing signature"))
    }

    /// `sweep`: `Authorization: Bearer $CRON_SECRET` (Vercel Cron), or a QStash signature for
    /// `url` (a QStash schedule). Open in development without `CRON_SECRET`.
    pub fn cron(&self, credentials: &Credentials, url: Option<&str>) -> Result<()> {
        if let Some(verified) = self.signature(credentials, b"", url) {
            return verified;
        }
        match (&self.cron_secret, credentials.bearer()) {
            (Some(secret), Some(given))
                if constant_time_eq(secret.expose().as_bytes(), given.as_bytes()) =>
            {
                Ok(())
            }
            (Some(_), _) => Err(JobsError::Unauthenticated("Invalid cron secret")),
            (None, _) if self.deployed => Err(JobsError::Unauthenticated(
                "Missing cron secret or signature",
            )),
            (None, _) => Ok(()),
        }
    }

    /// `metrics`: `Authorization: Bearer $JOBS_METRICS_TOKEN`; off (404) when it is not set.
    pub fn metrics(&self, credentials: &Credentials) -> Result<()> {
        let Some(token) = &self.metrics_token else {
            return Err(JobsError::MetricsOff);
        };
        match credentials.bearer() {
            None => Err(JobsError::Unauthenticated("Missing bearer token")),
            Some(given) if constant_time_eq(token.expose().as_bytes(), given.as_bytes()) => Ok(()),
            Some(_) => Err(JobsError::Unauthenticated("Invalid metrics token")),
        }
    }

    /// `Some` when the request carries an `Upstash-Signature` this service can check: valid
    /// for `url`, or refused. A signature is never accepted without a URL to check its `sub`.
    fn signature(
        &self,
        credentials: &Credentials,
        raw_body: &[u8],
        url: Option<&str>,
    ) -> Option<Result<()>> {
        let (receiver, signature) = (
            self.qstash.as_ref()?,
            credentials.upstash_signature.as_ref()?,
        );
        let Some(url) = url else {
            tracing::warn!(
                "refused a signed request: dispatch has no URL to check the signature's subject against"
            );
            return Some(Err(JobsError::Unauthenticated("Invalid signature")));
        };
        let verified = receiver.verify(VerifyRequest {
            signature,
            body: raw_body,
            url: Some(url),
            clock_tolerance_seconds: SIGNATURE_LEEWAY_SECONDS,
        });
        Some(verified.map_err(|error| {
            tracing::warn!(%error, "refused a request with a bad signature");
            JobsError::Unauthenticated("Invalid signature")
        }))
    }
}

/// The rules a user token must pass: HS256 only; `exp` and `sub` required; `exp` and `nbf`
/// checked with [`TOKEN_LEEWAY_SECONDS`] of leeway; with `JOBS_AUTH_ISSUER` set, `iss` required
/// and equal to it; with `JOBS_AUTH_AUDIENCE` set, `aud` required and containing it. Without an
/// audience configured, a token's `aud` is not looked at (jsonwebtoken would otherwise refuse
/// every token that has one).
fn token_rules(config: &Config) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = TOKEN_LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &config.auth_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.auth_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Who delivered a hand-off, as the timeline names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliverer {
    /// A request signed by QStash.
    QStash,
    /// A self-invocation (with the internal secret, or open in development).
    SelfInvocation,
}

impl Deliverer {
    /// `qstash` or `self`.
    pub fn name(self) -> &'static str {
        match self {
            Self::QStash => "qstash",
            Self::SelfInvocation => "self",
        }
    }
}

/// Compares secrets in time independent of where they differ (and of their lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn auth(vars: &[(&str, &str)]) -> Auth {
        let config = Config::from_lookup(|name| {
            [("JOBS_AUTH_SECRET", "unit-secret")]
                .iter()
                .chain(vars)
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        Auth::new(&config)
    }

    fn bearer(claims: serde_json::Value) -> Credentials {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"unit-secret"),
        )
        .unwrap();
        Credentials {
            authorization: Some(format!("Bearer {token}")),
            ..Credentials::default()
        }
    }

    #[test]
    fn token_times_have_a_30_s_leeway() {
        let auth = auth(&[]);
        let t = now();
        let rows = [
            (
                serde_json::json!({ "sub": "a", "exp": t + 300, "nbf": t + 60 }),
                false,
            ),
            (
                serde_json::json!({ "sub": "a", "exp": t + 300, "nbf": t + 20 }),
                true,
            ),
            (serde_json::json!({ "sub": "a", "exp": t - 20 }), true),
            (serde_json::json!({ "sub": "a", "exp": t - 60 }), false),
            (serde_json::json!({ "sub": "a" }), false),
            (
                serde_json::json!({ "sub": "a", "exp": t + 60, "aud": "elsewhere" }),
                true,
            ),
        ];
        for (claims, ok) in rows {
            assert_eq!(
                auth.user(&bearer(claims.clone()), None).is_ok(),
                ok,
                "{claims}"
            );
        }
    }

    #[test]
    fn issuer_and_audience_are_pinned_when_configured() {
        let auth = auth(&[
            ("JOBS_AUTH_ISSUER", "https://app.example"),
            ("JOBS_AUTH_AUDIENCE", "jobs"),
        ]);
        let exp = now() + 300;
        let rows = [
            (
                serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://app.example", "aud": "jobs" }),
                true,
            ),
            (
                serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://app.example", "aud": ["jobs", "x"] }),
                true,
            ),
            (
                serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://other.example", "aud": "jobs" }),
                false,
            ),
            (
                serde_json::json!({ "sub": "a", "exp": exp, "aud": "jobs" }),
                false,
            ),
            (
                serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://app.example", "aud": "other" }),
                false,
            ),
            (
                serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://app.example" }),
                false,
            ),
        ];
        for (claims, ok) in rows {
            assert_eq!(
                auth.user(&bearer(claims.clone()), None).is_ok(),
                ok,
                "{claims}"
            );
        }
    }

    /// Deployed, a token is only good with the audience pinned: without `JOBS_AUTH_AUDIENCE`
    /// every user action is refused, naming it, whatever the token carries.
    #[test]
    fn deployed_user_tokens_need_the_audience_configured() {
        let claims = serde_json::json!({ "sub": "a", "exp": now() + 300, "aud": "jobs" });
        let refused = auth(&[("VERCEL_ENV", "preview")])
            .user(&bearer(claims.clone()), None)
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "The service is misconfigured: JOBS_AUTH_AUDIENCE is not set"
        );
        let deployed = auth(&[("VERCEL_ENV", "preview"), ("JOBS_AUTH_AUDIENCE", "jobs")]);
        assert!(deployed.user(&bearer(claims), None).is_ok());
        let without_aud = serde_json::json!({ "sub": "a", "exp": now() + 300 });
        assert!(deployed.user(&bearer(without_aud.clone()), None).is_err());
        assert!(
            auth(&[]).user(&bearer(without_aud), None).is_ok(),
            "development"
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
