//! Who may call what (SPEC section 6). User identity is decided here and only here, so moving
//! from trusted development ids to signed tokens changes this file and nothing else.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use qstash_rs::{Receiver, ReceiverConfig, VerifyRequest};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Secret};
use crate::dispatch::INTERNAL_SECRET_HEADER;
use crate::error::{JobsError, Result};
use crate::task::UserId;

/// Clock skew tolerated on QStash signatures.
const SIGNATURE_LEEWAY_SECONDS: u64 = 5;

enum UserAuth {
    /// Development without `JOBS_AUTH_SECRET`: the `userId` the client sends is trusted.
    Trusted,
    /// The key and the rules (HS256 only, `exp` and `sub` required), built once.
    Jwt(Box<(DecodingKey, Validation)>),
    /// Deployed (production or preview) without `JOBS_AUTH_SECRET`: refuse rather than trust
    /// anyone.
    Misconfigured,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The headers auth looks at, copied out of the request by the edge.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    pub authorization: Option<String>,
    pub upstash_signature: Option<String>,
    pub internal_secret: Option<String>,
}

impl Credentials {
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

pub struct Auth {
    users: UserAuth,
    qstash: Option<Receiver>,
    internal_secret: Option<Secret>,
    cron_secret: Option<Secret>,
    /// Production or preview: nothing is open.
    deployed: bool,
}

impl Auth {
    pub fn new(config: &Config) -> Self {
        let users = match (&config.auth_secret, config.is_deployed()) {
            (Some(secret), _) => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_required_spec_claims(&["exp", "sub"]);
                let key = DecodingKey::from_secret(secret.expose().as_bytes());
                UserAuth::Jwt(Box::new((key, validation)))
            }
            (None, true) => UserAuth::Misconfigured,
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
            deployed: config.is_deployed(),
        }
    }

    /// The user a request acts for. `claimed` is the `userId` from the body or query: trusted
    /// in development, and with tokens it must match `sub` when present.
    pub fn user(&self, credentials: &Credentials, claimed: Option<UserId>) -> Result<UserId> {
        match &self.users {
            UserAuth::Trusted => claimed.ok_or(JobsError::MissingFields("userId")),
            UserAuth::Misconfigured => Err(JobsError::missing_setting("JOBS_AUTH_SECRET")),
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
                match claimed {
                    Some(claimed) if claimed != user => Err(JobsError::UserMismatch),
                    _ => Ok(user),
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
    ) -> Result<()> {
        if let Some(verified) = self.signature(credentials, raw_body, url) {
            return verified;
        }
        if let (Some(expected), Some(given)) = (&self.internal_secret, &credentials.internal_secret)
        {
            return if constant_time_eq(expected.expose().as_bytes(), given.as_bytes()) {
                Ok(())
            } else {
                Err(JobsError::Unauthenticated("Invalid internal secret"))
            };
        }
        if self.qstash.is_none() && self.internal_secret.is_none() && !self.deployed {
            return Ok(());
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

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
