//! A well-behaved plugin called throughout a test: every call must succeed
//! while a misbehaving neighbour is contained.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::pb::echo::EchoRequest;
use crate::pb::echo::echo_client::EchoClient;

pub struct Sibling {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Sibling {
    /// Calls `echo.v1.Echo/Echo` through the gateway every few milliseconds
    /// on a thread of its own, until [`Sibling::finish`].
    pub fn start(gateway: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut c = EchoClient::new(crate::connect(&gateway).await.map_err(|e| e.to_string())?);
                let mut ok = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    let r = c
                        .echo(EchoRequest { message: format!("ping {ok}") })
                        .await
                        .map_err(|s| format!("sibling call {ok} failed: {s}"))?;
                    if r.into_inner().message != format!("ping {ok}") {
                        return Err(format!("sibling call {ok} got a wrong answer"));
                    }
                    ok += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(ok)
            })
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops calling; panics unless every call succeeded (and some were made).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let n = self
            .thread
            .take()
            .map(|t| t.join().expect("sibling thread"))
            .expect("sibling")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "the sibling made no call");
        n
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
