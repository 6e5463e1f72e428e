//! Configuration: one struct read from the environment once, at start-up (SPEC section 9).
//! Defaults and validation live here and nowhere else.

use std::fmt;
use std::time::Duration;

/// A value that must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where the function runs, which decides its security rules and its dispatch base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// A laptop: `scripts/dev`, `vercel dev`, or tests. Missing secrets are tolerated.
    Development,
    /// A Vercel preview deployment: on the internet, possibly on the production database, so
    /// it has production's security rules.
    Preview,
    /// `VERCEL_ENV=production`, or `NODE_ENV=production` when `VERCEL_ENV` is not set.
    Production,
}

impl Environment {
    /// `VERCEL_ENV` decides when Vercel sets it (a preview keeps `NODE_ENV=production` from its
    /// build, and must not be mistaken for production); `NODE_ENV` covers other hosts.
    fn detect(vercel_env: Option<&str>, node_env: Option<&str>) -> Self {
        match (vercel_env, node_env) {
            (Some("production"), _) => Self::Production,
            (Some("preview"), _) => Self::Preview,
            (Some(_), _) => Self::Development,
            (None, Some("production")) => Self::Production,
            (None, _) => Self::Development,
        }
    }

    /// Production or preview: reachable from the internet, so every secret is required.
    pub fn is_deployed(self) -> bool {
        self != Self::Development
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `MONGODB_URI`; `None` falls back to [`DEFAULT_MONGODB_URI`] in development and is a
    /// start-up error when deployed.
    pub mongodb_uri: Option<Secret>,
    pub mongodb_db: String,
    pub environment: Environment,
    /// `VERCEL_DEV=1`: running under `vercel dev`, whose `VERCEL_URL` is `localhost:PORT`.
    pub vercel_dev: bool,
    /// Host of this deployment, without scheme (Vercel sets it).
    pub vercel_url: Option<String>,
    /// The production domain (Vercel sets it); not behind Deployment Protection.
    pub vercel_project_production_url: Option<String>,
    /// Protection Bypass for Automation, forwarded on every hand-off.
    pub automation_bypass_secret: Option<Secret>,
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
            mongodb_uri: secret("MONGODB_URI"),
            mongodb_db: var("MONGODB_DB").unwrap_or_else(|| "jobs".into()),
            environment: Environment::detect(
                var("VERCEL_ENV").as_deref(),
                var("NODE_ENV").as_deref(),
            ),
            vercel_dev: var("VERCEL_DEV").as_deref() == Some("1"),
            vercel_url: var("VERCEL_URL"),
            vercel_project_production_url: var("VERCEL_PROJECT_PRODUCTION_URL"),
            automation_bypass_secret: secret("VERCEL_AUTOMATION_BYPASS_SECRET"),
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

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// Production or preview (SPEC section 6).
    pub fn is_deployed(&self) -> bool {
        self.environment.is_deployed()
    }

    /// Deployed (production or preview), the settings that are missing or contradict the
    /// chosen transport, each by its variable name (SPEC section 6). Empty in development.
    pub fn missing_for_deployment(&self) -> Vec<&'static str> {
        if !self.is_deployed() {
            return Vec::new();
        }
        let qstash = self.qstash_token.is_some();
        let checks = [
            ("MONGODB_URI", self.mongodb_uri.is_none()),
            ("JOBS_AUTH_SECRET", self.auth_secret.is_none()),
            ("CRON_SECRET", self.cron_secret.is_none()),
            (
                "QSTASH_CURRENT_SIGNING_KEY",
                qstash && self.qstash_current_signing_key.is_none(),
            ),
            (
                "QSTASH_NEXT_SIGNING_KEY",
                qstash && self.qstash_next_signing_key.is_none(),
            ),
            // Self-invocation without it: `process` refuses every hand-off.
            (
                "JOBS_INTERNAL_SECRET",
                !qstash && self.internal_secret.is_none(),
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect()
    }

    /// The connection string, or the local default in development.
    pub fn mongodb_uri(&self) -> &str {
        self.mongodb_uri
            .as_ref()
            .map_or(DEFAULT_MONGODB_URI, Secret::expose)
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
        assert_eq!(c.mongodb_uri(), DEFAULT_MONGODB_URI);
        assert_eq!(c.mongodb_db, "jobs");
        assert_eq!(c.port, 3000);
        assert_eq!(c.lease, Duration::from_secs(300));
        assert_eq!(c.queue_timeout, Duration::from_secs(900));
        assert_eq!(c.environment, Environment::Development);
        assert!(!c.vercel_dev);
    }

    #[test]
    fn environment_table() {
        use Environment::*;
        let rows: [(&[(&str, &str)], Environment); 7] = [
            (&[], Development),
            (&[("VERCEL_ENV", "development")], Development),
            (&[("VERCEL_ENV", "production")], Production),
            (&[("NODE_ENV", "production")], Production),
            (&[("VERCEL_ENV", "preview")], Preview),
            (
                &[("VERCEL_ENV", "preview"), ("NODE_ENV", "production")],
                Preview,
            ),
            (
                &[("VERCEL_ENV", "development"), ("NODE_ENV", "production")],
                Development,
            ),
        ];
        for (vars, expected) in rows {
            let c = config(vars).unwrap();
            assert_eq!(c.environment, expected, "{vars:?}");
            assert_eq!(c.is_deployed(), expected != Development, "{vars:?}");
        }
    }

    #[test]
    fn deployed_settings_table() {
        const COMPLETE: [(&str, &str); 6] = [
            ("VERCEL_ENV", "preview"),
            ("MONGODB_URI", "mongodb+srv://cluster.example.net"),
            ("JOBS_AUTH_SECRET", "a"),
            ("CRON_SECRET", "c"),
            ("QSTASH_TOKEN", "t"),
            ("QSTASH_CURRENT_SIGNING_KEY", "k1"),
        ];
        let without = |name: &str| -> Vec<(&str, &str)> {
            COMPLETE
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .chain([("QSTASH_NEXT_SIGNING_KEY", "k2")])
                .collect()
        };
        type Vars<'a> = Vec<(&'a str, &'a str)>;
        let rows: Vec<(Vars, Vec<&str>)> = vec![
            (without("-"), vec![]),
            (without("MONGODB_URI"), vec!["MONGODB_URI"]),
            (without("JOBS_AUTH_SECRET"), vec!["JOBS_AUTH_SECRET"]),
            (without("CRON_SECRET"), vec!["CRON_SECRET"]),
            (
                without("QSTASH_CURRENT_SIGNING_KEY"),
                vec!["QSTASH_CURRENT_SIGNING_KEY"],
            ),
            (COMPLETE.to_vec(), vec!["QSTASH_NEXT_SIGNING_KEY"]),
            (without("QSTASH_TOKEN"), vec!["JOBS_INTERNAL_SECRET"]),
            (
                without("QSTASH_TOKEN")
                    .into_iter()
                    .chain([("JOBS_INTERNAL_SECRET", "i")])
                    .collect(),
                vec![],
            ),
            (
                vec![("VERCEL_ENV", "production")],
                vec![
                    "MONGODB_URI",
                    "JOBS_AUTH_SECRET",
                    "CRON_SECRET",
                    "JOBS_INTERNAL_SECRET",
                ],
            ),
            (vec![], vec![]),
        ];
        for (vars, missing) in rows {
            assert_eq!(
                config(&vars).unwrap().missing_for_deployment(),
                missing,
                "{vars:?}"
            );
        }
    }

    /// `vercel dev` loads `.env`: a copied example must not override what Vercel sets, and
    /// every variable the service reads is documented there.
    #[test]
    fn env_example_documents_every_variable_and_sets_no_vercel_ones() {
        let example = include_str!("../../../.env.example");
        let assigned: Vec<&str> = example
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .filter(|name| !name.starts_with('#'))
            .collect();
        assert!(
            assigned.iter().all(|name| !name.starts_with("VERCEL_")),
            "{assigned:?}"
        );
        let source = include_str!("config.rs");
        let read: Vec<&str> = source
            .split(['"', '('])
            .filter(|word| {
                word.len() > 3 && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
            .filter(|word| word.contains('_') || ["PORT"].contains(word))
            .collect();
        assert!(
            read.len() > 20 && read.contains(&"VERCEL_AUTOMATION_BYPASS_SECRET"),
            "{read:?}"
        );
        for name in read {
            assert!(
                example.contains(name),
                "{name} is not documented in .env.example"
            );
        }
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
