//! `supervisorctl onboard`: the report of a plugin run in a scratch
//! supervisor, its tier verdict from the syscalls a learning pass recorded,
//! the faults injected into it, and its exit status; of a config's entry or of
//! a binary under a tier. Runs as root, as the daemon does.

use std::path::Path;
use std::process::Output;

use plugin_integration::bins;
use plugin_integration::daemon::{config_with, plugin};
use plugin_integration::files::copy_with_executable_stack;
use serde_json::Value;

/// Runs `supervisorctl onboard` on `entry` (a `[[plugin]]` entry) with `args`.
fn onboard(entry: &str, args: &[&str]) -> Output {
    onboard_with("", entry, args)
}

/// [`onboard`], with `supervisor` added to the config's `[supervisor]` section.
fn onboard_with(supervisor: &str, entry: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, config_with(supervisor, entry)).unwrap();
    let echo = bins::example("echo");
    let mut cmd = std::process::Command::new(bins::supervisorctl());
    cmd.arg("onboard").arg("--config").arg(&path).arg("--baseline-echo").arg(&echo).args(args);
    cmd.output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

/// The report's fault entry for `name`.
fn fault<'a>(report: &'a Value, name: &str) -> &'a Value {
    let faults = report["faults"].as_array().unwrap_or_else(|| panic!("no faults in {report:#}"));
    faults.iter().find(|f| f["fault"] == name).unwrap_or_else(|| panic!("no fault {name:?} in {report:#}"))
}

fn happened(f: &Value) -> &str {
    f["happened"].as_str().unwrap()
}

/// Echo's faults, each handled as expected.
fn assert_echo_takes_every_fault(report: &Value) {
    let order: Vec<&str> = report["faults"].as_array().unwrap().iter().map(|f| f["fault"].as_str().unwrap()).collect();
    assert_eq!(order, ["kill -9", "SIGTERM", "deadline", "burst", "memory limit"]);
    for f in report["faults"].as_array().unwrap() {
        assert_eq!(f["outcome"], "passed", "{f:#}");
    }
    let kill9 = fault(report, "kill -9");
    assert!(kill9["ms"].as_u64().is_some_and(|ms| ms > 0), "{kill9}");
    assert!(happened(kill9).starts_with("restarted, running again in "), "{kill9}");
    // Drained: the call in flight answered, exit 0 well within the 2 s stop_timeout, and
    // left stopped as on-failure does after a clean exit.
    let term = fault(report, "SIGTERM");
    assert!(happened(term).starts_with("drained and exited 0 in "), "{term}");
    assert!(
        happened(term).contains("; the call in flight answered OK; left stopped, as restart = \"on-failure\""),
        "{term}"
    );
    assert!(term["ms"].as_u64().is_some_and(|ms| ms < 2000), "{term}");
    let deadline = fault(report, "deadline");
    assert!(happened(deadline).starts_with("DEADLINE_EXCEEDED; the same instance (pid "), "{deadline}");
    let burst = fault(report, "burst");
    assert_eq!(
        happened(burst).split(" in at most").next(),
        Some("8 answered, 4 shed with RESOURCE_EXHAUSTED"),
        "{burst}"
    );
    assert!(burst["done"].as_str().unwrap().ends_with("max_in_flight = 4 and max_queued = 4 (lowered for the check)"));
    let memory = fault(report, "memory limit");
    assert!(happened(memory).starts_with("killed: out of memory (limit "), "{memory}");
    assert!(happened(memory).contains("; running again in "), "{memory}");
}

#[test]
fn echo_fits_l3_and_its_report_has_every_section() {
    let entry = plugin("echo", &bins::example("echo"), "tier = \"L3\"");
    let out = onboard(&entry, &["echo", "--call", "echo.v1.Echo/Echo", "-d", r#"{"message":"hi"}"#, "--json"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["plugin"], "echo");
    let integrity = &report["integrity"];
    assert_eq!(integrity["sha256"].as_str().unwrap().len(), 64, "{integrity}");
    assert_eq!(integrity["handshake"], true);
    assert_eq!(integrity["architecture"], "x86_64");
    assert_eq!(integrity["signed_version"], Value::Null);
    assert_eq!(names(&integrity["services"]), ["echo.v1.Echo"]);
    let fit = &report["tier_fit"];
    assert_eq!(fit["configured"], "L3");
    assert_eq!(fit["tightest"], "L3", "{fit:#}");
    assert_eq!(fit["tighter"], serde_json::json!([]));
    let recorded: Vec<&str> = fit["recorded"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    // What serving a call on its inherited socket takes, seen by the learning filter.
    for call in ["read", "write", "epoll_wait"] {
        assert!(recorded.iter().any(|r| r.starts_with(call)), "{call} not in {recorded:?}");
    }
    for b in [&report["baseline"], &report["echo_baseline"]] {
        assert_eq!(b["tier"], "L3");
        assert!(b["ready_ms"].as_u64().unwrap() > 0, "{b}");
        assert!(b["idle_rss_kib"].as_u64().unwrap() > 100, "{b}");
        let calls = &b["calls"];
        assert_eq!((calls["count"].as_u64(), calls["errors"].as_u64()), (Some(200), Some(0)), "{b}");
        let (p50, p99) = (calls["p50_us"].as_u64().unwrap(), calls["p99_us"].as_u64().unwrap());
        assert!(0 < p50 && p50 <= p99, "{b}");
    }
    assert_echo_takes_every_fault(&report);
    assert_eq!(report["failed"], serde_json::json!([]));
}

/// Digits masked: the README's figures are one run's.
fn shape(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        match (c.is_ascii_digit(), out.ends_with('N')) {
            (true, true) => {}
            (true, false) => out.push('N'),
            (false, _) => out.push(c),
        }
    }
    out
}

#[test]
fn the_readmes_echo_report_is_what_onboard_prints() {
    let readme = std::fs::read_to_string(bins::repo().join("README.md")).unwrap();
    let at = readme.find("\n## Onboarding check\n").expect("the README's Onboarding check section");
    let (_, block) = readme[at..].split_once("```text\n").expect("a text block in Onboarding check");
    let (block, _) = block.split_once("```").unwrap();
    let entry = plugin("echo", &bins::example("echo"), "tier = \"L3\"");
    let out = onboard(&entry, &["echo", "--call", "echo.v1.Echo/Echo", "-d", r#"{"message":"hi"}"#]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let printed: Vec<String> = text.lines().map(shape).collect();
    // Abridged: every line shown is printed, in order.
    let mut from = 0;
    for line in block.lines() {
        let wanted = shape(line);
        match printed[from..].iter().position(|p| *p == wanted) {
            Some(i) => from += i + 1,
            None => panic!("README line {line:?} is not in (or not in order in) the report:\n{text}"),
        }
    }
}

#[test]
fn a_plugin_exercised_into_a_socket_needs_l1_and_fails_under_l3() {
    let entry = plugin("zoo", &bins::zoo(), "tier = \"L3\"");
    let call = ["zoo", "--call", "zoo.v1.Zoo/Syscall", "-d", r#"{"name":"socket"}"#, "--calls", "20"];
    let out = onboard(&entry, &[&call[..], &["--json"]].concat());
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let fit = &report["tier_fit"];
    assert_eq!(fit["tightest"], "L1", "{fit:#}");
    let tighter: Vec<(&str, Vec<&str>)> =
        fit["tighter"].as_array().unwrap().iter().map(|d| (d["tier"].as_str().unwrap(), names(&d["denied"]))).collect();
    assert!(tighter.iter().map(|t| t.0).eq(["L3", "L2"]), "{tighter:?}");
    assert!(tighter.iter().all(|(_, denied)| denied.contains(&"socket")), "{tighter:?}");
    assert!(names(&fit["configured_denies"]).contains(&"socket"), "{fit:#}");
    // Measured under the tier it fits, where the call works.
    assert_eq!(report["baseline"]["tier"], "L1");
    assert_eq!(report["baseline"]["calls"]["errors"], 0, "{report:#}");
    let failed = names(&report["failed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("tier fit: the configured tier L3 would deny ") && failed[0].contains("socket"));

    // The same in words.
    let out = onboard(&entry, &call);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("  tightest      L1\n"), "{text}");
    let l3 = text.lines().find(|l| l.starts_with("  L3 ")).unwrap_or_else(|| panic!("{text}"));
    assert!(l3.contains("would deny") && l3.contains("socket"), "{l3}");
    assert!(text.contains("FAILED: tier fit: the configured tier L3 would deny"), "{text}");
}

/// A binary the kernel maps writable and executable at exec (here echo with an
/// executable stack) is refused at start by L2 and L3: onboarding says so, recommends
/// the tier it can run under, and measures it there.
#[test]
fn a_binary_with_an_executable_stack_fits_only_l1_and_fails_under_l2() {
    let dir = tempfile::Builder::new().prefix("ps-onboard-").tempdir().unwrap();
    let stacky = copy_with_executable_stack(&bins::example("echo"), dir.path(), "echo-exec-stack");
    let entry = plugin("stacky", &stacky, "tier = \"L2\"\ndeclared_name = \"echo\"");
    let call = ["stacky", "--call", "echo.v1.Echo/Echo", "-d", r#"{"message":"hi"}"#, "--calls", "20"];
    let out = onboard(&entry, &[&call[..], &["--json"]].concat());
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let what = "an executable stack (PT_GNU_STACK with PF_X)";
    assert_eq!(report["integrity"]["writable_exec"], what, "{report:#}");
    let fit = &report["tier_fit"];
    assert_eq!(fit["tightest"], "L1", "{fit:#}");
    let said = format!("memory writable and executable from exec ({what})");
    assert_eq!(names(&fit["configured_denies"]), [said.as_str()], "{fit:#}");
    // Measured under the tier it fits, where it starts.
    assert_eq!(report["baseline"]["tier"], "L1");
    assert_eq!(report["baseline"]["calls"]["errors"], 0, "{report:#}");
    let failed = names(&report["failed"]);
    assert_eq!(
        failed,
        [format!("tier fit: the configured tier L2 would deny {said}; the tightest tier that fits is L1").as_str()],
        "{report:#}"
    );
}

#[test]
fn an_unknown_plugin_and_a_missing_config_are_refused() {
    let entry = plugin("echo", &bins::example("echo"), "tier = \"L3\"");
    let out = onboard(&entry, &["nope"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no plugin \"nope\" in "), "{out:?}");
    let out = std::process::Command::new(bins::supervisorctl())
        .args(["onboard", "--config"])
        .arg(Path::new("/nonexistent/supervisor.toml"))
        .arg("echo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/supervisor.toml: cannot read it"), "{out:?}");
    // A typo in --call or -d is a usage error at once, before any supervisor runs (it was
    // found as every baseline call failing, and blamed on the plugin).
    for (args, says) in [
        (&["echo", "--call", "bad", "-d", "{}"][..], "--call \"bad\" must be written Service/Method"),
        (&["echo", "--call", "echo.v1.Echo/Echo", "-d", "{"][..], "-d is not valid JSON"),
    ] {
        let started = std::time::Instant::now();
        let out = onboard(&entry, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{args:?} ran for {:?}", started.elapsed());
    }
}

#[test]
fn token_validator_fits_l3_and_one_that_cannot_start_fails_naming_why() {
    let secret = "\n[plugin.config]\nsecret = \"0123456789abcdef0123\"\n";
    // Alone in the scratch supervisor, it neither calls nor is called by the other plugin.
    let links = "calls = [\"echo\"]\ncallers = [\"plugin:echo\"]\n";
    let entry =
        plugin("token-validator", &bins::example("token_validator"), &format!("tier = \"L3\"\n{links}{secret}"))
            + &plugin("echo", &bins::example("echo"), "");
    let issue = ["token-validator", "--call", "token.v1.TokenValidator/Issue", "-d", r#"{"subject":"alice"}"#];
    let out = onboard(&entry, &[&issue[..], &["--calls", "20", "--json"]].concat());
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["tier_fit"]["tightest"], "L3", "{report:#}");
    assert_eq!(report["baseline"]["calls"]["errors"], 0, "{report:#}");

    // Without its secret its init refuses: no report, and the reason.
    let entry = plugin("token-validator", &bins::example("token_validator"), "tier = \"L3\"");
    let out = onboard(&entry, &issue);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the learning pass: plugin \"token-validator\" did not reach running"), "{stderr}");
    assert!(stderr.contains("missing field `secret`"), "{stderr}");
}

#[test]
fn an_unsandboxed_plugin_is_judged_too_its_data_dir_left_alone_and_not_restarted_when_it_should_not_be() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("echo-data");
    let extra = format!("tier = \"none\"\nrestart = \"never\"\ndata_dir = {:?}", data_dir.display().to_string());
    let entry = plugin("echo", &bins::example("echo"), &extra);
    let unsandboxed = "[supervisor.sandbox]\nallow_unsandboxed = true\n";
    let out = onboard_with(
        unsandboxed,
        &entry,
        &["echo", "--call", "echo.v1.Echo/Echo", "-d", "{}", "--calls", "5", "--json"],
    );
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["tier_fit"]["configured"], "none");
    assert_eq!(report["tier_fit"]["tightest"], "L3", "{report:#}");
    assert_eq!(report["baseline"]["tier"], "none");
    // Killed, and left down as its restart policy says: no failed check.
    let kill9 = fault(&report, "kill -9");
    assert_eq!((kill9["outcome"].as_str(), kill9["ms"].as_u64()), (Some("passed"), None), "{kill9}");
    assert!(happened(kill9).starts_with("not restarted; it is failed"), "{kill9}");
    // Started again for the next fault, which it drains for.
    let term = fault(&report, "SIGTERM");
    assert_eq!(term["outcome"], "passed", "{term}");
    assert!(happened(term).ends_with("left stopped, as restart = \"never\" does after a clean exit"), "{term}");
    let memory = fault(&report, "memory limit");
    assert_eq!((memory["outcome"].as_str(), happened(memory)), (Some("skipped"), "no memory limit without a cgroup"));
    assert!(!data_dir.exists(), "the scratch runs used the entry's data_dir");
}

/// A plugin whose call outlasts its stop_timeout does not drain in time: the SIGTERM check
/// fails, naming it, and alone; the other faults are still injected.
#[test]
fn a_plugin_whose_call_outlasts_its_stop_timeout_fails_the_sigterm_check() {
    let entry = plugin("zoo", &bins::zoo(), "stop_timeout = \"200ms\"");
    let sleep = ["zoo", "--call", "zoo.v1.Zoo/Sleep", "-d", r#"{"ms":800}"#, "--calls", "1", "--json"];
    let out = onboard(&entry, &sleep);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let term = fault(&report, "SIGTERM");
    assert_eq!(term["outcome"], "failed", "{term}");
    assert!(happened(term).starts_with("still running 200ms (its stop_timeout) after SIGTERM; "), "{term}");
    assert!(term["expected"].as_str().unwrap().contains("exited 0 within its stop_timeout (200ms)"), "{term}");
    let failed = names(&report["failed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("SIGTERM: still running 200ms (its stop_timeout) after SIGTERM"), "{failed:?}");
    // Killed after the wait and restarted, it takes the rest.
    for name in ["kill -9", "deadline", "burst", "memory limit"] {
        assert_eq!(fault(&report, name)["outcome"], "passed", "{report:#}");
    }
}

/// Calls slower than the faults once waited for: the burst's queued calls wait through two
/// rounds of `max_in_flight` (6 s here), the SIGTERM's call through the drain, and each is
/// given as long as a plugin may take to answer, so a slow plugin that behaves passes.
#[test]
fn a_slow_call_that_is_answered_passes_every_fault() {
    // Its call_timeout covers the queue too: long enough for both rounds.
    let entry = plugin("zoo", &bins::zoo(), "stop_timeout = \"10s\"\ncall_timeout = \"20s\"");
    let sleep = ["zoo", "--call", "zoo.v1.Zoo/Sleep", "-d", r#"{"ms":3000}"#, "--calls", "1", "--json"];
    let out = onboard(&entry, &sleep);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let term = fault(&report, "SIGTERM");
    assert!(happened(term).starts_with("drained and exited 0 in "), "{term}");
    assert!(happened(term).contains("; the call in flight answered OK; "), "{term}");
    assert!(term["ms"].as_u64().unwrap() >= 2500, "the drain waited for the call: {term}");
    let burst = fault(&report, "burst");
    assert!(happened(burst).starts_with("8 answered, 4 shed with RESOURCE_EXHAUSTED in at most "), "{burst}");
}

/// `onboard --binary PATH --tier TIER`: no config, the plugin named after its file.
#[test]
fn a_binary_is_checked_under_a_tier_without_a_config() {
    let out = std::process::Command::new(bins::supervisorctl())
        .arg("onboard")
        .arg("--binary")
        .arg(bins::example("echo"))
        .args(["--tier", "L3", "--call", "echo.v1.Echo/Echo", "-d", r#"{"message":"hi"}"#, "--calls", "20", "--json"])
        .output()
        .unwrap();
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["plugin"], "echo");
    assert_eq!(
        (report["tier_fit"]["configured"].as_str(), report["tier_fit"]["tightest"].as_str()),
        (Some("L3"), Some("L3"))
    );
    assert_eq!(report["baseline"]["tier"], "L3");
    assert_echo_takes_every_fault(&report);
}

#[test]
fn a_missing_binary_an_unknown_tier_and_both_a_config_and_a_binary_are_refused() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bins::supervisorctl()).arg("onboard").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let echo = bins::example("echo").display().to_string();
    let (code, err) = run(&["--binary", "/nonexistent/echo", "--tier", "L3"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--binary /nonexistent/echo: No such file or directory"), "{err}");
    let (code, err) = run(&["--binary", &echo, "--tier", "L9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tier L9: no such tier in ") && err.contains("(it has L1, L2, L3, or none"), "{err}");
    let (code, err) = run(&["--binary", &echo, "--tier", "L3", "--config", "/etc/x.toml", "echo"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, err) = run(&["--binary", &echo]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tier <TIER>"), "{err}");
    // The config is made from the binary: what is wrong with it names the binary, not a file.
    let (code, err) = run(&["--binary", &echo, "--tier", "L3", "no good"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("--binary {echo}: as plugin \"no good\": ")), "{err}");
}

/// Ctrl-C (or a service manager's SIGTERM) during the check ends it with a clear message
/// once its scratch supervisor is shut down: the plugin it ran is gone, its cgroups and
/// its scratch directory removed.
#[test]
fn an_interrupted_check_leaves_no_plugin_cgroup_or_directory_behind() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let config = config_with("", &plugin("echo", &bins::example("echo"), "tier = \"L3\""));
    let base =
        config.split("[supervisor.cgroup]\nname = \"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, config).unwrap();
    // Enough calls that the check is still measuring when the signal comes.
    let child = std::process::Command::new(bins::supervisorctl())
        .args(["onboard", "--config"])
        .arg(&path)
        .args(["echo", "--call", "echo.v1.Echo/Echo", "-d", r#"{"message":"hi"}"#, "--calls", "100000"])
        .env("TMPDIR", scratch.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let children = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                plugin_integration::procfs::status_field(*p, "PPid").is_some_and(|v| v.trim() == pid.to_string())
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The baseline's instance: the second scratch supervisor's plugin.
    let cgroups = |run: &str| plugin_integration::procfs::cgroup_dirs_named(&format!("{base}-onboard-{pid}-{run}"));
    while cgroups("base").is_empty() || children().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the baseline never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let plugins = children();
    // SAFETY: kill sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGINT: the plugin's scratch supervisor was stopped and its directory removed"),
        "{stderr}"
    );
    for p in plugins {
        let state = plugin_integration::procfs::status_field(p, "State");
        assert!(state.as_ref().is_none_or(|s| s.trim().starts_with('Z')), "plugin {p} still runs: {state:?}");
    }
    for run in ["learn", "base", "echo"] {
        assert_eq!(cgroups(run), Vec::<std::path::PathBuf>::new(), "cgroups of the {run} run left behind");
    }
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}
