//! Each plugin's captured output (stdout, stderr and SDK log records) in a
//! bounded ring for `supervisorctl tail`, plus a broadcast for `tail -f`.

use plugin_proto::control::v1::LogLine;
use tokio::sync::broadcast;

use super::ring::Ring;

#[derive(Debug)]
pub struct LogBuffer {
    ring: Ring<LogLine>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self { ring: Ring::new(capacity) }
    }

    pub fn push(&self, line: LogLine) {
        self.ring.push(line);
    }

    /// The last `n` lines and a receiver for what follows.
    pub fn subscribe(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        self.ring.subscribe(n)
    }
}
