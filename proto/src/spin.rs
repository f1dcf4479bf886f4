//! Before a runtime goes to sleep it watches for work a short while: a call
//! arriving within the window is picked up without the wake-up of an idle
//! CPU, which costs 20-40 µs on virtual machines. Go's scheduler does the
//! same before it parks a thread; both ends of a plugin call use this.
//!
//! What is watched is the runtime's own epoll descriptor, which is readable
//! whenever any socket the runtime waits on has an event, so every
//! connection is covered without a list of them.
//!
//! Between looks it yields the CPU rather than spinning on it: a call's
//! three processes (caller, daemon, plugin) share two CPUs here, and the one
//! process with work to do must never wait behind one watching for it.
//! Measured in `bench --only gateway`, runs alternating with the busy-wait it
//! replaced on a noisy host: sequential p50 0.85-1.23x go-plugin's against
//! 1.18-1.87x; CPU per call no different beyond the noise. It stops watching
//! once a yield let another task run (the CPU is wanted: the call's other
//! processes are busy on it).
//!
//! It watches only while watching pays: a watch that finds work earns
//! credit, one that finds nothing costs twice that, and with the credit
//! spent the runtime sleeps at once, earning credit back whenever it is
//! woken soon enough that a watch would have caught the work. Sequential
//! calls find work at every watch; under 16 callers the daemon's and the
//! plugin's watches mostly found nothing (each waited on the other
//! processes' batches), so they cost CPU and saved no wake-up. Measured in
//! the same benchmark, three runs each way alternating: CPU per call at 16
//! callers 45.6-53.0 µs against 54.6-64.0 always watching (the daemon's
//! 23.9-27.8 against 28.2-33.4, the plugin's 12.2-14.3 against 17.5-19.7),
//! the sequential p50 the same within the noise (64-130 µs against 87-100).
//! Never watching costs more still: 53.4-53.8 µs a call, the p50 225-276 µs.

use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long to watch before sleeping, by default.
pub const DEFAULT: Duration = Duration::from_micros(50);

/// A yield that returns later than this let another task run.
const BUSY_YIELD: Duration = Duration::from_micros(10);

/// The credit a runtime starts with and never exceeds: a few watches that find nothing
/// in a row stop it watching.
const MAX_CREDIT: i32 = 4;
/// The least credit: after a long quiet time, a few quick wake-ups start it watching again.
const MIN_CREDIT: i32 = -4;
/// What a watch that found nothing costs, against the one a watch that found work earns:
/// the first spends its whole window, the second saves a wake-up worth about half that.
const WASTED: i32 = 2;
/// What a wake-up adds to a sleep: one shorter than the window and this was one a watch
/// would have caught.
const WAKE_UP: Duration = Duration::from_micros(40);

/// The epoll instance of this process's runtime: the descriptor whose
/// /proc/self/fd link reads `anon_inode:[eventpoll]`. Found on first use,
/// from the runtime's own thread, once the runtime exists. For processes
/// with a single runtime (the daemon, a plugin).
fn runtime_epoll() -> Option<RawFd> {
    static FD: OnceLock<Option<RawFd>> = OnceLock::new();
    *FD.get_or_init(|| {
        let dir = std::fs::read_dir("/proc/self/fd").ok()?;
        dir.flatten()
            .filter_map(|e| {
                let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                (target.as_os_str() == "anon_inode:[eventpoll]").then_some(fd)
            })
            .min()
    })
}

/// How a look before parking ended.
#[derive(Clone, Copy, Debug)]
enum Watched {
    /// Something came: a wake-up saved.
    Found,
    /// Nothing within the window: the CPU time went for nothing.
    Nothing,
    /// A yield ran another task: this CPU is wanted, so it stopped watching.
    Wanted,
}

/// Watches `fd` until it has something, the window is over, or a yield shows the CPU is
/// wanted. It never reads; the runtime does, without sleeping.
fn watch(fd: RawFd, window: Duration) -> Watched {
    let start = Instant::now();
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: poll with a zero timeout on one pollfd we own.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 {
            return Watched::Found;
        }
        if n < 0 {
            // Interrupted (a signal, which the runtime handles once awake): it proves
            // nothing either way, and the runtime is about to look anyway.
            return Watched::Wanted;
        }
        if start.elapsed() >= window {
            return Watched::Nothing;
        }
        let yielded = Instant::now();
        // SAFETY: sched_yield takes no arguments and cannot fail.
        unsafe { libc::sched_yield() };
        if yielded.elapsed() >= BUSY_YIELD {
            return Watched::Wanted;
        }
    }
}

/// Whether a runtime with `credit` watches before it sleeps.
fn watches(credit: i32) -> bool {
    credit >= 0
}

/// The credit after a watch ended as `watched`.
fn after_watch(credit: i32, watched: Watched) -> i32 {
    match watched {
        Watched::Found => (credit + 1).min(MAX_CREDIT),
        Watched::Nothing => credit - WASTED,
        Watched::Wanted => credit,
    }
}

/// The credit after a sleep without watching that lasted `slept`. Whatever woke the
/// runtime counts, though a watch sees only its descriptor (a timer, or in a plugin its
/// host connection, may have done it): a short sleep then earns a watch that finds
/// nothing, which costs more than it earned, so such wake-ups alone never keep it
/// watching for long.
fn after_sleep(credit: i32, slept: Duration, window: Duration) -> i32 {
    if slept < window + WAKE_UP { credit + 1 } else { (credit - 1).max(MIN_CREDIT) }
}

/// One runtime's park hooks' shared state. Both hooks run on the runtime's one thread
/// (these runtimes are current-thread), so relaxed atomics only make them `Sync`.
struct Hooks {
    fd: Option<RawFd>,
    window: Duration,
    credit: AtomicI32,
    /// When the runtime went to sleep without watching (ns since `base`, at least 1); 0
    /// when it watched.
    slept_at: AtomicU64,
    base: Instant,
}

impl Hooks {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    fn before_park(&self) {
        let Some(fd) = self.fd.or_else(runtime_epoll) else { return };
        let credit = self.credit.load(Ordering::Relaxed);
        if watches(credit) {
            self.credit.store(after_watch(credit, watch(fd, self.window)), Ordering::Relaxed);
        } else {
            self.slept_at.store(self.now(), Ordering::Relaxed);
        }
    }

    fn after_park(&self) {
        let at = self.slept_at.swap(0, Ordering::Relaxed);
        if at != 0 {
            let slept = Duration::from_nanos(self.now().saturating_sub(at));
            let credit = self.credit.load(Ordering::Relaxed);
            self.credit.store(after_sleep(credit, slept, self.window), Ordering::Relaxed);
        }
    }
}

/// Sets `builder`'s park hooks to watch `fd` (or, when `None`, the runtime's epoll) for
/// up to `window` before the runtime sleeps, while that pays. A zero window never
/// watches. For current-thread runtimes.
pub fn install(
    builder: &mut tokio::runtime::Builder,
    fd: Option<RawFd>,
    window: Duration,
) -> &mut tokio::runtime::Builder {
    if window.is_zero() {
        return builder;
    }
    let hooks = std::sync::Arc::new(Hooks {
        fd,
        window,
        credit: AtomicI32::new(MAX_CREDIT),
        slept_at: AtomicU64::new(0),
        base: Instant::now(),
    });
    let after = hooks.clone();
    builder.on_thread_park(move || hooks.before_park()).on_thread_unpark(move || after.after_park())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = DEFAULT;

    #[test]
    fn sequential_calls_keep_it_watching() {
        let mut credit = MAX_CREDIT;
        for _ in 0..100 {
            assert!(watches(credit));
            credit = after_watch(credit, Watched::Found);
        }
        assert_eq!(credit, MAX_CREDIT, "credit is capped");
    }

    #[test]
    fn watches_that_find_nothing_stop_it_and_a_found_one_among_them_does_not_save_it() {
        let mut credit = MAX_CREDIT;
        let mut watched = 0;
        // One watch in three finds work: not worth it at twice the cost of a miss.
        for i in 0..30 {
            if !watches(credit) {
                break;
            }
            watched += 1;
            credit = after_watch(credit, if i % 3 == 0 { Watched::Found } else { Watched::Nothing });
        }
        assert!(!watches(credit), "still watching after {watched} watches, credit {credit}");
        assert!(watched <= 8, "took {watched} watches to stop");
    }

    #[test]
    fn a_watch_cut_short_because_the_cpu_is_wanted_changes_nothing() {
        assert_eq!(after_watch(1, Watched::Wanted), 1);
        assert_eq!(after_watch(-1, Watched::Wanted), -1);
    }

    #[test]
    fn quick_wake_ups_start_it_watching_again_and_long_sleeps_do_not() {
        let quick = WINDOW + WAKE_UP - Duration::from_micros(1);
        let long = WINDOW + WAKE_UP;
        let mut credit = MIN_CREDIT;
        for _ in 0..100 {
            credit = after_sleep(credit, long, WINDOW);
        }
        assert_eq!(credit, MIN_CREDIT, "long sleeps keep it at the floor");
        assert!(!watches(credit));
        let mut sleeps = 0;
        while !watches(credit) {
            credit = after_sleep(credit, quick, WINDOW);
            sleeps += 1;
        }
        assert_eq!(sleeps, MIN_CREDIT.unsigned_abs() as usize, "quick wake-ups from the floor until it watches");
    }

    #[test]
    fn a_zero_window_installs_no_hooks() {
        // Installing with a zero window leaves the builder's park hook alone: the runtime
        // built from it parks without running ours (which would watch a descriptor).
        let parked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = parked.clone();
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all().on_thread_park(move || {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let rt = install(&mut b, Some(-1), Duration::ZERO).build().unwrap();
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
        assert!(parked.load(Ordering::Relaxed) > 0, "the builder's own park hook was replaced");
    }

    #[test]
    fn a_watch_with_a_window_ends_found_on_work_and_never_found_without() {
        let (r, mut w) = std::io::pipe().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        // Nothing to read: the window runs out, or a busy machine's yield cuts it short;
        // either way, in about the window (a yield is let run at most BUSY_YIELD late
        // before it counts as cut short, and a preempted look may add a time slice).
        let started = Instant::now();
        let empty = watch(fd, WINDOW);
        assert!(matches!(empty, Watched::Nothing | Watched::Wanted), "an empty pipe: {empty:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "a 50 µs watch took {:?}", started.elapsed());
        // Work waiting: found at the first look.
        std::io::Write::write_all(&mut w, b"x").unwrap();
        let found = watch(fd, WINDOW);
        assert!(matches!(found, Watched::Found), "a pipe with a byte in it: {found:?}");
    }

    #[test]
    fn the_hooks_watch_the_descriptor_and_learn_from_sleeps() {
        // A window of nothing: a watch looks once and never yields, so what it finds is
        // up to the pipe and not to how busy the machine is (with a real window, a machine
        // whose other CPU-bound processes take every yield cuts every watch short, which
        // rightly changes nothing: in CI no watch ever ran out).
        let (r, mut w) = std::io::pipe().unwrap();
        let hooks = Hooks {
            fd: Some(std::os::fd::AsRawFd::as_raw_fd(&r)),
            window: Duration::ZERO,
            credit: AtomicI32::new(0),
            slept_at: AtomicU64::new(0),
            base: Instant::now(),
        };
        let credit = || hooks.credit.load(Ordering::Relaxed);
        // Work waiting: the watch finds it, and earns.
        std::io::Write::write_all(&mut w, b"x").unwrap();
        hooks.before_park();
        hooks.after_park();
        assert_eq!(credit(), 1, "a watch that found work");
        // The pipe drained: the watch finds nothing, costs twice that, and the runtime then
        // sleeps without watching.
        std::io::Read::read_exact(&mut &r, &mut [0]).unwrap();
        hooks.before_park();
        hooks.after_park();
        assert_eq!(credit(), 1 - WASTED, "a watch that found nothing");
        assert!(!watches(credit()));
        // A long sleep (10 ms) counts against watching.
        hooks.before_park();
        std::thread::sleep(Duration::from_millis(10));
        hooks.after_park();
        assert_eq!(credit(), 1 - WASTED - 1, "a long sleep");
    }
}
