//! HTTP integration tests: the real `jobs` binary, a real SecantusDB (see `support`).

mod auth;
mod bad_input;
mod load;
mod qstash;
mod qstash_emulator;
mod recovery;
mod retry;
mod support;
