//! Bounds on the gateway's own streams of one kind (health `Watch`, reflection): each
//! holds a task and buffers for as long as its caller keeps it open, so callers holding a
//! crowd of them would otherwise cost the daemon memory without bound. One caller (a uid)
//! holds at most a quarter of them, so that one cannot take every other caller's. Past
//! either bound a new stream is refused with RESOURCE_EXHAUSTED, saying which.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// How refusals name the streams bounded.
#[derive(Debug)]
pub struct Kind {
    /// What they are, in the plural: "health Watch streams".
    pub streams: &'static str,
    /// What the gateway does with them: "follows".
    pub gateway: &'static str,
    /// What a caller refused may do instead.
    pub instead: &'static str,
}

/// The open streams of one kind, in all and by caller, against their bounds.
#[derive(Debug)]
pub struct Places {
    kind: Kind,
    limit: usize,
    per_caller: usize,
    /// In all, and by caller uid (None: a caller in this process, an embedded channel).
    open: Mutex<(usize, HashMap<Option<u32>, usize>)>,
}

/// One open stream's place, given back when it is dropped with the stream, however that
/// ends.
pub struct Place(Arc<Places>, Option<u32>);

impl Places {
    pub fn new(kind: Kind, limit: usize) -> Arc<Self> {
        Arc::new(Self { kind, limit, per_caller: (limit / 4).max(1), open: Mutex::new((0, HashMap::new())) })
    }

    /// A place for a new stream of the caller `uid`, or why there is none.
    pub fn take(self: &Arc<Self>, uid: Option<u32>) -> Result<Place, Status> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (all, by_caller) = &mut *open;
        let Kind { streams, gateway, instead } = &self.kind;
        if *all >= self.limit {
            return Err(Status::resource_exhausted(format!(
                "the gateway already {gateway} {} {streams}, its most: {instead}",
                self.limit
            )));
        }
        let mine = by_caller.entry(uid).or_default();
        if *mine >= self.per_caller {
            return Err(Status::resource_exhausted(format!(
                "this caller already holds {} {streams}, the most one caller may: {instead}",
                self.per_caller
            )));
        }
        *mine += 1;
        *all += 1;
        Ok(Place(self.clone(), uid))
    }

    /// How many are open.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (all, by_caller) = &mut *open;
        *all -= 1;
        if let Some(mine) = by_caller.get_mut(&self.1) {
            *mine -= 1;
            if *mine == 0 {
                by_caller.remove(&self.1);
            }
        }
    }
}
