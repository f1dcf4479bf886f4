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
    left_out: std::sync::atomic::AtomicU64,
}

/// The most distinct calls kept: far more than every syscall of every architecture the
/// tiers know, with their argument variants, so only a plugin trying numbers at random
/// reaches it, and then costs the supervisor no more memory.
pub const MAX_DISTINCT: usize = 4096;

impl Recorder {
    /// Records against the tiers of `order`.
    pub fn new(order: TierOrder) -> Self {
        Self { order, seen: Mutex::default(), left_out: Default::default() }
    }

    /// Notes one notified call. Past [`MAX_DISTINCT`] distinct ones (a plugin calling
    /// every number there is), new ones are only counted as left out.
    pub fn record(&self, data: &libc::seccomp_data) {
        let data = SeccompData::from(data);
        let key = (data.arch, data.nr, self.order.denials(&data));
        if let Ok(mut seen) = self.seen.lock() {
            let full = seen.len() >= MAX_DISTINCT;
            match seen.get_mut(&key) {
                Some(known) => known.count += 1,
                None if full => {
                    self.left_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                None => {
                    seen.insert(key, RecordedCall { data, count: 1 });
                }
            }
        }
    }

    /// Calls not recorded because [`MAX_DISTINCT`] distinct ones were already.
    pub fn left_out(&self) -> u64 {
        self.left_out.load(std::sync::atomic::Ordering::Relaxed)
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
