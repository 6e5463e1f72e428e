//! Logging set-up: one structured line per request and per state change, filtered by
//! `RUST_LOG` (default `info`). Never a token, secret or payload body.

use tracing_subscriber::EnvFilter;

/// Installs the global logger (a second call does nothing): compact lines without colour, filtered
/// by `RUST_LOG`, else `info` with the MongoDB driver at `warn`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,mongodb=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .compact()
        .try_init();
}
