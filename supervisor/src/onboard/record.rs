//! What a learning pass saw: every call the learning filter notified,
//! kept once per syscall and per set of tiers that would deny it, so a
//! plugin making millions of calls costs a few entries, and the verdict can
//! still tell `mmap` with PROT_EXEC from `mmap` without.

use std::collections::HashMap;
use std::sync::Mutex;

use super::fit::{RecordedCall, TierOrder};
use crate::sandbox::tier::sim::SeccompData;

/// A syscall (audit arch, number) and, per tier tightest first, whether that tier
/// denies the call.
type Key = (u32, i32, Vec<bool>);

/// The calls of one learning pass.
#[derive(Debug)]
pub struct Recorder {
    order: TierOrder,
    seen: Mutex<HashMap<Key, RecordedCall>>,
}

impl Recorder {
    /// Records against the tiers of `order`.
    pub fn new(order: TierOrder) -> Self {
        Self { order, seen: Mutex::default() }
    }

    /// Notes one notified call.
    pub fn record(&self, data: &libc::seccomp_data) {
        let data = SeccompData::from(data);
        let key = (data.arch, data.nr, self.order.denials(&data));
        if let Ok(mut seen) = self.seen.lock() {
            seen.entry(key).or_insert(RecordedCall { data, count: 0 }).count += 1;
        }
    }

    /// The distinct calls seen so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.seen.lock().map(|s| s.values().copied().collect()).unwrap_or_default()
    }

    /// The tiers it records against.
    pub fn order(&self) -> &TierOrder {
        &self.order
    }
}
