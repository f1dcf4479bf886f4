//! The blocking jobs a plugin's handlers started (a `spawn_blocking`, a `tokio::fs`
//! read) when the plugin exits: the threads running them are counted, and the jobs get
//! a grace to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long a thread the pool asked for may take to run before it is taken for one that
/// never started: tokio names a thread before it starts it, and says nothing when the
/// start fails (a task limit reached), so an ask alone could keep every later exit
/// waiting for a thread that is not there.
const STARTING_FOR: Duration = Duration::from_secs(1);

/// The plugin runtime's blocking-pool threads: its only threads besides the main one.
#[derive(Debug, Default)]
struct PoolThreads {
    /// Asked for and not yet running: the pool names a thread just before it starts
    /// it, for the job it was given, and the runtime's start hook runs only once the
    /// thread does. Without these, a job whose thread had not got that far as the
    /// plugin exited was not waited for.
    starting: AtomicUsize,
    /// When the pool last asked for a thread.
    asked_at: Mutex<Option<Instant>>,
    /// Running: between the runtime's thread start and stop hooks.
    alive: AtomicUsize,
}

impl PoolThreads {
    /// The pool named a thread it is about to start.
    fn asked(&self) {
        if let Ok(mut at) = self.asked_at.lock() {
            *at = Some(Instant::now());
        }
        self.starting.fetch_add(1, Ordering::SeqCst);
    }

    /// A thread asked for did not start.
    fn not_started(&self) {
        // Saturating, defensively: every decrement follows an ask of its own.
        let _ = self.starting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// A thread the pool started runs.
    fn started(&self) {
        // Counted alive before it stops being counted starting, and `any` reads the two
        // the other way round: it sees the thread in one or the other.
        self.alive.fetch_add(1, Ordering::SeqCst);
        self.not_started();
    }

    fn stopped(&self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether a pool thread runs or is on its way to.
    fn any(&self) -> bool {
        let starting = self.starting.load(Ordering::SeqCst) > 0
            && self.asked_at.lock().map_or(true, |at| at.is_some_and(|at| at.elapsed() < STARTING_FOR));
        starting || self.alive.load(Ordering::SeqCst) > 0
    }
}

/// The plugin runtime's pool threads, counted by [`counted`]'s hooks.
static THREADS: LazyLock<PoolThreads> = LazyLock::new(PoolThreads::default);

/// `builder` with its pool threads counted in [`THREADS`]: the runtime's only other
/// threads are its blocking pool's.
pub(crate) fn counted(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder
        // Asked in the thread that starts the new one, before it does: the earliest a
        // pool thread can be counted. The name is tokio's default.
        .thread_name_fn(|| {
            THREADS.asked();
            "tokio-rt-worker".into()
        })
        .on_thread_start(|| THREADS.started())
        .on_thread_stop(|| THREADS.stopped())
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
fn shut_down_counted(rt: tokio::runtime::Runtime, threads: &PoolThreads, until: Instant) {
    // A job queued just before the shutdown, for an idle pool thread woken to take it but
    // not yet running, is dropped by the shutdown instead of run: a pool shutting down
    // empties its queue without running it. The queue is first in, first out (tokio's
    // default pool; not its unstable sharded one), so a marker queued behind is taken
    // only once every job before it has been taken to run. Waited for on a channel, not
    // by driving the runtime: that would poll the handlers still in flight (past a drain
    // deadline), and one blocking inside its poll would hold the exit.
    //
    // Only where pool threads run or are starting: a tier that forbids threads kills a
    // process that starts one. A thread started for a job runs it even once the pool
    // shuts down, and is waited for below from the moment the pool asked for it.
    if threads.any() {
        let left = until.saturating_duration_since(Instant::now());
        let (taken, marker) = std::sync::mpsc::channel();
        // tokio panics when it cannot start a thread for the marker (a task limit
        // reached with no idle thread to take it): then the threads alive are waited
        // for below, but jobs queued and not yet taken are dropped with the pool.
        let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(rt.spawn_blocking(move || taken.send(())));
        }));
        match queued {
            // Past the grace (every pool thread busy with a stuck job), the exit goes on.
            Ok(()) => drop(marker.recv_timeout(left)),
            // It asked for the thread it could not start.
            Err(_) => threads.not_started(),
        }
    }
    rt.shutdown_background();
    while threads.any() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A runtime whose pool threads are counted in `threads` as [`counted`] counts them,
    /// and in `ever` once started; each takes `slow` to start.
    fn counted_runtime(threads: &Arc<PoolThreads>, ever: &Arc<AtomicUsize>, slow: Duration) -> tokio::runtime::Runtime {
        let (asked, started, stopped, ever) = (threads.clone(), threads.clone(), threads.clone(), ever.clone());
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .thread_name_fn(move || {
                asked.asked();
                "tokio-rt-worker".into()
            })
            .on_thread_start(move || {
                std::thread::sleep(slow);
                started.started();
                ever.fetch_add(1, Ordering::SeqCst);
            })
            .on_thread_stop(move || stopped.stopped())
            .build()
            .unwrap()
    }

    fn alive(threads: &PoolThreads) -> usize {
        threads.alive.load(Ordering::SeqCst)
    }

    /// A handler's last job, queued as the plugin exits, to a pool thread that is idle:
    /// without the marker the shutdown got to the pool's queue before the woken thread
    /// did and the job never ran (here the first round lost it, in each of three runs).
    #[test]
    fn a_job_queued_as_the_plugin_exits_for_an_idle_pool_thread_still_runs() {
        for round in 0..20 {
            let threads = Arc::new(PoolThreads::default());
            let rt = counted_runtime(&threads, &Arc::default(), Duration::ZERO);
            // One pool thread, idle once its first job is done.
            rt.block_on(rt.spawn_blocking(|| ())).unwrap();
            assert_eq!(alive(&threads), 1);
            let ran = Arc::new(AtomicBool::new(false));
            let job = ran.clone();
            drop(rt.spawn_blocking(move || job.store(true, Ordering::SeqCst)));
            shut_down_counted(rt, &threads, Instant::now() + Duration::from_secs(2));
            assert!(ran.load(Ordering::SeqCst), "round {round}: the job queued last was dropped, not run");
            assert!(!threads.any(), "round {round}: the pool's threads ended");
        }
    }

    /// The first job's thread, started as the plugin exits and not yet running: the pool
    /// has no thread the start hook counted, and the exit did not wait for the job (it
    /// was cut off as it ran, or before).
    #[test]
    fn a_job_whose_pool_thread_is_still_starting_as_the_plugin_exits_still_runs() {
        let threads = Arc::new(PoolThreads::default());
        // The start hook held long enough that the exit is sure to come first.
        let rt = counted_runtime(&threads, &Arc::default(), Duration::from_millis(500));
        let ran = Arc::new(AtomicBool::new(false));
        let job = ran.clone();
        drop(rt.spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(50));
            job.store(true, Ordering::SeqCst);
        }));
        assert_eq!(alive(&threads), 0, "the job's thread is still starting");
        shut_down_counted(rt, &threads, Instant::now() + Duration::from_secs(5));
        assert!(ran.load(Ordering::SeqCst), "the exit did not wait for the job");
        assert!(!threads.any(), "the pool's threads ended");
    }

    /// tokio asks for a thread before it starts it and says nothing when the start fails:
    /// an ask that no thread followed within [`STARTING_FOR`] is not waited for.
    #[test]
    fn a_thread_asked_for_that_never_started_is_not_waited_for() {
        let threads = PoolThreads::default();
        threads.asked();
        assert!(threads.any(), "a thread just asked for is on its way");
        let long_ago = Instant::now().checked_sub(STARTING_FOR + Duration::from_millis(1)).unwrap();
        *threads.asked_at.lock().unwrap() = Some(long_ago);
        assert!(!threads.any(), "an ask {STARTING_FOR:?} old is a start that failed");
        // The failed start's count stays, so a later ask's thread ends up counted as
        // starting after it ran: taken as such only as long as any ask is.
        threads.asked();
        threads.started();
        assert!(threads.any(), "a running thread");
        threads.stopped();
        *threads.asked_at.lock().unwrap() = Some(long_ago);
        assert!(!threads.any(), "nothing runs, and the last ask is old");
    }

    #[test]
    fn a_stuck_job_holds_the_exit_only_until_the_grace_ends() {
        let threads = Arc::new(PoolThreads::default());
        let rt = counted_runtime(&threads, &Arc::default(), Duration::ZERO);
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        drop(rt.spawn_blocking(move || stuck.recv()));
        while alive(&threads) == 0 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        shut_down_counted(rt, &threads, started + Duration::from_millis(200));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "took {took:?}");
        // The marker's own thread (the stuck one was busy) ends with the pool; the stuck
        // job's is left to the exit.
        let by = Instant::now() + Duration::from_secs(5);
        while alive(&threads) > 1 && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(alive(&threads), 1, "the stuck job's thread is left to the exit");
        drop(release);
    }

    #[test]
    fn without_a_pool_thread_none_is_started_at_exit() {
        // A tier that forbids threads kills a process that starts one.
        let (threads, ever) = (Arc::new(PoolThreads::default()), Arc::new(AtomicUsize::new(0)));
        let rt = counted_runtime(&threads, &ever, Duration::ZERO);
        rt.block_on(async {});
        shut_down_counted(rt, &threads, Instant::now() + Duration::from_secs(1));
        assert_eq!(ever.load(Ordering::SeqCst), 0, "a pool thread was started");
    }
}
