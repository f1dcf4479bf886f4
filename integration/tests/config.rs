//! Invalid configs are rejected whole, naming the file, line and key, by
//! `check-config` and by the daemon itself (which then starts nothing).

use std::process::Command;
use std::time::{Duration, Instant};

use plugin_integration::bins;
use plugin_integration::daemon::{Daemon, unique_cgroup_name};

/// The shipped policies, appended so the line numbers stay as written.
fn with_policies(text: &str) -> String {
    if text.contains("[supervisor]") {
        return text.to_owned();
    }
    format!("{text}\n[supervisor]\npolicies_dir = {:?}\n", bins::repo().join("policies").display().to_string())
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, with_policies(text)).unwrap();
    let out = Command::new(bins::supervisor()).arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), err)
}

#[test]
fn each_kind_of_bad_config_names_file_line_and_key() {
    let echo = bins::example("echo").display().to_string();
    let cases = [
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nflavour = \"x\"\n"),
            "FILE:4: plugin[0].flavour: unknown field `flavour`",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nreplicas = \"two\"\n"),
            "FILE:4: plugin[0].replicas: invalid type: string \"two\"",
        ),
        (
            "[[plugin]]\nname = \"echo\"\nbinary = \"/no/such/echo\"\n".to_owned(),
            "FILE:3: plugin[0].binary: plugin \"echo\": binary /no/such/echo cannot be used",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n"),
            "FILE:5: plugin[1].name: duplicate plugin name \"echo\"",
        ),
        ("[supervisor]\nlog_lines = -1\n".to_owned(), "FILE:2: supervisor.log_lines: invalid value"),
        (
            "[supervisor.defaults]\ncall_timeout = \"later\"\n".to_owned(),
            "FILE:2: supervisor.defaults.call_timeout: invalid duration \"later\"",
        ),
        (format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nsha256 = \"abc\"\n"), "FILE:4: plugin[0].sha256"),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nversion = \"not a range\"\n"),
            "FILE:4: plugin[0].version: \"not a range\" is not a semver range",
        ),
        ("[[plugin\nname = 1\n".to_owned(), "FILE:1: (syntax)"),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\ntier = \"L9\"\n"),
            "FILE:4: plugin[0].tier: unknown tier \"L9\"",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\ntier = \"none\"\n"),
            "FILE:4: plugin[0].tier: plugin \"echo\": tier \"none\" runs it unsandboxed",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nuid = 0\n"),
            "FILE:4: plugin[0].uid: plugins never run as root",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n[plugin.quota]\nmemory_max = \"12X\"\n"),
            "FILE:5: plugin[0].quota.memory_max: invalid size \"12X\"",
        ),
    ];
    for (text, expected) in cases {
        let (ok, err) = check(&text);
        assert!(!ok, "accepted: {text}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
}

#[test]
fn a_good_config_passes_and_the_daemon_refuses_a_bad_one_without_starting_anything() {
    let echo = bins::example("echo").display().to_string();
    let (ok, err) = check(&format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n"));
    assert!(ok, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, with_policies(&format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nreplicas = 0\n")))
        .unwrap();
    let out = Command::new(bins::supervisor())
        .arg("--config")
        .arg(&path)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4: plugin[0].replicas: replicas must be between 1 and 1024, not 0"), "{err}");
    assert!(!dir.path().join("run").exists(), "nothing was set up for a refused config");
}

#[test]
fn check_config_verifies_each_binary_as_its_start_would_and_strict_makes_that_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &std::fs::read(bins::example("echo")).unwrap()[..100]).unwrap();
    for f in [&script, &truncated] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let echo = bins::example("echo").display().to_string();
    let mut text = format!(
        "[[plugin]]\nname = \"good\"\nbinary = {echo:?}\n\n[[plugin]]\nname = \"script\"\nbinary = {:?}\n\n\
         [[plugin]]\nname = \"cut\"\nbinary = {:?}\n",
        script.display().to_string(),
        truncated.display().to_string()
    );
    // Five more of the script, under its declared name: checked once, named in one line.
    for n in 2..=6 {
        text.push_str(&format!(
            "\n[[plugin]]\nname = \"s{n}\"\nbinary = {:?}\ndeclared_name = \"script\"\n",
            script.display().to_string()
        ));
    }
    let path = dir.path().join("c.toml");
    std::fs::write(&path, with_policies(&text)).unwrap();
    let run = |strict: bool| {
        let mut cmd = Command::new(bins::supervisor());
        cmd.arg("check-config");
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "DIR");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };
    // By default a warning each: the daemon runs the plugins it can, and a unit's
    // `ExecStartPre=... check-config` does not keep the good ones from starting.
    let (code, out, err) = run(false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ok (8 plugins: good, script, cut, s2, s3, s4, s5, s6)"), "{out}");
    // Run as another uid than root, a note comes first.
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note: ")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(
            "warning: DIR/c.toml: plugin[1].binary: plugin \"script\": DIR/script is a script starting with \"#!/bin/sh\", not an ELF executable"
        ),
        "{err}"
    );
    assert!(
        lines[0].ends_with(
            "its start would be refused (so would those of s2, s3, s4 and 2 more, which run the same binary)"
        ),
        "{err}"
    );
    assert!(
        lines[1].starts_with(
            "warning: DIR/c.toml: plugin[2].binary: plugin \"cut\": DIR/truncated is a truncated ELF file"
        ),
        "{err}"
    );
    // --strict: the same lines as errors, exit 1, no "ok".
    let (code, out, strict_err) = run(true);
    assert_eq!(code, Some(1), "{strict_err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(strict_err, err.replace("warning: ", ""));
}

/// Runs the daemon on `text` and waits (bounded) for it to refuse: its
/// stderr, or None when it kept running with the config.
fn daemon_refusal(text: &str) -> (Option<String>, Daemon) {
    let mut d = Daemon::spawn(text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(Ok(Some(status))) = d.child.as_mut().map(std::process::Child::try_wait) {
            assert!(!status.success(), "the daemon exited 0 on a bad config");
            d.child = None;
            return (Some(d.log_text()), d);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, d)
}

/// Removes a directory the old daemon could make outside cgroupfs, even when
/// the test fails.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_config_and_the_daemon_refuse_the_same_configs_with_the_same_words() {
    let echo = bins::example("echo").display().to_string();
    let policies = bins::repo().join("policies").display().to_string();
    // A directory that looks enough like a cgroup for the daemon to build in
    // it, were it ever reached: the old daemon made `sub` here.
    let escape = unique_cgroup_name();
    let outside = RemoveDir(std::path::Path::new("/tmp").join(&escape));
    std::fs::create_dir(&outside.0).unwrap();
    for f in ["cgroup.controllers", "cgroup.subtree_control"] {
        std::fs::write(outside.0.join(f), "").unwrap();
    }
    let escaping_parent = format!("/../../../../../../tmp/{escape}");
    let head = |extra: &str| format!("[supervisor]\npolicies_dir = {policies:?}\nstate_dir = \"state\"\n{extra}\n");
    let plugin = |name: &str, extra: &str| format!("[[plugin]]\nname = {name:?}\nbinary = {echo:?}\n{extra}\n");
    let subtree = |cgroup: &str| format!("{}[supervisor.cgroup]\n{cgroup}\n{}", head(""), plugin("echo", ""));
    let cases = [
        (
            format!("{}{}", head(""), plugin("cgroup.procs", "")),
            ":6: plugin[0].name: invalid plugin name \"cgroup.procs\": looks like a control file name",
        ),
        (
            format!("{}{}", head(""), plugin("memory.max", "")),
            ":6: plugin[0].name: invalid plugin name \"memory.max\": looks like a control file name",
        ),
        (
            format!("{}{}", head(""), plugin("echo", "[plugin.quota]\npids_max = 4194305")),
            ":8: plugin[0].quota: invalid limit pids_max: 4194305 tasks is above the kernel's maximum of 4194304",
        ),
        (subtree("name = \"..\""), ":6: supervisor.cgroup.name: invalid subtree name \"..\": starts with a dot"),
        (subtree("name = \"a/b\""), ":6: supervisor.cgroup.name: invalid subtree name \"a/b\""),
        (subtree("name = \"\""), ":6: supervisor.cgroup.name: invalid subtree name \"\": empty"),
        (
            subtree(&format!("name = \"sub\"\nparent = {escaping_parent:?}")),
            ":7: supervisor.cgroup.parent: invalid parent name \"/../../../../../../tmp/pstest-",
        ),
        (
            format!("{}{}", head("log_lines = 1000000000000"), plugin("echo", "")),
            ":4: supervisor.log_lines: 1000000000000 is more than the 10000 kept at most",
        ),
        (format!("{}{}# {}\n", head(""), plugin("echo", ""), "x".repeat(4 << 20)), ": (size): the config is "),
    ];
    for (text, expected) in cases {
        let (daemon, d) = daemon_refusal(&text);
        let checked = Command::new(bins::supervisor()).arg("check-config").arg(&d.config).output().unwrap();
        let checked_err = String::from_utf8_lossy(&checked.stderr).into_owned();
        let shown = &text[..text.len().min(400)];
        assert!(!checked.status.success(), "check-config accepted:\n{shown}");
        assert!(checked_err.contains(expected), "expected {expected:?} in:\n{checked_err}");
        let daemon = daemon.unwrap_or_else(|| panic!("the daemon runs with what check-config refused:\n{shown}"));
        assert_eq!(daemon, checked_err, "the daemon and check-config say the same");
        assert!(!d.runtime.exists(), "nothing was set up for a refused config");
        let made = outside.0.join("sub");
        assert!(!made.exists(), "{} was created outside the cgroup filesystem", made.display());
    }
}

/// A log filter that does not parse is said (naming the variable, its value and why),
/// not silently replaced by `info`; an unset one is the quiet default.
#[test]
fn a_log_filter_that_does_not_parse_is_said_not_silently_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, with_policies("")).unwrap();
    let run = |filter: Option<&str>| {
        let mut cmd = Command::new(bins::supervisor());
        cmd.arg("check-config").arg(&path).env_remove("PLUGIN_SUPERVISOR_LOG");
        if let Some(f) = filter {
            cmd.env("PLUGIN_SUPERVISOR_LOG", f);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(Some("debug,foo=bogus"));
    assert!(ok, "the check itself still runs: {err}");
    assert!(
        err.starts_with("plugin-supervisor: PLUGIN_SUPERVISOR_LOG=\"debug,foo=bogus\" is not a log filter (")
            && err.contains("); logging at info"),
        "{err}"
    );
    for fine in [None, Some("warn,plugin_supervisor=debug")] {
        let (ok, err) = run(fine);
        assert!(ok && !err.contains("not a log filter"), "{fine:?}: {err}");
    }
}
