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
    let verdict = fit(shipped(), &echo_like(), None).unwrap();
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
    let verdict = fit(shipped(), &calls, None).unwrap();
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
    let verdict = fit(shipped(), &calls, None).unwrap();
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
    let verdict = fit(shipped(), &calls, None).unwrap();
    assert_eq!(verdict.tightest.as_deref(), Some("L1"));
    assert!(verdict.tighter.iter().all(|d| d.denied == ["mmap"]), "{verdict:?}");
    // Both mmap calls counted under one name.
    assert_eq!(verdict.recorded.iter().find(|s| s.name == "mmap").map(|s| s.count), Some(2));
}

/// A binary the kernel maps writable and executable at exec makes no call a filter could
/// see, and L2 and L3 refuse it at start: the fit was L3, a tier the plugin could not run
/// under.
#[test]
fn memory_writable_and_executable_from_exec_fits_only_a_tier_that_allows_it() {
    let verdict = fit(shipped(), &echo_like(), Some("an executable stack")).unwrap();
    assert_eq!(verdict.tightest.as_deref(), Some("L1"));
    let said = "memory writable and executable from exec (an executable stack)".to_owned();
    let tighter: Vec<(&str, &[String])> = verdict.tighter.iter().map(|d| (d.tier.as_str(), &d.denied[..])).collect();
    assert_eq!(tighter, [("L3", std::slice::from_ref(&said)), ("L2", std::slice::from_ref(&said))]);
    assert_eq!(verdict.denied_by("L2"), Some(std::slice::from_ref(&said)));
    // Beside a syscall a tier denies, both are said.
    let mut calls = echo_like();
    calls.push(call(libc::SYS_socket, [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0]));
    let verdict = fit(shipped(), &calls, Some("an executable stack")).unwrap();
    assert_eq!(verdict.denied_by("L3"), Some(&[said, "socket".to_owned()][..]));
}

/// Whether a tier takes W+X memory is known from the tier alone, for the fit's error paths.
#[test]
fn the_tiers_say_which_take_memory_writable_and_executable_from_exec() {
    let order = shipped();
    assert!(order.forbids_writable_exec("L3"));
    assert!(order.forbids_writable_exec("L2"));
    assert!(!order.forbids_writable_exec("L1"));
    assert!(!order.forbids_writable_exec("none"), "no tier of that name");
    assert_eq!(order.tightest_allowing_writable_exec(), Some("L1"));
}

/// With nothing recorded, a binary with W+X memory is still known to be refused by a tier
/// forbidding it, and to fit the tightest that takes it: onboarding measured it under its
/// own tier, which refused to start it.
#[test]
fn with_nothing_recorded_the_binarys_writable_exec_memory_still_decides_where_it_fits() {
    let wx = "memory writable and executable from exec (an executable stack)";
    let s = super::unjudged("L3".into(), &FitError::NothingRecorded, shipped(), Some("an executable stack"));
    assert_eq!((s.configured_denies, s.tightest.as_deref()), (vec![wx.to_owned()], Some("L1")));
    assert_eq!(s.error, Some(FitError::NothingRecorded.to_string()));
    let s = super::unjudged("L1".into(), &FitError::NothingRecorded, shipped(), Some("an executable stack"));
    assert_eq!((s.configured_denies.len(), s.tightest), (0, None));
    let s = super::unjudged("L3".into(), &FitError::NothingRecorded, shipped(), None);
    assert_eq!((s.configured_denies.len(), s.tightest), (0, None));
}

fn section(error: Option<&str>, denies: &[&str], tightest: Option<&str>) -> super::TierFitSection {
    super::TierFitSection {
        configured: "L3".into(),
        error: error.map(str::to_owned),
        recorded: Vec::new(),
        tightest: tightest.map(str::to_owned),
        tighter: Vec::new(),
        configured_denies: denies.iter().map(|d| (*d).to_owned()).collect(),
    }
}

/// The baseline runs under the plugin's own tier unless that tier is known to deny what the
/// plugin does, and known holds on the fit's error paths too: a plugin that made more
/// distinct calls than were recorded, and whose tier denies one it made, was measured under
/// that tier, which killed it before anything was measured. With calls unjudged it runs
/// under the loosest tier, not the tightest fit of the calls seen, which a call nobody saw
/// may need more than.
#[test]
fn the_baseline_runs_where_the_plugin_is_not_known_to_be_denied() {
    use super::measured_under;
    let order = shipped();
    assert_eq!(measured_under(&section(None, &[], Some("L3")), order, false), None);
    assert_eq!(measured_under(&section(None, &["socket"], Some("L2")), order, false).as_deref(), Some("L2"));
    let partial =
        format!("the plugin made more than {} distinct calls; 3 were not recorded", super::record::MAX_DISTINCT);
    assert_eq!(measured_under(&section(Some(&partial), &["socket"], Some("L2")), order, false).as_deref(), Some("L1"));
    let wx = "memory writable and executable from exec (an executable stack)";
    let nothing = FitError::NothingRecorded.to_string();
    assert_eq!(measured_under(&section(Some(&nothing), &[wx], Some("L1")), order, true).as_deref(), Some("L1"));
    // Nothing known denied, or nowhere known to fit: the plugin's own tier.
    assert_eq!(measured_under(&section(Some(&nothing), &[], None), order, false), None);
    assert_eq!(measured_under(&section(None, &["socket"], None), order, false), None);
    assert_eq!(measured_under(&section(Some(&partial), &["socket"], None), order, false), None);
}

/// The loosest tier above a fit is the last of its `tighter_than` chain that takes the
/// binary: never a tier off the chain (another root of an operator's set, not proven to
/// allow what the fit does), and never one refusing the binary's W+X memory.
#[test]
fn the_loosest_tier_above_a_fit_is_on_its_chain_and_takes_the_binary() {
    use super::fit::loosest_on_chain;
    assert_eq!(shipped().loosest_above("L3", false), "L1");
    assert_eq!(shipped().loosest_above("L1", false), "L1");
    let parent = |t: &str| match t {
        "L3" => Some("L2"),
        "L2" => Some("L1"),
        _ => None,
    };
    assert_eq!(loosest_on_chain("L2", parent, |_| true), "L1");
    // A root of its own ("db", which sorts after L1 by name) is no looser than the chain.
    assert_eq!(loosest_on_chain("db", parent, |_| true), "db");
    assert_eq!(loosest_on_chain("L3", parent, |_| true), "L1");
    // One refusing the binary is passed over, however loose; none usable: the fit itself.
    assert_eq!(loosest_on_chain("L3", parent, |t| t != "L1"), "L2");
    assert_eq!(loosest_on_chain("L3", parent, |_| false), "L3");
    // A loop (refused by the loader) still ends.
    let looped = |t: &str| if t == "a" { Some("b") } else { Some("a") };
    assert_eq!(loosest_on_chain("a", looped, |_| true), "b");
}

#[test]
fn a_learning_pass_that_recorded_nothing_gives_no_verdict() {
    assert_eq!(fit(shipped(), &[], None), Err(FitError::NothingRecorded));
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
    assert_eq!(fit(recorder.order(), &calls, None).unwrap().tightest.as_deref(), Some("L3"));
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

mod faults {
    use std::time::Duration;

    use super::super::verdict::*;
    use crate::config::RestartPolicy;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_kill_is_judged_by_the_restart_policy() {
        let k = |policy, restarted| Kill9Seen {
            policy: Policy::of(policy),
            restarted,
            waited: Duration::from_secs(30),
            state: "failed: killed by signal 9 (SIGKILL)".into(),
        };
        let f = kill9(&k(RestartPolicy::OnFailure, Some(MS(120))));
        assert_eq!(
            (f.outcome, f.happened.as_str(), f.ms),
            (Outcome::Passed, "restarted, running again in 120 ms", Some(120))
        );
        let f = kill9(&k(RestartPolicy::Always, None));
        assert_eq!(f.outcome, Outcome::Failed);
        assert_eq!(f.happened, "NOT restarted within 30s; it is failed: killed by signal 9 (SIGKILL)");
        assert_eq!(failure(&f).unwrap(), format!("kill -9: {}", f.happened));
        let f = kill9(&k(RestartPolicy::Never, None));
        assert_eq!((f.outcome, f.expected.as_str()), (Outcome::Passed, "left down (restart = \"never\")"));
        assert_eq!(failure(&f), None);
    }

    fn sigterm_seen() -> SigtermSeen {
        SigtermSeen {
            method: "echo.v1.Echo/Echo".into(),
            stop_timeout: Duration::from_secs(2),
            in_flight: Ok(()),
            answered: Some(MS(3)),
            exited: Some(MS(4)),
            ended: "exited with code 0".into(),
            clean: true,
            policy: Policy::of(RestartPolicy::OnFailure),
            restarted: false,
        }
    }

    #[test]
    fn a_sigterm_passes_when_the_call_is_answered_and_the_plugin_exits_0_in_time() {
        let f = sigterm(&sigterm_seen());
        assert_eq!(f.outcome, Outcome::Passed, "{f:?}");
        assert_eq!(
            f.happened,
            "drained and exited 0 in 4 ms; the call in flight answered OK; left stopped, as restart = \"on-failure\" does after a clean exit"
        );
    }

    #[test]
    fn a_sigterm_fails_on_a_late_exit_a_cut_call_or_a_death_by_the_signal() {
        let late = sigterm(&SigtermSeen { exited: None, ..sigterm_seen() });
        assert_eq!(late.outcome, Outcome::Failed);
        assert!(late.happened.starts_with("still running 2s (its stop_timeout) after SIGTERM"), "{}", late.happened);
        let slow = sigterm(&SigtermSeen { exited: Some(MS(2100)), ..sigterm_seen() });
        assert_eq!(slow.outcome, Outcome::Failed, "past stop_timeout, within the slack: {slow:?}");
        assert!(
            slow.happened.starts_with("drained and exited 0 in 2100 ms, after its stop_timeout (2s); "),
            "{}",
            slow.happened
        );
        let cut = sigterm(&SigtermSeen { in_flight: Err("Unavailable: gone".into()), ..sigterm_seen() });
        assert_eq!(cut.outcome, Outcome::Failed);
        assert!(cut.happened.contains("the call in flight FAILED (Unavailable: gone)"), "{}", cut.happened);
        let died = sigterm(&SigtermSeen {
            clean: false,
            ended: "killed by signal 15 (SIGTERM)".into(),
            restarted: true,
            ..sigterm_seen()
        });
        assert_eq!(died.outcome, Outcome::Failed);
        assert!(died.happened.starts_with("did not drain: killed by signal 15 (SIGTERM) in 4 ms"), "{}", died.happened);
        assert!(died.happened.ends_with("restarted (restart = \"on-failure\")"), "{}", died.happened);
    }

    #[test]
    fn a_drain_past_its_stop_timeout_with_its_call_answered_names_open_streams() {
        let hint =
            "; a plugin's drain waits on open streams: end health Watch streams when draining (docs/protocol.md)";
        for exited in [None, Some(MS(2100))] {
            let f = sigterm(&SigtermSeen { exited, ..sigterm_seen() });
            assert_eq!(f.outcome, Outcome::Failed, "{f:?}");
            assert!(f.happened.ends_with(hint), "{}", f.happened);
        }
        for in_time in [
            SigtermSeen { ..sigterm_seen() },
            SigtermSeen { exited: None, in_flight: Err("Unavailable: gone".into()), ..sigterm_seen() },
            // A call slower than stop_timeout explains a late exit by itself.
            SigtermSeen { answered: Some(MS(3000)), exited: Some(MS(3001)), ..sigterm_seen() },
        ] {
            let f = sigterm(&in_time);
            assert!(!f.happened.contains("open streams"), "{}", f.happened);
        }
    }

    #[test]
    fn a_sigterm_whose_call_never_got_in_flight_is_skipped_naming_its_error() {
        let f = sigterm_not_in_flight("echo.v1.Echo/Echo", Err("InvalidArgument: not JSON".into()));
        assert_eq!((f.fault, f.outcome, failure(&f)), ("SIGTERM", Outcome::Skipped, None));
        assert_eq!(
            f.happened,
            "the call of echo.v1.Echo/Echo failed before it was in flight (InvalidArgument: not JSON): no call to have in flight"
        );
        let f = sigterm_not_in_flight("echo.v1.Echo/Echo", Ok(()));
        assert_eq!(f.outcome, Outcome::Skipped);
        assert!(f.happened.contains("answered without being seen in flight"), "{}", f.happened);
    }

    fn deadline_seen() -> DeadlineSeen {
        DeadlineSeen {
            method: "echo.v1.Echo/Echo".into(),
            deadline: MS(100),
            late: Err((tonic::Code::DeadlineExceeded, "deadline of 100ms exceeded".into())),
            after: Ok(()),
            pid: (42, Some(42)),
        }
    }

    #[test]
    fn a_deadline_passes_only_as_deadline_exceeded_with_the_same_instance_serving_after() {
        let f = deadline(&deadline_seen());
        assert_eq!(f.outcome, Outcome::Passed);
        assert_eq!(
            f.expected,
            "DEADLINE_EXCEEDED (given by the supervisor while the instance is held), then the same instance answers (the plugin keeps serving)"
        );
        assert_eq!(f.happened, "DEADLINE_EXCEEDED; the same instance (pid 42) answered the next call");
        let answered = deadline(&DeadlineSeen { late: Ok(()), ..deadline_seen() });
        assert_eq!(answered.outcome, Outcome::Failed);
        let other = deadline(&DeadlineSeen { late: Err((tonic::Code::Unavailable, "gone".into())), ..deadline_seen() });
        assert!(other.happened.starts_with("Unavailable (gone) instead of DEADLINE_EXCEEDED"), "{}", other.happened);
        let restarted = deadline(&DeadlineSeen { pid: (42, Some(43)), ..deadline_seen() });
        assert_eq!(restarted.outcome, Outcome::Failed);
        assert!(restarted.happened.ends_with("but pid 42 no longer runs"), "{}", restarted.happened);
        let down = deadline(&DeadlineSeen { after: Err("Unavailable: no instance".into()), ..deadline_seen() });
        assert_eq!(down.outcome, Outcome::Failed);
    }

    fn burst_seen() -> BurstSeen {
        BurstSeen {
            max_in_flight: 4,
            max_queued: 4,
            lowered: true,
            fired: 12,
            succeeded: 8,
            shed: 4,
            slowest_shed: MS(1),
            other: None,
        }
    }

    #[test]
    fn a_burst_passes_when_exactly_the_room_is_answered_and_the_rest_shed_at_once() {
        let f = burst(&burst_seen());
        assert_eq!(f.outcome, Outcome::Passed, "{f:?}");
        assert_eq!(f.expected, "8 admitted and answered, 4 shed at once with RESOURCE_EXHAUSTED");
        assert!(f.done.ends_with("max_in_flight = 4 and max_queued = 4 (lowered for the check)"), "{}", f.done);
        for bad in [
            BurstSeen { succeeded: 12, shed: 0, ..burst_seen() },
            BurstSeen { succeeded: 7, other: Some((1, "Internal: boom".into())), ..burst_seen() },
            BurstSeen { slowest_shed: SHED_AT_ONCE + MS(1), ..burst_seen() },
        ] {
            assert_eq!(burst(&bad).outcome, Outcome::Failed, "{bad:?}");
        }
        let f = burst(&BurstSeen { succeeded: 7, other: Some((1, "Internal: boom".into())), ..burst_seen() });
        assert!(f.happened.ends_with("; 1 FAILED otherwise, first: Internal: boom"), "{}", f.happened);
    }

    fn memory_seen() -> MemorySeen {
        MemorySeen {
            done: "memory limit lowered to 1M".into(),
            reason: Some("killed: out of memory (limit 1M)".into()),
            policy: Policy::of(RestartPolicy::OnFailure),
            restarted: Some(MS(150)),
            state: "running".into(),
        }
    }

    #[test]
    fn an_end_past_the_memory_limit_passes_only_when_reported_as_an_oom_kill() {
        let f = memory(&memory_seen());
        assert_eq!(f.outcome, Outcome::Passed);
        assert_eq!(f.happened, "killed: out of memory (limit 1M); running again in 150 ms");
        let other = memory(&MemorySeen { reason: Some("killed by signal 9 (SIGKILL)".into()), ..memory_seen() });
        assert_eq!(other.outcome, Outcome::Failed);
        assert!(other.happened.starts_with("reported as \"killed by signal 9 (SIGKILL)\", not as an OOM kill"));
        let alive = memory(&MemorySeen { reason: None, restarted: None, ..memory_seen() });
        assert_eq!((alive.outcome, alive.happened.as_str()), (Outcome::Failed, "it was not killed; it is running"));
        let not_back = memory(&MemorySeen { restarted: None, state: "backoff".into(), ..memory_seen() });
        assert_eq!(not_back.outcome, Outcome::Failed);
        let never = memory(&MemorySeen { policy: Policy::of(RestartPolicy::Never), restarted: None, ..memory_seen() });
        assert_eq!(never.outcome, Outcome::Passed);
    }

    #[test]
    fn a_skipped_fault_is_no_failure() {
        let f = Fault::skipped("memory limit", "", "no memory limit without a cgroup");
        assert_eq!((f.outcome, failure(&f)), (Outcome::Skipped, None));
    }
}

mod scratch_configs {
    use std::path::{Path, PathBuf};

    use super::super::OnboardError;
    use super::super::scratch::{Run, binary_config, burst_lowered, config};

    fn policies() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.ancestors().map(|d| d.join("policies")).find(|d| d.join("L1.toml").is_file()).unwrap()
    }

    fn run(dir: &Path) -> Run {
        Run { dir: dir.to_owned(), name: "base", tier: None, burst: true }
    }

    #[test]
    fn the_burst_runs_with_its_limits_lowered_to_four_unless_the_entry_has_less() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.toml");
        let entry = |extra: &str| {
            format!(
                "[supervisor]\npolicies_dir = {:?}\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"L3\"\n{extra}",
                policies().display().to_string()
            )
        };
        let text = entry("");
        assert!(burst_lowered(&path, &text, "p").unwrap());
        let c = config(&path, &text, "p", &run(dir.path())).unwrap();
        let p = c.specs()[0].protection;
        assert_eq!((p.max_in_flight, p.max_queued), (4, 4));
        let text = entry("max_in_flight = 2\nmax_queued = 0\n");
        assert!(!burst_lowered(&path, &text, "p").unwrap());
        let p = config(&path, &text, "p", &run(dir.path())).unwrap().specs()[0].protection;
        assert_eq!((p.max_in_flight, p.max_queued), (2, 0));
        // The learning pass keeps the entry's own.
        let learn = Run { burst: false, ..run(dir.path()) };
        let p = config(&path, &entry(""), "p", &learn).unwrap().specs()[0].protection;
        assert_eq!((p.max_in_flight, p.max_queued), (64, 32));
    }

    #[test]
    fn a_binary_under_a_tier_makes_a_config_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("greeter");
        std::fs::write(&binary, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let text = binary_config(&binary, "L3", &policies(), "greeter").unwrap();
        let c = config(&binary, &text, "greeter", &run(dir.path())).unwrap();
        assert_eq!((c.specs()[0].tier.as_str(), c.specs()[0].binary.as_path()), ("L3", binary.as_path()));
        let text = binary_config(&binary, "none", &policies(), "greeter").unwrap();
        assert!(config(&binary, &text, "greeter", &run(dir.path())).is_ok(), "none is allowed: {text}");

        let missing = dir.path().join("nope");
        let e = binary_config(&missing, "L3", &policies(), "nope").unwrap_err();
        assert!(matches!(e, OnboardError::Binary { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("--binary {}: No such file or directory (os error 2)", missing.display()));
        let e = binary_config(&binary, "L9", &policies(), "greeter").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "--tier L9: no such tier in {} (it has L1, L2, L3, or none to run unsandboxed)",
                policies().display()
            )
        );
        let e = binary_config(&binary, "L3", dir.path(), "greeter").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("--tier L3: {} holds no tier files (pass --policies DIR)", dir.path().display())
        );
    }
}
