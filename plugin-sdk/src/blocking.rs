//! The blocking jobs a plugin's handlers started (a `spawn_blocking`, a `tokio::fs`
//! read) when the plugin exits: the threads running them are counted, and the jobs get
//! a grace to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The plugin runtime's blocking-pool threads alive: its only threads besides the main
/// one. Counted by the runtime's thread start and stop hooks.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// `builder` with its pool threads counted in [`THREADS`]: the runtime's only other
/// threads are its blocking pool's.
pub(crate) fn counted(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder
        .on_thread_start(|| {
            THREADS.fetch_add(1, Ordering::SeqCst);
        })
        .on_thread_stop(|| {
            THREADS.fetch_sub(1, Ordering::SeqCst);
        })
}

/// Shuts `rt`, built [`counted`], down and waits, until `until` at the latest, for its
/// blocking jobs to end.
pub(crate) fn shut_down(rt: tokio::runtime::Runtime, until: Instant) {
    shut_down_counted(rt, &THREADS, until);
}

/// [`shut_down`], with `threads` counting `rt`'s blocking-pool threads.
///
/// Dropping the runtime would drop its tasks, then wait for the blocking jobs however
/// long they take: one stuck (a hung file) and the drained plugin was killed at its stop
/// timeout. Shut down in the background, the tasks are dropped all the same (a job
/// waiting on a task's channel sees it close) and running jobs go on. Waited for here,
/// not by a watch thread: a tier that forbids threads kills a process that starts one
/// (and there no job can run).
fn shut_down_counted(rt: tokio::runtime::Runtime, threads: &AtomicUsize, until: Instant) {
    // A job queued just before the shutdown, for an idle pool thread woken to take it but
    // not yet running, is dropped by the shutdown instead of run: a pool shutting down
    // empties its queue without running it. The queue is first in, first out (tokio's
    // default pool; not its unstable sharded one), so a marker queued behind is taken
    // only once every job before it has been taken to run. Waited for on a channel, not
    // by driving the runtime: that would poll the handlers still in flight (past a drain
    // deadline), and one blocking inside its poll would hold the exit.
    //
    // Only where pool threads are counted: a tier that forbids threads kills a process
    // that starts one. A thread started for a job runs it even once the pool shuts down,
    // but one started too recently to be counted yet is not waited for, here or below.
    if threads.load(Ordering::SeqCst) > 0 {
        let left = until.saturating_duration_since(Instant::now());
        let (taken, marker) = std::sync::mpsc::channel();
        // tokio panics when it can start no thread and counts none alive (a task limit
        // reached as the last idle thread leaves): then there is nothing to wait for.
        let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(rt.spawn_blocking(move || taken.send(())));
        }));
        if queued.is_ok() {
            // Past the grace (every pool thread busy with a stuck job), the exit goes on.
            let _ = marker.recv_timeout(left);
        }
    }
    rt.shutdown_background();
    while threads.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A runtime whose pool threads are counted in `threads` while alive and in `ever`
    /// once started.
    fn counted_runtime(threads: &Arc<AtomicUsize>, ever: &Arc<AtomicUsize>) -> tokio::runtime::Runtime {
        let (started, stopped, ever) = (threads.clone(), threads.clone(), ever.clone());
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .on_thread_start(move || {
                started.fetch_add(1, Ordering::SeqCst);
                ever.fetch_add(1, Ordering::SeqCst);
            })
            .on_thread_stop(move || {
                stopped.fetch_sub(1, Ordering::SeqCst);
            })
            .build()
            .unwrap()
    }

    /// A handler's last job, queued as the plugin exits, to a pool thread that is idle:
    /// without the marker the shutdown got to the pool's queue before the woken thread
    /// did and the job never ran (here the first round lost it, in each of three runs).
    #[test]
    fn a_job_queued_as_the_plugin_exits_for_an_idle_pool_thread_still_runs() {
        for round in 0..20 {
            let threads = Arc::new(AtomicUsize::new(0));
            let rt = counted_runtime(&threads, &Arc::default());
            // One pool thread, idle once its first job is done.
            rt.block_on(rt.spawn_blocking(|| ())).unwrap();
            assert_eq!(threads.load(Ordering::SeqCst), 1);
            let ran = Arc::new(AtomicBool::new(false));
            let job = ran.clone();
            drop(rt.spawn_blocking(move || job.store(true, Ordering::SeqCst)));
            shut_down_counted(rt, &threads, Instant::now() + Duration::from_secs(2));
            assert!(ran.load(Ordering::SeqCst), "round {round}: the job queued last was dropped, not run");
            assert_eq!(threads.load(Ordering::SeqCst), 0, "round {round}: the pool's threads ended");
        }
    }

    #[test]
    fn a_stuck_job_holds_the_exit_only_until_the_grace_ends() {
        let threads = Arc::new(AtomicUsize::new(0));
        let rt = counted_runtime(&threads, &Arc::default());
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        drop(rt.spawn_blocking(move || stuck.recv()));
        while threads.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        shut_down_counted(rt, &threads, started + Duration::from_millis(200));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "took {took:?}");
        // The marker's own thread (the stuck one was busy) ends with the pool; the stuck
        // job's is left to the exit.
        let by = Instant::now() + Duration::from_secs(5);
        while threads.load(Ordering::SeqCst) > 1 && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(threads.load(Ordering::SeqCst), 1, "the stuck job's thread is left to the exit");
        drop(release);
    }

    #[test]
    fn without_a_pool_thread_none_is_started_at_exit() {
        // A tier that forbids threads kills a process that starts one.
        let (threads, ever) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let rt = counted_runtime(&threads, &ever);
        rt.block_on(async {});
        shut_down_counted(rt, &threads, Instant::now() + Duration::from_secs(1));
        assert_eq!(ever.load(Ordering::SeqCst), 0, "a pool thread was started");
    }
}
