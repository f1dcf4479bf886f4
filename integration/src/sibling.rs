//! A well-behaved plugin called throughout a test: every call must succeed
//! while a misbehaving neighbour is contained.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::pb::echo::EchoRequest;
use crate::pb::echo::echo_client::EchoClient;

/// How long the first call may take: the daemon answers it in milliseconds; this
/// is the slack a loaded CI machine needs.
const FIRST_CALL_WITHIN: Duration = Duration::from_secs(30);

pub struct Sibling {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Sibling {
    /// Calls `echo.v1.Echo/Echo` through the gateway every few milliseconds
    /// on a thread of its own, until [`Sibling::finish`]. Returns once the
    /// first call was answered, so what the test does next happens while the
    /// sibling is calling (on a loaded machine the thread could otherwise
    /// still be connecting when a quick test finished); panics if that call
    /// fails or takes more than `FIRST_CALL_WITHIN`.
    pub fn start(gateway: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut c = EchoClient::new(crate::connect(&gateway).await.map_err(|e| e.to_string())?);
                let mut ok = 0u64;
                loop {
                    // Read before the call: the last call is one begun after `finish`
                    // asked, so the sibling is shown answered after what the test did.
                    let last = flag.load(Ordering::Relaxed);
                    let r = c
                        .echo(EchoRequest { message: format!("ping {ok}") })
                        .await
                        .map_err(|s| format!("sibling call {ok} failed: {s}"))?;
                    if r.into_inner().message != format!("ping {ok}") {
                        return Err(format!("sibling call {ok} got a wrong answer"));
                    }
                    ok += 1;
                    if ok == 1 {
                        let _ = first_tx.try_send(());
                    }
                    if last {
                        return Ok(ok);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        });
        let mut sibling = Self { stop, thread: Some(thread) };
        match first_rx.recv_timeout(FIRST_CALL_WITHIN) {
            Ok(()) => {}
            // The thread ended before its first answer: its error says why.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let why = match sibling.thread.take().map(|t| t.join()) {
                    Some(Ok(Err(e))) => e,
                    Some(Ok(Ok(n))) => format!("the sibling ended after {n} calls"),
                    Some(Err(_)) | None => "the sibling thread panicked".to_owned(),
                };
                panic!("the sibling's first call: {why}");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                sibling.stop.store(true, Ordering::Relaxed);
                panic!("the sibling's first call: no answer within {FIRST_CALL_WITHIN:?}");
            }
        }
        sibling
    }

    /// Stops calling after one more call, begun now; panics unless every call
    /// succeeded. Returns how many there were (at least two).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let n = self
            .thread
            .take()
            .map(|t| t.join().expect("sibling thread"))
            .expect("sibling")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n >= 2, "the sibling made {n} calls, fewer than its first and its last");
        n
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
