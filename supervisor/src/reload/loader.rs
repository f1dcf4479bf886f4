//! The one thread that loads config files for `reload` and `reread`/`update`: off the
//! runtime's thread, which a slow filesystem would otherwise hold from every call the
//! daemon routes, and always on the same thread. On the blocking pool, each load ran on
//! whichever thread was idle, each allocating from a malloc arena of its own, and a
//! hundred reloads grew the daemon's resident memory by 11-12% (the reload footprint
//! test; trimming the heap after each load did not change that), against 6% loading on
//! the runtime's thread and 6.5-6.9% on this one.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a load could not run on the loader thread.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot start the config loader thread: {0}")]
    Spawn(String),
    #[error("the config load panicked")]
    Panicked,
}

fn loader() -> Result<&'static Mutex<mpsc::Sender<Job>>, LoaderError> {
    static LOADER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    if let Some(l) = LOADER.get() {
        return Ok(l);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("config-loader".into())
        .spawn(move || {
            for job in rx {
                // A load that panics loses its own answer only; the thread serves on.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .map_err(|e| LoaderError::Spawn(e.to_string()))?;
    // Two first loads at once: the loser's thread ends, its sender dropped unused.
    Ok(LOADER.get_or_init(|| Mutex::new(tx)))
}

/// `load` run on the loader thread, its result handed back.
pub(crate) async fn on_loader<T, F>(load: F) -> Result<T, LoaderError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(load());
    });
    // The thread never ends while its sender is held here, so a send cannot fail; if it
    // did, the job is dropped, and with it the answer's sender.
    let _ = loader()?.lock().unwrap_or_else(std::sync::PoisonError::into_inner).send(job);
    rx.await.map_err(|_| LoaderError::Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_load_runs_on_the_one_loader_thread_and_a_panic_spoils_only_its_own() {
        let name = || std::thread::current().name().map(str::to_owned);
        let first = on_loader(name).await.unwrap();
        assert_eq!(first.as_deref(), Some("config-loader"));
        let id = on_loader(|| std::thread::current().id()).await.unwrap();
        assert_ne!(id, std::thread::current().id());
        let panicked = on_loader(|| -> u8 { panic!("a load gone wrong") }).await;
        assert!(matches!(panicked, Err(LoaderError::Panicked)), "{panicked:?}");
        assert_eq!(on_loader(|| std::thread::current().id()).await.unwrap(), id, "the same thread serves on");
    }
}
