//! HTTP integration tests: the real `jobs` binary, a real SecantusDB (see `support`).

mod at_scale;
mod auth;
mod bad_input;
mod conditional_list;
mod crash_points;
mod groups;
mod hardening;
mod idempotency;
mod lease_loss;
mod lifecycle;
mod load;
mod platform;
mod qstash;
mod qstash_emulator;
mod qstash_emulator_contract;
mod qstash_failures;
mod qstash_signatures;
mod recovery;
mod retry;
mod steps;
mod stranded;
mod stubs;
mod support;
mod upgrade;
mod vercel_dev;
mod versions;
