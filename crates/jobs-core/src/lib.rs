//! Everything of the jobs function but its HTTP edge: the task model and its state machine,
//! the MongoDB store, dispatch (QStash or self-invocation), auth, processors and the actions.

#![warn(missing_docs)]

pub mod actions;
pub mod alerts;
pub mod auth;
pub mod bulk;
pub mod chart;
pub mod conditional;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod error_groups;
pub mod event_stream;
pub mod failpoints;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod processors;
pub mod replies;
pub mod requests;
pub mod selection;
pub mod steps;
pub mod store;
pub mod sweeper;
pub mod task;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transitions;
pub mod versions;
pub mod watch;
pub mod worker;

pub use actions::{App, Delivery, StartupError};
pub use auth::Credentials;
pub use config::Config;
pub use error::JobsError;
pub use http::{Action, Query};
pub use processors::{Job, Processor, ProcessorError, ProcessorFuture, Processors};
