//! The one thread that loads config files for `reload` and `reread`/`update`: off the
//! runtime's thread, which a slow filesystem would otherwise hold from every call the
//! daemon routes, and always on the same thread. On the blocking pool, each load ran on
//! whichever thread was idle, each allocating from a malloc arena of its own, and a
//! hundred reloads grew the daemon's resident memory by 11-12% (the reload footprint
//! test; trimming the heap after each load did not change that), against 6% loading on
//! the runtime's thread and 6.5-6.9% on this one.
//!
//! Only loads run here (reading the config and its contracts, compiling them): whatever
//! else takes long, hashing binaries say, runs on the blocking pool, so one reread does
//! not hold every reload's load behind it.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a load gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// No loader thread, and none could be started (at the pids limit, say); the next
    /// load tries again. Not the blocking pool instead: it would need a thread too, and
    /// tokio panics when it has none and cannot start one.
    #[error("cannot start the config loader thread: {0}")]
    NoThread(String),
    #[error("the config load panicked: {0}")]
    Panicked(String),
}

static LOADER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

/// The loader thread's queue, the thread started on first use.
fn loader() -> Result<&'static Mutex<mpsc::Sender<Job>>, LoaderError> {
    if let Some(l) = LOADER.get() {
        return Ok(l);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new().name("config-loader".into()).spawn(move || {
        for job in rx {
            job();
        }
    });
    match started {
        // Two first loads at once: the loser's thread ends, its sender dropped unused.
        Ok(_) => Ok(LOADER.get_or_init(|| Mutex::new(tx))),
        // Another first load's thread may have started meanwhile.
        Err(e) => LOADER.get().ok_or_else(|| LoaderError::NoThread(e.to_string())),
    }
}

/// `load` run on the loader thread, its result handed back.
pub(crate) async fn on_loader<T, F>(load: F) -> Result<T, LoaderError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let caught = move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).map_err(panic_message);
    let queue = loader()?;
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(caught());
    });
    // The thread ends only with its queue's sender, which is never dropped: a send cannot
    // fail. Were it to, the job and its answer's sender would be dropped, said below.
    let _ = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).send(job);
    rx.await.map_err(|_| LoaderError::Panicked("the loader thread is gone".into()))?
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> LoaderError {
    LoaderError::Panicked(plugin_proto::panics::message(payload.as_ref()).unwrap_or("(no message)").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_load_runs_on_the_one_loader_thread_and_a_panic_spoils_only_its_own() {
        let thread = || (std::thread::current().name().map(str::to_owned), std::thread::current().id());
        let (name, id) = on_loader(thread).await.unwrap();
        assert_eq!(name.as_deref(), Some("config-loader"));
        let panicked = on_loader(|| -> u8 { panic!("a load gone wrong") }).await;
        assert!(matches!(&panicked, Err(LoaderError::Panicked(said)) if said == "a load gone wrong"), "{panicked:?}");
        assert_eq!(on_loader(thread).await.unwrap(), (name, id), "the same thread serves on");
    }
}
