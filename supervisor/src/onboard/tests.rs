use std::path::Path;
use std::sync::OnceLock;

use super::fit::{FitError, RecordedCall, TierOrder, fit};
use super::record::Recorder;
use crate::sandbox::tier::sim::SeccompData;
use crate::sandbox::tier::{AUDIT_ARCH_X86_64, TierSet};

fn shipped() -> &'static TierOrder {
    static ORDER: OnceLock<TierOrder> = OnceLock::new();
    ORDER.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = manifest.ancestors().map(|d| d.join("policies")).find(|d| d.join("L1.toml").is_file()).unwrap();
        TierOrder::of(&TierSet::load_dir(&dir).unwrap())
    })
}

fn call(nr: i64, args: [u64; 6]) -> RecordedCall {
    RecordedCall { data: SeccompData::new(AUDIT_ARCH_X86_64, nr as i32, args), count: 1 }
}

/// What an SDK plugin serving echo calls does on its inherited sockets.
fn echo_like() -> Vec<RecordedCall> {
    const PROT_READ_WRITE: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    vec![
        call(libc::SYS_read, [3, 0x1000, 4096, 0, 0, 0]),
        call(libc::SYS_write, [3, 0x1000, 20, 0, 0, 0]),
        call(libc::SYS_epoll_wait, [5, 0x1000, 1024, u64::MAX, 0, 0]),
        call(libc::SYS_futex, [0x1000, 1, 1, 0, 0, 0]),
        call(libc::SYS_mmap, [0, 4096, PROT_READ_WRITE, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0]),
    ]
}

#[test]
fn the_tiers_are_judged_tightest_first() {
    assert_eq!(shipped().names().collect::<Vec<_>>(), ["L3", "L2", "L1"]);
}

#[test]
fn an_echo_like_set_fits_l3() {
    let verdict = fit(shipped(), &echo_like()).unwrap();
    assert_eq!(verdict.tightest.as_deref(), Some("L3"));
    assert!(verdict.tighter.is_empty(), "{verdict:?}");
    let names: Vec<&str> = verdict.recorded.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["epoll_wait", "futex", "mmap", "read", "write"]);
    assert_eq!(verdict.denied_by("L3"), Some(&[][..]));
}

#[test]
fn a_socket_needs_l1_and_each_tighter_tier_names_it() {
    let mut calls = echo_like();
    calls.push(call(libc::SYS_socket, [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0]));
    let verdict = fit(shipped(), &calls).unwrap();
    assert_eq!(verdict.tightest.as_deref(), Some("L1"));
    let tighter: Vec<(&str, Vec<&str>)> =
        verdict.tighter.iter().map(|d| (d.tier.as_str(), d.denied.iter().map(String::as_str).collect())).collect();
    assert_eq!(tighter, [("L3", vec!["socket"]), ("L2", vec!["socket"])]);
    assert_eq!(verdict.denied_by("L3"), Some(&["socket".to_owned()][..]));
    assert_eq!(verdict.denied_by("L1"), Some(&[][..]));
}

#[test]
fn a_call_no_tier_allows_leaves_only_none() {
    let mut calls = echo_like();
    calls.push(call(libc::SYS_kexec_load, [0; 6]));
    let verdict = fit(shipped(), &calls).unwrap();
    assert_eq!(verdict.tightest, None);
    assert_eq!(verdict.tighter.len(), 3);
    assert!(verdict.tighter.iter().all(|d| d.denied == ["kexec_load"]), "{verdict:?}");
}

#[test]
fn an_argument_a_tighter_tier_refuses_is_named_by_its_syscall() {
    // W+X memory: allowed by L1 only.
    let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let mut calls = echo_like();
    calls.push(call(libc::SYS_mmap, [0, 4096, wx, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0]));
    let verdict = fit(shipped(), &calls).unwrap();
    assert_eq!(verdict.tightest.as_deref(), Some("L1"));
    assert!(verdict.tighter.iter().all(|d| d.denied == ["mmap"]), "{verdict:?}");
    // Both mmap calls counted under one name.
    assert_eq!(verdict.recorded.iter().find(|s| s.name == "mmap").map(|s| s.count), Some(2));
}

#[test]
fn a_learning_pass_that_recorded_nothing_gives_no_verdict() {
    assert_eq!(fit(shipped(), &[]), Err(FitError::NothingRecorded));
    assert!(FitError::NothingRecorded.to_string().starts_with("the learning pass recorded nothing"));
}

#[test]
fn the_recorder_keeps_one_entry_per_syscall_and_verdict() {
    let recorder = Recorder::new(shipped().clone());
    let read = libc::seccomp_data {
        nr: libc::SYS_read as i32,
        arch: AUDIT_ARCH_X86_64,
        instruction_pointer: 0,
        args: [3, 0, 1, 0, 0, 0],
    };
    for fd in 0..100 {
        recorder.record(&libc::seccomp_data { args: [fd, 0, 1, 0, 0, 0], ..read });
    }
    let calls = recorder.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].count, 100);
    assert_eq!(fit(recorder.order(), &calls).unwrap().tightest.as_deref(), Some("L3"));
}

#[test]
fn percentiles_are_nearest_rank() {
    use std::time::Duration;
    let mut samples: Vec<Duration> = (1..=200).rev().map(Duration::from_micros).collect();
    assert_eq!(super::percentile(&mut samples, 50), 100);
    assert_eq!(super::percentile(&mut samples, 99), 198);
    assert_eq!(super::percentile(&mut [Duration::from_micros(7)], 99), 7);
    assert_eq!(super::percentile(&mut [], 50), 0);
}

#[test]
fn a_plugin_trying_every_number_costs_the_recorder_a_bounded_map() {
    let recorder = Recorder::new(shipped().clone());
    let any = libc::seccomp_data { nr: 0, arch: AUDIT_ARCH_X86_64, instruction_pointer: 0, args: [0; 6] };
    let tried = super::record::MAX_DISTINCT as i32 + 10;
    for nr in 100_000..100_000 + tried {
        recorder.record(&libc::seccomp_data { nr, ..any });
    }
    assert_eq!(recorder.calls().len(), super::record::MAX_DISTINCT);
    assert_eq!(recorder.left_out(), 10);
}
