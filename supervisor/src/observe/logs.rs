//! Each plugin's captured output (stdout, stderr and SDK log records) in a
//! bounded ring for `supervisorctl tail`, plus a broadcast for `tail -f`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use plugin_proto::control::v1::LogLine;
use tokio::sync::broadcast;

#[derive(Debug)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    tx: broadcast::Sender<LogLine>,
    /// Lines the plugin's SDK dropped before they reached us.
    pub dropped_by_plugin: AtomicU64,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            tx: broadcast::channel(1024).0,
            dropped_by_plugin: AtomicU64::new(0),
        }
    }

    pub fn push(&self, line: LogLine) {
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == self.capacity {
                l.pop_front();
            }
            l.push_back(line.clone());
        }
        let _ = self.tx.send(line);
    }

    pub fn note_plugin_drops(&self, n: u64) {
        self.dropped_by_plugin.fetch_add(n, Ordering::Relaxed);
    }

    /// The last `n` lines and a receiver for what follows.
    pub fn subscribe(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let l = self.lines.lock();
        let rx = self.tx.subscribe();
        let lines = l.map(|l| l.iter().skip(l.len().saturating_sub(n)).cloned().collect()).unwrap_or_default();
        (lines, rx)
    }
}
