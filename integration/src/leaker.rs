//! The zoo's leaks, on request: anonymous memory touched and kept at a steady rate, or in
//! a sawtooth (kept, then all freed, each period), or in one step after a delay;
//! descriptors (eventfds) or tasks (threads that sleep) opened at a steady rate and never
//! closed. Each runs on a thread of its own from the start. Memory is mapped and unmapped
//! directly: freed heap memory stays in the allocator's arenas and would never saw down.

use std::time::{Duration, Instant};

/// How often a steady leak takes its next bite: small bites make a smooth rise.
const TICK: Duration = Duration::from_millis(100);
const PAGE: usize = 4096;

/// An anonymous mapping whose every page was written: resident, and charged to the
/// process's cgroup as `anon`.
struct Touched(*mut libc::c_void, usize);

// SAFETY: the mapping is owned by this value alone; no reference into it is handed out.
unsafe impl Send for Touched {}

impl Touched {
    fn new(bytes: usize) -> Option<Self> {
        let len = bytes.div_ceil(PAGE).max(1) * PAGE;
        // SAFETY: a fresh private anonymous mapping, checked for failure before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        for off in (0..len).step_by(PAGE) {
            // SAFETY: `off` is inside the mapping just made, writable. Volatile: a store
            // the optimiser may not remove.
            unsafe { std::ptr::write_volatile(p.cast::<u8>().add(off), 1) };
        }
        Some(Self(p, len))
    }
}

impl Drop for Touched {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made, once.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

fn every_tick(mut f: impl FnMut(Duration) + Send + 'static) {
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            std::thread::sleep(TICK);
            f(start.elapsed());
        }
    });
}

/// Touches and keeps `kib_per_sec` KiB a second.
pub fn memory(kib_per_sec: u64) {
    let mut kept = Vec::new();
    let mut done = 0u64;
    every_tick(move |since| {
        let due = kib_per_sec * since.as_millis() as u64 / 1000;
        if due > done {
            kept.extend(Touched::new(((due - done) * 1024) as usize));
            done = due;
        }
    });
}

/// Touches `kib_per_sec` KiB a second for `period`, then frees it all, again and again.
pub fn sawtooth(kib_per_sec: u64, period: Duration) {
    let mut kept = Vec::new();
    let mut done = 0u64;
    let mut cycle = 0u128;
    every_tick(move |since| {
        let n = since.as_millis() / period.as_millis().max(1);
        if n != cycle {
            cycle = n;
            kept.clear();
            done = 0;
        }
        let into = since.as_millis() % period.as_millis().max(1);
        let due = kib_per_sec * into as u64 / 1000;
        if due > done {
            kept.extend(Touched::new(((due - done) * 1024) as usize));
            done = due;
        }
    });
}

/// Touches `kib` KiB once, after `delay`, and keeps it.
pub fn step(kib: u64, delay: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let kept = Touched::new((kib * 1024) as usize);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
            let _ = &kept;
        }
    });
}

/// Opens `per_sec` eventfds a second and never closes them.
pub fn fds(per_sec: u64) {
    let mut done = 0u64;
    every_tick(move |since| {
        let due = per_sec * since.as_millis() as u64 / 1000;
        while done < due {
            // SAFETY: eventfd makes a new descriptor; it is deliberately never closed.
            unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            done += 1;
        }
    });
}

/// Starts `per_sec` threads a second that sleep for ever.
pub fn tasks(per_sec: u64) {
    let mut done = 0u64;
    every_tick(move |since| {
        let due = per_sec * since.as_millis() as u64 / 1000;
        while done < due {
            let spawned = std::thread::Builder::new().stack_size(64 << 10).spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            });
            if spawned.is_err() {
                return;
            }
            done += 1;
        }
    });
}
