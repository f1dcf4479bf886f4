//! A steady load for tests: callers that make a call again and again until told to stop,
//! counting the calls and keeping the first failures' words. Bounded however the calls
//! go: a caller whose calls fail at once waits a little before the next (a daemon that
//! is gone must not make it spin), at most [`KEPT`] failures are kept, a call that hangs
//! ends its caller, and the callers stop when the load is dropped (a test that panics
//! while they run ends instead of calling on forever).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many failures' words are kept.
pub const KEPT: usize = 20;
/// Longer than any call may take: the daemons' call timeouts are far shorter.
pub const CALL_LIMIT: Duration = Duration::from_secs(120);
/// What each call must answer.
pub const STEADY: &str = "steady";

#[derive(Default)]
struct Tally {
    stop: AtomicBool,
    calls: AtomicUsize,
    failed: AtomicUsize,
    kept: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() < KEPT {
            kept.push(why);
        }
    }
}

/// What a load saw.
#[derive(Debug)]
pub struct Outcome {
    pub calls: usize,
    pub failed: usize,
    /// The first failures' words.
    pub failures: Vec<String>,
}

#[derive(Default)]
pub struct Load {
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn new() -> Self {
        Self::default()
    }

    /// One more caller, making `call` (which must answer [`STEADY`]) again and again.
    pub fn caller<F, Fut>(&mut self, mut call: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, tonic::Status>> + Send,
    {
        let tally = self.tally.clone();
        self.tasks.push(tokio::spawn(async move {
            while !tally.stop.load(Ordering::Relaxed) {
                let failed = match tokio::time::timeout(CALL_LIMIT, call()).await {
                    Ok(Ok(text)) if text == STEADY => false,
                    Ok(Ok(text)) => {
                        tally.fail(format!("answered {text:?}"));
                        true
                    }
                    Ok(Err(e)) => {
                        tally.fail(format!("{:?}: {}", e.code(), e.message()));
                        true
                    }
                    Err(_) => {
                        tally.fail(format!("no answer within {CALL_LIMIT:?}"));
                        return;
                    }
                };
                tally.calls.fetch_add(1, Ordering::Relaxed);
                if failed {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }

    /// Stops the callers and says what they saw.
    pub async fn finish(mut self) -> Outcome {
        self.tally.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            // A caller that panicked has nothing more to say.
            let _ = t.await;
        }
        let failures = self.tally.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Outcome {
            calls: self.tally.calls.load(Ordering::Relaxed),
            failed: self.tally.failed.load(Ordering::Relaxed),
            failures,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.tally.stop.store(true, Ordering::Relaxed);
    }
}
