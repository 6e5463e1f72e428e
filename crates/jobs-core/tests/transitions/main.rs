//! Every transition of `jobs_core::transitions` against the real database (SecantusDB), from
//! tables in the manner of River's `riverdrivertest`: each row seeds a task in some state with
//! the factory (`jobs_core::testing`), applies one transition, and states whether its guard
//! matched and what the task looks like afterwards, the events it appended to the timeline
//! and the cause (`errorTemplate`, `errorGroup`) it recorded included. A row whose guard does
//! not match must leave the task exactly as it was. `assert_legal` checks every seed and every
//! result.
//!
//! One module per caller, as `transitions/` is split: [`worker`], [`owner`], [`rescuer`] and
//! [`bulk`] (whose `requeue_many` and `restore_many` have tables of their own, with the races
//! between single and bulk retries); [`causes`] groups the causes failures record
//! (`error_groups`). [`table`] runs a table's rows, each making one call of [`op`];
//! [`support`] holds what they all share.
//!
//! Needs `JOBS_TEST_MONGODB_URI` (`scripts/test` sets it); without it every test fails.

mod bulk;
mod causes;
mod op;
mod owner;
mod rescuer;
mod steps;
mod support;
mod table;
mod worker;
