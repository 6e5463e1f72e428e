//! HTTP integration tests: the real `jobs` binary, a real SecantusDB (see `support`).

mod bad_input;
mod retry;
mod support;
