//! Leaks found from trends: each instance's memory, tasks, descriptors and CPU kept over
//! a window, judged for a sustained rise, reported (and, if the plugin asks, replaced).

pub mod probe;
pub(crate) mod sampling;
pub mod trend;
pub mod watch;
