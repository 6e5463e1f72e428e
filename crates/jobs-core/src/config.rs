//! Configuration: one struct read from the environment once, at start-up (SPEC section 9).
//! Defaults and validation live here and nowhere else.

use std::fmt;
use std::time::Duration;

/// A value that must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mongodb_uri: Secret,
    pub mongodb_db: String,
    /// `VERCEL_ENV == "production" || NODE_ENV == "production"`.
    pub is_production: bool,
    pub vercel_url: Option<String>,
    pub port: u16,
    pub public_url: Option<String>,
    pub qstash_token: Option<Secret>,
    pub qstash_url: Option<String>,
    pub qstash_current_signing_key: Option<Secret>,
    pub qstash_next_signing_key: Option<Secret>,
    pub use_qstash_in_dev: bool,
    pub qstash_base_url: Option<String>,
    /// `Upstash-Retries` sent with every publish.
    pub qstash_retries: u32,
    pub auth_secret: Option<Secret>,
    pub internal_secret: Option<Secret>,
    pub cron_secret: Option<Secret>,
    pub lease: Duration,
    pub queue_timeout: Duration,
    pub webhook_allowed_hosts: Vec<String>,
    /// Development only: serve the Task Manager page from this folder next to the API.
    pub static_dir: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret = |name: &str| var(name).map(Secret);
        let url = |name: &str| var(name).map(|v| v.trim_end_matches('/').to_owned());
        let number = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            let Some(raw) = var(name) else {
                return Ok(default);
            };
            match raw.parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(ConfigError {
                    name,
                    problem: format!(
                        "expected a whole number in {}..={}, got {raw:?}",
                        range.start(),
                        range.end()
                    ),
                }),
            }
        };

        Ok(Self {
            mongodb_uri: Secret(var("MONGODB_URI").unwrap_or_else(|| DEFAULT_MONGODB_URI.into())),
            mongodb_db: var("MONGODB_DB").unwrap_or_else(|| "jobs".into()),
            is_production: var("VERCEL_ENV").as_deref() == Some("production")
                || var("NODE_ENV").as_deref() == Some("production"),
            vercel_url: var("VERCEL_URL"),
            port: number("PORT", 3000, 1..=65535)? as u16,
            public_url: url("JOBS_PUBLIC_URL"),
            qstash_token: secret("QSTASH_TOKEN"),
            qstash_url: url("QSTASH_URL"),
            qstash_current_signing_key: secret("QSTASH_CURRENT_SIGNING_KEY"),
            qstash_next_signing_key: secret("QSTASH_NEXT_SIGNING_KEY"),
            use_qstash_in_dev: var("USE_QSTASH_IN_DEV").as_deref() == Some("true"),
            qstash_base_url: url("QSTASH_BASE_URL"),
            qstash_retries: number("JOBS_QSTASH_RETRIES", 3, 0..=5)? as u32,
            auth_secret: secret("JOBS_AUTH_SECRET"),
            internal_secret: secret("JOBS_INTERNAL_SECRET"),
            cron_secret: secret("CRON_SECRET"),
            lease: Duration::from_secs(number("JOBS_LEASE_SECONDS", 300, 1..=86_400)?),
            queue_timeout: Duration::from_secs(number(
                "JOBS_QUEUE_TIMEOUT_SECONDS",
                900,
                1..=604_800,
            )?),
            webhook_allowed_hosts: var("JOBS_WEBHOOK_ALLOWED_HOSTS")
                .map(|hosts| {
                    hosts
                        .split(',')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            static_dir: var("JOBS_STATIC_DIR"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.mongodb_uri.expose(), DEFAULT_MONGODB_URI);
        assert_eq!(c.mongodb_db, "jobs");
        assert_eq!(c.port, 3000);
        assert_eq!(c.lease, Duration::from_secs(300));
        assert_eq!(c.queue_timeout, Duration::from_secs(900));
        assert!(!c.is_production);
    }

    #[test]
    fn production_is_either_variable() {
        assert!(
            config(&[("VERCEL_ENV", "production")])
                .unwrap()
                .is_production
        );
        assert!(config(&[("NODE_ENV", "production")]).unwrap().is_production);
        assert!(!config(&[("VERCEL_ENV", "preview")]).unwrap().is_production);
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = config(&[("JOBS_LEASE_SECONDS", "soon")]).unwrap_err();
        assert_eq!(err.name, "JOBS_LEASE_SECONDS");
        assert!(config(&[("PORT", "70000")]).is_err());
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let c = config(&[("QSTASH_TOKEN", "tok-123"), ("JOBS_AUTH_SECRET", "s3cret")]).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("tok-123") && !printed.contains("s3cret"));
    }
}
