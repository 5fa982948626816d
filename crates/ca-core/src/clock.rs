//! Injected time: core logic asks a [`Clock`], so tests can use fixed instants. The one clock of
//! the workspace, from cerdb.

pub use cerdb::{Clock, FixedClock, SystemClock};
