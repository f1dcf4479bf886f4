//! What the supervisor tells operators: lifecycle events and each plugin's
//! captured output, held in bounded buffers that drop rather than wait and
//! rate-limited per plugin (and forwarded to the daemon's own output), and
//! metrics for Prometheus.

pub mod capture;
pub mod events;
pub mod forward;
pub mod limit;
pub mod logs;
pub mod metrics;
pub mod phases;
pub(crate) mod ring;
pub mod scrape;
pub mod teardown;

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, for records operators read.
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
