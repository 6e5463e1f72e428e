//! Configuration: one struct read from the environment once, at start-up (docs/spec.md §9).
//! Defaults and validation live here and nowhere else.

use std::fmt;
use std::time::Duration;

/// A value that must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value so that `Debug` prints it masked.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must use it (a header, a signing key); never log
    /// it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The header that carries `JOBS_INTERNAL_SECRET`: `dispatch` sends it on self-invocations,
/// `auth` checks it.
pub const INTERNAL_SECRET_HEADER: &str = "x-jobs-internal-secret";

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
    /// build, and must not be mistaken for production); `NODE_ENV` covers other hosts. Running
    /// on Vercel without `VERCEL_ENV` fails closed: production, never development.
    fn detect(vercel_env: Option<&str>, node_env: Option<&str>, on_vercel: bool) -> Self {
        match (vercel_env, node_env) {
            (Some("production"), _) => Self::Production,
            (Some("preview"), _) => Self::Preview,
            (Some(_), _) => Self::Development,
            (None, _) if on_vercel => Self::Production,
            (None, Some("production")) => Self::Production,
            (None, _) => Self::Development,
        }
    }

    /// Production or preview: reachable from the internet, so every secret is required.
    pub fn is_deployed(self) -> bool {
        self != Self::Development
    }
}

/// The service's settings, read once at start-up by [`Config::from_env`]. Each field names the
/// variable it comes from; empty values count as unset.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MONGODB_URI`; `None` falls back to [`DEFAULT_MONGODB_URI`] in development and is a
    /// start-up error when deployed.
    pub mongodb_uri: Option<Secret>,
    /// `MONGODB_DB` (default `jobs`): the database holding the `tasks` collection.
    pub mongodb_db: String,
    /// Development, preview or production: from `VERCEL_ENV`, else `NODE_ENV` (see
    /// [`Environment`]).
    pub environment: Environment,
    /// `VERCEL_DEV=1`: running under `vercel dev`, whose `VERCEL_URL` is `localhost:PORT`.
    pub vercel_dev: bool,
    /// `VERCEL_URL` (Vercel sets it): this deployment's host, without scheme; the hand-off base of
    /// previews, and of `vercel dev` (`localhost:PORT`).
    pub vercel_url: Option<String>,
    /// `VERCEL_PROJECT_PRODUCTION_URL` (Vercel sets it): the production domain, production's
    /// hand-off base because it is not behind Deployment Protection.
    pub vercel_project_production_url: Option<String>,
    /// `VERCEL_AUTOMATION_BYPASS_SECRET`: Protection Bypass for Automation, sent as
    /// `x-vercel-protection-bypass` on every hand-off so protected previews reach `process`.
    pub automation_bypass_secret: Option<Secret>,
    /// `PORT` (default 3000, 1..=65535): the local port; the hand-off base in development when no
    /// other base is known.
    pub port: u16,
    /// `JOBS_PUBLIC_URL`, without a trailing `/`: the base of every hand-off, overriding all other
    /// bases (use it for a custom domain).
    pub public_url: Option<String>,
    /// `QSTASH_TOKEN`: hand tasks off through QStash. Unset on a deployment means self-invocation
    /// (a warning at start-up, and `JOBS_INTERNAL_SECRET` becomes required).
    pub qstash_token: Option<Secret>,
    /// `QSTASH_URL`, without a trailing `/`: the QStash API host; unset means Upstash's own. Set it
    /// to use a local QStash dev server.
    pub qstash_url: Option<String>,
    /// `QSTASH_CURRENT_SIGNING_KEY`: verifies `Upstash-Signature` on deliveries to `process` and on
    /// scheduled `sweep` calls. Required when deployed with QStash.
    pub qstash_current_signing_key: Option<Secret>,
    /// `QSTASH_NEXT_SIGNING_KEY`: the key QStash rotates to; a signature valid under either key is
    /// accepted. Unset, the current key stands in; required when deployed with QStash.
    pub qstash_next_signing_key: Option<Secret>,
    /// `USE_QSTASH_IN_DEV=true`: hand off through QStash in development too (needs `QSTASH_TOKEN`
    /// and `QSTASH_BASE_URL`). Deployed, `QSTASH_TOKEN` alone decides.
    pub use_qstash_in_dev: bool,
    /// `QSTASH_BASE_URL`, without a trailing `/`: in development with QStash, the public URL QStash
    /// delivers to (e.g. an ngrok tunnel). `JOBS_PUBLIC_URL` wins when set.
    pub qstash_base_url: Option<String>,
    /// `JOBS_QSTASH_RETRIES` (default 3, 0..=5): the `Upstash-Retries` sent with every publish,
    /// i.e. how many redeliveries QStash makes when `process` does not answer 2xx.
    pub qstash_retries: u32,
    /// `JOBS_AUTH_SECRET`: the HS256 key of user tokens (`Authorization: Bearer <JWT>`, `sub` =
    /// user id). Unset in development means the client's `userId` is trusted; required when
    /// deployed.
    pub auth_secret: Option<Secret>,
    /// `JOBS_INTERNAL_SECRET`: sent as [`INTERNAL_SECRET_HEADER`] on self-invocations; once set,
    /// `process` requires it or a valid QStash signature. Required on a deployment without
    /// `QSTASH_TOKEN`.
    pub internal_secret: Option<Secret>,
    /// `CRON_SECRET`: `sweep` requires it as `Authorization: Bearer` (Vercel Cron sends it) unless
    /// the call carries a QStash signature. Required when deployed.
    pub cron_secret: Option<Secret>,
    /// `JOBS_METRICS_TOKEN`: `metrics` requires it as `Authorization: Bearer`; unset, `metrics`
    /// is off (404).
    pub metrics_token: Option<Secret>,
    /// `JOBS_ALERT_WEBHOOK_URL`: where alerts are POSTed (docs/spec.md §21); its host must be
    /// in `JOBS_WEBHOOK_ALLOWED_HOSTS`, as a webhook task's. Unset: no alerts.
    pub alert_webhook_url: Option<String>,
    /// `JOBS_ALERT_SECRET`: the key alerts are signed with; required with the URL.
    pub alert_secret: Option<Secret>,
    /// `JOBS_ALERT_GROUP_THRESHOLD` (default 10, 1..=100000): a group's failures in a window
    /// above this alert.
    pub alert_group_threshold: i64,
    /// `JOBS_ALERT_WINDOW_MINUTES` (default 60, 1..=1440): the window of the threshold, and of
    /// the one alert per group.
    pub alert_window: Duration,
    /// `JOBS_LEASE_SECONDS` (default 300; at least 30 when deployed, at least 1 in development
    /// for tests): how long a claim holds a task without a heartbeat before `sweep` fails it as
    /// a lost worker. The worker renews it every sixth of its length.
    pub lease: Duration,
    /// `JOBS_QUEUE_TIMEOUT_SECONDS` (default 900, 1..=604800): how long after `sweep` re-sent
    /// its hand-off a task still `queued` (or `scheduled`) is failed as never picked up.
    pub queue_timeout: Duration,
    /// `JOBS_REDISPATCH_SECONDS` (default 120, 1..=86400): how old a `queued` task's hand-off
    /// must be before `sweep` re-sends it with the same deduplication id (and, through QStash,
    /// how long past due a `scheduled` task's).
    pub redispatch_after: Duration,
    /// `JOBS_GROUPS_CACHE_SECONDS` (default 30, 0..=3600): the longest `groups` answers a
    /// user's failures from the answer kept for them (docs/spec.md §14); 0 turns keeping off.
    pub groups_cache: Duration,
    /// `JOBS_WATCH_SECONDS` (default 240, 1..=780): how long one `watch` stream stays open
    /// before it ends with `end` and the client reconnects; below the function's
    /// `maxDuration` (300 s in `vercel.json`), so the platform never cuts it (docs/spec.md §18).
    pub watch_duration: Duration,
    /// `JOBS_WATCH_PING_SECONDS` (default 15, 1..=60): how often an idle `watch` stream sends a
    /// `: ping` comment, so proxies keep it open.
    pub watch_ping: Duration,
    /// `JOBS_DB_TIMEOUT_MS` (default 10000, 100..=120000): the longest one database operation
    /// may take before the request answers 503 `DB_UNAVAILABLE`.
    pub db_operation_timeout: Duration,
    /// `JOBS_DB_MAX_POOL_SIZE` (default 5, 1..=100): MongoDB connections per function
    /// instance; `maxPoolSize` in `MONGODB_URI` wins.
    pub db_max_pool_size: u32,
    /// `JOBS_WORK_BUDGET_SECONDS` (default 240, 1..=900): the most work a task may ask for, so
    /// it fits the function's `maxDuration` (300 s in `vercel.json`).
    pub work_budget: Duration,
    /// `JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`: the `webhook` processor may call hosts that
    /// resolve to loopback, private or link-local addresses (tests, intranets). Off by default.
    pub webhook_allow_private_networks: bool,
    /// `JOBS_AUTH_ISSUER`: when set, user tokens must carry this `iss`.
    pub auth_issuer: Option<String>,
    /// `JOBS_AUTH_AUDIENCE`: when set, user tokens must carry this `aud`.
    pub auth_audience: Option<String>,
    /// `JOBS_WEBHOOK_ALLOWED_HOSTS`, comma-separated, lower-cased: the only hosts the `webhook`
    /// processor may call. Unset (the default) allows none.
    pub webhook_allowed_hosts: Vec<String>,
    /// `JOBS_STATIC_DIR`, development only: serve the Task Manager page from this folder next to
    /// the API (`scripts/dev` sets it).
    pub static_dir: Option<String>,
    /// The variables whose values could not be used, in reading order (their defaults stand
    /// in). Not empty: every action answers 503 `MISCONFIGURED` and nothing is written.
    pub invalid: Vec<ConfigError>,
}

/// A variable whose value cannot be used. The service still starts, refuses every action with
/// 503 `MISCONFIGURED` and names it in `health` (docs/spec.md §6). `Display` is `NAME: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    /// The variable, e.g. `JOBS_LEASE_SECONDS`.
    pub name: &'static str,
    /// What is wrong with its value, e.g. the range it must be in.
    pub problem: String,
}

/// The database development uses without `MONGODB_URI`: a local server on MongoDB's default port.
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";

/// Why `value` cannot be a base URL (http or https, a host, no query or fragment), or the
/// parsed URL. Shared by start-up validation and [`crate::dispatch::decide`].
pub fn parse_base_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected http:// or https:// and a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".into());
    }
    Ok(url)
}

impl Config {
    /// Reads the process environment; called once per process, at start-up.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup; empty values count as unset. A value
    /// that cannot be used is recorded in [`Config::invalid`] and its default stands in, so the
    /// process can start and say what is wrong instead of exiting before it serves.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let invalid = std::cell::RefCell::new(Vec::new());
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret = |name: &str| var(name).map(Secret);
        // An invalid base is kept, so `dispatch::decide` names it too; an invalid `QSTASH_URL`
        // is dropped, or the QStash client could not even be built.
        let url = |name: &'static str, keep_invalid: bool| {
            let value = var(name)?;
            if let Err(why) = parse_base_url(&value) {
                invalid.borrow_mut().push(ConfigError {
                    name,
                    problem: format!("expected an http(s) base URL ({why}), got {value:?}"),
                });
                if !keep_invalid {
                    return None;
                }
            }
            Some(value.trim_end_matches('/').to_owned())
        };
        let number = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            let Some(raw) = var(name) else {
                return default;
            };
            match raw.parse::<u64>() {
                Ok(n) if range.contains(&n) => n,
                _ => {
                    invalid.borrow_mut().push(ConfigError {
                        name,
                        problem: format!(
                            "expected a whole number in {}..={}, got {raw:?}",
                            range.start(),
                            range.end()
                        ),
                    });
                    default
                }
            }
        };

        // The Vercel runtime sets `VERCEL_IPC_PATH`, Vercel sets `VERCEL=1` (so does `vercel
        // dev`, whose Rust builder adds `VERCEL_DEV=1`).
        let vercel_dev = var("VERCEL_DEV").as_deref() == Some("1");
        let on_vercel = var("VERCEL_IPC_PATH").is_some()
            || (var("VERCEL").as_deref() == Some("1") && !vercel_dev);
        let environment = Environment::detect(
            var("VERCEL_ENV").as_deref(),
            var("NODE_ENV").as_deref(),
            on_vercel,
        );
        // Deployed, a lease shorter than 30 s would be renewed more often than every 10 s by
        // every running task; development allows short ones so tests need not wait.
        let lease_floor = if environment.is_deployed() { 30 } else { 1 };
        let seconds = |name, default, range| Duration::from_secs(number(name, default, range));

        let config = Self {
            mongodb_uri: secret("MONGODB_URI"),
            mongodb_db: var("MONGODB_DB").unwrap_or_else(|| "jobs".into()),
            environment,
            vercel_dev,
            vercel_url: var("VERCEL_URL"),
            vercel_project_production_url: var("VERCEL_PROJECT_PRODUCTION_URL"),
            automation_bypass_secret: secret("VERCEL_AUTOMATION_BYPASS_SECRET"),
            port: number("PORT", 3000, 1..=65535) as u16,
            public_url: url("JOBS_PUBLIC_URL", true),
            qstash_token: secret("QSTASH_TOKEN"),
            qstash_url: url("QSTASH_URL", false),
            qstash_current_signing_key: secret("QSTASH_CURRENT_SIGNING_KEY"),
            qstash_next_signing_key: secret("QSTASH_NEXT_SIGNING_KEY"),
            use_qstash_in_dev: var("USE_QSTASH_IN_DEV").as_deref() == Some("true"),
            qstash_base_url: url("QSTASH_BASE_URL", true),
            qstash_retries: number("JOBS_QSTASH_RETRIES", 3, 0..=5) as u32,
            auth_secret: secret("JOBS_AUTH_SECRET"),
            internal_secret: secret("JOBS_INTERNAL_SECRET"),
            cron_secret: secret("CRON_SECRET"),
            metrics_token: secret("JOBS_METRICS_TOKEN"),
            alert_webhook_url: url("JOBS_ALERT_WEBHOOK_URL", false),
            alert_secret: secret("JOBS_ALERT_SECRET"),
            alert_group_threshold: number("JOBS_ALERT_GROUP_THRESHOLD", 10, 1..=100_000) as i64,
            alert_window: Duration::from_secs(
                60 * number("JOBS_ALERT_WINDOW_MINUTES", 60, 1..=1_440),
            ),
            lease: seconds("JOBS_LEASE_SECONDS", 300, lease_floor..=86_400),
            queue_timeout: seconds("JOBS_QUEUE_TIMEOUT_SECONDS", 900, 1..=604_800),
            redispatch_after: seconds("JOBS_REDISPATCH_SECONDS", 120, 1..=86_400),
            groups_cache: seconds("JOBS_GROUPS_CACHE_SECONDS", 30, 0..=3_600),
            watch_duration: seconds("JOBS_WATCH_SECONDS", 240, 1..=780),
            watch_ping: seconds("JOBS_WATCH_PING_SECONDS", 15, 1..=60),
            db_operation_timeout: Duration::from_millis(number(
                "JOBS_DB_TIMEOUT_MS",
                10_000,
                100..=120_000,
            )),
            db_max_pool_size: number("JOBS_DB_MAX_POOL_SIZE", 5, 1..=100) as u32,
            work_budget: seconds("JOBS_WORK_BUDGET_SECONDS", 240, 1..=900),
            webhook_allow_private_networks: var("JOBS_WEBHOOK_ALLOW_PRIVATE_NETWORKS").as_deref()
                == Some("true"),
            auth_issuer: var("JOBS_AUTH_ISSUER"),
            auth_audience: var("JOBS_AUTH_AUDIENCE"),
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
            invalid: Vec::new(),
        };
        if config.alert_webhook_url.is_some() && config.alert_secret.is_none() {
            invalid.borrow_mut().push(ConfigError {
                name: "JOBS_ALERT_SECRET",
                problem: "required with JOBS_ALERT_WEBHOOK_URL: every alert is signed with it"
                    .into(),
            });
        }
        Self {
            invalid: invalid.into_inner(),
            ..config
        }
    }

    /// Production only: a preview is deployed but not production (see [`Config::is_deployed`]).
    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// Production or preview (docs/spec.md §6).
    pub fn is_deployed(&self) -> bool {
        self.environment.is_deployed()
    }

    /// Deployed (production or preview), the settings that are missing or contradict the
    /// chosen transport, each by its variable name (docs/spec.md §6). Empty in development.
    pub fn missing_for_deployment(&self) -> Vec<&'static str> {
        if !self.is_deployed() {
            return Vec::new();
        }
        let qstash = self.qstash_token.is_some();
        let checks = [
            ("MONGODB_URI", self.mongodb_uri.is_none()),
            ("JOBS_AUTH_SECRET", self.auth_secret.is_none()),
            ("CRON_SECRET", self.cron_secret.is_none()),
            // Without it, a token minted for another service sharing the secret would do.
            ("JOBS_AUTH_AUDIENCE", self.auth_audience.is_none()),
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

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]);
        assert!(c.invalid.is_empty());
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
        let rows: [(&[(&str, &str)], Environment); 14] = [
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
            // On Vercel without VERCEL_ENV: production, never development.
            (&[("VERCEL", "1")], Production),
            (&[("VERCEL_IPC_PATH", "/tmp/ipc.sock")], Production),
            (
                &[("VERCEL_IPC_PATH", "/tmp/ipc.sock"), ("VERCEL_DEV", "1")],
                Production,
            ),
            (&[("VERCEL", "1"), ("NODE_ENV", "development")], Production),
            (&[("VERCEL", "1"), ("VERCEL_ENV", "preview")], Preview),
            // `vercel dev`: its Rust builder sets VERCEL_DEV=1, and VERCEL_ENV when linked.
            (&[("VERCEL", "1"), ("VERCEL_DEV", "1")], Development),
            (
                &[("VERCEL", "1"), ("VERCEL_ENV", "development")],
                Development,
            ),
        ];
        for (vars, expected) in rows {
            let c = config(vars);
            assert_eq!(c.environment, expected, "{vars:?}");
            assert_eq!(c.is_deployed(), expected != Development, "{vars:?}");
        }
    }

    #[test]
    fn deployed_settings_table() {
        const COMPLETE: [(&str, &str); 7] = [
            ("VERCEL_ENV", "preview"),
            ("MONGODB_URI", "mongodb+srv://cluster.example.net"),
            ("JOBS_AUTH_SECRET", "a"),
            ("JOBS_AUTH_AUDIENCE", "jobs"),
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
            (without("JOBS_AUTH_AUDIENCE"), vec!["JOBS_AUTH_AUDIENCE"]),
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
                    "JOBS_AUTH_AUDIENCE",
                    "JOBS_INTERNAL_SECRET",
                ],
            ),
            (vec![], vec![]),
        ];
        for (vars, missing) in rows {
            assert_eq!(config(&vars).missing_for_deployment(), missing, "{vars:?}");
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

    /// A value that cannot be used is recorded with its variable and the rule it broke (the
    /// default stands in); the process still starts.
    #[test]
    fn invalid_values_table() {
        let deployed = ("VERCEL_ENV", "preview");
        /// (variables set, the `(name, problem)`s recorded)
        type Row<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);
        let rows: Vec<Row> = vec![
            (
                vec![deployed, ("JOBS_LEASE_SECONDS", "29")],
                vec![(
                    "JOBS_LEASE_SECONDS",
                    "expected a whole number in 30..=86400, got \"29\"",
                )],
            ),
            (vec![deployed, ("JOBS_LEASE_SECONDS", "30")], vec![]),
            (
                vec![("JOBS_ALERT_WEBHOOK_URL", "https://hooks.example.com/x")],
                vec![(
                    "JOBS_ALERT_SECRET",
                    "required with JOBS_ALERT_WEBHOOK_URL: every alert is signed with it",
                )],
            ),
            (
                vec![
                    ("JOBS_ALERT_WEBHOOK_URL", "https://hooks.example.com/x"),
                    ("JOBS_ALERT_SECRET", "s"),
                ],
                vec![],
            ),
            (
                vec![("JOBS_ALERT_WINDOW_MINUTES", "0")],
                vec![(
                    "JOBS_ALERT_WINDOW_MINUTES",
                    "expected a whole number in 1..=1440, got \"0\"",
                )],
            ),
            (vec![("JOBS_LEASE_SECONDS", "1")], vec![]),
            (
                vec![("JOBS_LEASE_SECONDS", "0")],
                vec![(
                    "JOBS_LEASE_SECONDS",
                    "expected a whole number in 1..=86400, got \"0\"",
                )],
            ),
            (
                vec![("JOBS_LEASE_SECONDS", "soon")],
                vec![(
                    "JOBS_LEASE_SECONDS",
                    "expected a whole number in 1..=86400, got \"soon\"",
                )],
            ),
            (
                vec![("PORT", "70000")],
                vec![(
                    "PORT",
                    "expected a whole number in 1..=65535, got \"70000\"",
                )],
            ),
            (
                vec![("JOBS_PUBLIC_URL", "notaurl")],
                vec![(
                    "JOBS_PUBLIC_URL",
                    "expected an http(s) base URL (relative URL without a base), got \"notaurl\"",
                )],
            ),
            (
                vec![
                    ("QSTASH_URL", "ftp://qstash.example"),
                    ("QSTASH_BASE_URL", "https://x.ngrok.app/?a=1"),
                    ("JOBS_QSTASH_RETRIES", "9"),
                ],
                vec![
                    (
                        "QSTASH_URL",
                        "expected an http(s) base URL (expected http:// or https:// and a host), \
                         got \"ftp://qstash.example\"",
                    ),
                    (
                        "QSTASH_BASE_URL",
                        "expected an http(s) base URL (a base URL has no query or fragment), \
                         got \"https://x.ngrok.app/?a=1\"",
                    ),
                    (
                        "JOBS_QSTASH_RETRIES",
                        "expected a whole number in 0..=5, got \"9\"",
                    ),
                ],
            ),
            (
                vec![("JOBS_PUBLIC_URL", "https://jobs.example.com/")],
                vec![],
            ),
        ];
        for (vars, expected) in rows {
            let c = config(&vars);
            let invalid: Vec<(&str, &str)> = c
                .invalid
                .iter()
                .map(|e| (e.name, e.problem.as_str()))
                .collect();
            assert_eq!(invalid, expected, "{vars:?}");
        }
        let c = config(&[
            ("JOBS_LEASE_SECONDS", "soon"),
            ("JOBS_PUBLIC_URL", "notaurl"),
        ]);
        assert_eq!(c.lease, Duration::from_secs(300), "the default stands in");
        assert_eq!(
            c.public_url.as_deref(),
            Some("notaurl"),
            "kept for dispatch to name"
        );
        let c = config(&[("QSTASH_URL", "notaurl")]);
        assert_eq!(c.qstash_url, None, "the QStash client can still be built");
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let c = config(&[("QSTASH_TOKEN", "tok-123"), ("JOBS_AUTH_SECRET", "s3cret")]);
        let printed = format!("{c:?}");
        assert!(!printed.contains("tok-123") && !printed.contains("s3cret"));
    }
}
