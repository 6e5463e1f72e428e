//! HTTP integration tests: the real `jobs` binary, a real SecantusDB (see `support`).

mod bad_input;
mod qstash;
mod qstash_emulator;
mod retry;
mod support;
