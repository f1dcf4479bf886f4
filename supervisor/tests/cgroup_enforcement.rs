//! Quotas enforced by the real kernel: a memory hog is OOM-killed at `memory_max` and counted,
//! a fork loop stops at `pids_max` and the refusals are counted, a spinner is held to its CPU
//! quota and shows throttling.

#[path = "cgroup_common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Guard, pause_forever, pipe, raw_fork, read_byte_bounded, spawn_into, wait, write_byte};
use plugin_supervisor::sandbox::cgroup::{ForkMode, Limits};

const MIB: u64 = 1 << 20;

#[test]
fn memory_hog_is_oom_killed_and_counted() {
    let guard = Guard::new(false);
    let limits = Limits { memory_max: Some(32 * MIB), ..Limits::default() };
    let inst = guard.subtree().create_instance("hog", "0", &limits).unwrap();
    assert_eq!(inst.stats().unwrap().oom_kills, Some(0));
    let len = usize::try_from(256 * MIB).unwrap();
    let child = spawn_into(&inst, ForkMode::Auto, || {
        // SAFETY: an anonymous private mapping; no existing memory is affected.
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
            // SAFETY: async-signal-safe exit.
            unsafe { libc::_exit(3) };
        }
        let base = p.cast::<u8>();
        for off in (0..len).step_by(4096) {
            // SAFETY: off < len, inside the mapping just created; volatile so the touch
            // is not optimised away.
            unsafe { base.add(off).write_volatile(1) };
        }
    });
    let status = wait(child.pid);
    assert_eq!(common::killed_by(status), Some(libc::SIGKILL), "status {status:#x}");
    let stats = inst.stats().unwrap();
    assert_eq!(stats.oom_kills, Some(1), "{stats:?}");
    assert!(stats.memory_peak.is_none_or(|p| p <= 32 * MIB + 4096), "{stats:?}");
    common::remove_instance(&inst);
}

#[test]
fn fork_loop_stops_at_pids_max() {
    let guard = Guard::new(false);
    let inst =
        guard.subtree().create_instance("forker", "0", &Limits { pids_max: Some(8), ..Limits::default() }).unwrap();
    let (r, w) = pipe();
    let child = spawn_into(&inst, ForkMode::Auto, || {
        let mut forked = 0u8;
        for _ in 0..32 {
            match raw_fork() {
                0 => pause_forever(),
                -1 => {}
                _ => forked += 1,
            }
        }
        write_byte(&w, forked);
        pause_forever();
    });
    drop(w);
    let forked = read_byte_bounded(&r).expect("the child reports how many forks succeeded");
    assert_eq!(forked, 7, "the child itself is the 8th task");
    let stats = inst.stats().unwrap();
    assert_eq!(stats.pids_current, Some(8), "{stats:?}");
    assert_eq!(stats.pids_max_hits, Some(25), "{stats:?}");
    inst.kill().unwrap();
    assert_eq!(common::killed_by(wait(child.pid)), Some(libc::SIGKILL));
    common::remove_instance(&inst);
}

#[test]
fn spinner_is_held_to_its_cpu_quota() {
    let guard = Guard::new(false);
    let quota = (20_000, 100_000); // 20% of one core
    let inst =
        guard.subtree().create_instance("spinner", "0", &Limits { cpu_max: Some(quota), ..Limits::default() }).unwrap();
    let child = spawn_into(&inst, ForkMode::Auto, || {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let (t0, s0) = (Instant::now(), inst.stats().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    let (t1, s1) = (Instant::now(), inst.stats().unwrap());
    let used = s1.cpu_usage_usec.unwrap() - s0.cpu_usage_usec.unwrap();
    let wall = u64::try_from((t1 - t0).as_micros()).unwrap();
    let allowed = wall * quota.0 / quota.1;
    assert!(used <= allowed + allowed / 10 + 20_000, "used {used}us of {wall}us, quota allows {allowed}us");
    assert!(used >= allowed / 2, "used {used}us of {wall}us: the spinner barely ran");
    assert!(s1.cpu_nr_throttled.unwrap() > s0.cpu_nr_throttled.unwrap(), "{s0:?} {s1:?}");
    assert!(s1.cpu_throttled_usec.unwrap() > 0, "{s1:?}");
    inst.kill().unwrap();
    assert_eq!(common::killed_by(wait(child.pid)), Some(libc::SIGKILL));
    common::remove_instance(&inst);
}
