//! A real `plugin-supervisor` process in a scratch directory, driven the way
//! operators drive it. Dropping it stops the daemon (SIGTERM, then SIGKILL)
//! so a failing test leaves no process behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins;

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The daemon's descriptor limit (soft and hard), when not inherited.
    pub nofile: Option<u64>,
    /// More arguments for `plugin-supervisor` (`--log-format json`).
    pub args: Vec<String>,
    /// More environment for `plugin-supervisor` (`NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// A command the daemon runs under (`unshare ...`): the daemon is then its child.
    pub wrapper: Vec<String>,
}

impl Daemon {
    /// Writes `config` into a scratch directory and starts the daemon on
    /// it; returns once the control socket answers.
    pub fn start(config: &str) -> Self {
        let d = Self::spawn(config);
        d.wait_control(Duration::from_secs(20));
        d
    }

    /// Starts the daemon without waiting (for tests of refused configs).
    pub fn spawn(config: &str) -> Self {
        Self::spawn_with(config, |_| {})
    }

    /// [`Daemon::start`] with a descriptor limit of `nofile`.
    pub fn start_with_nofile(config: &str, nofile: u64) -> Self {
        let d = Self::launched(config, |_| {}, Some(nofile));
        d.wait_control(Duration::from_secs(20));
        d
    }

    /// [`Daemon::start`] with more arguments for the daemon.
    pub fn start_with_args(config: &str, args: &[&str]) -> Self {
        let mut d = Self::unlaunched(config, |_| {}, None);
        d.args = args.iter().map(|a| (*a).to_owned()).collect();
        d.launch();
        d.wait_control(Duration::from_secs(20));
        d
    }

    /// [`Daemon::start`] with the daemon as process 1 of a PID namespace of its own, as a
    /// container's entrypoint is: `unshare --pid --fork --mount-proc` runs it (its
    /// `/proc` is a private mount, in a mount namespace of its own). `--kill-child` takes
    /// the namespace down with `unshare` however the test ends.
    pub fn start_as_pid_one(config: &str) -> Self {
        let mut d = Self::unlaunched(config, |_| {}, None);
        d.wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"].map(str::to_owned).to_vec();
        d.launch();
        d.wait_control(Duration::from_secs(20));
        d
    }

    /// The process the wrapper runs the daemon as (with a wrapper, the namespace's process
    /// 1, as this test's namespace numbers it), else the daemon.
    pub fn inner_pid(&self) -> Option<i32> {
        let pid = self.child.as_ref()?.id() as i32;
        if self.wrapper.is_empty() {
            return Some(pid);
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// [`Daemon::spawn`] with more environment for the daemon; does not wait.
    pub fn spawn_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let mut d = Self::unlaunched(config, |_| {}, None);
        d.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        d.launch();
        d
    }

    /// [`Daemon::spawn`] with a descriptor limit of `nofile`.
    pub fn spawn_with_nofile(config: &str, nofile: u64) -> Self {
        Self::launched(config, |_| {}, Some(nofile))
    }

    /// [`Daemon::spawn`], after `prepare` has filled the scratch directory
    /// (the config's directory, against which its relative paths resolve).
    pub fn spawn_with(config: &str, prepare: impl FnOnce(&Path)) -> Self {
        Self::launched(config, prepare, None)
    }

    fn launched(config: &str, prepare: impl FnOnce(&Path), nofile: Option<u64>) -> Self {
        let mut d = Self::unlaunched(config, prepare, nofile);
        d.launch();
        d
    }

    fn unlaunched(config: &str, prepare: impl FnOnce(&Path), nofile: Option<u64>) -> Self {
        let dir = tempfile::Builder::new().prefix("ps-test-").tempdir().expect("tempdir");
        let runtime = dir.path().join("run");
        let config_path = dir.path().join("supervisor.toml");
        std::fs::write(&config_path, config).expect("write config");
        prepare(dir.path());
        let log = dir.path().join("daemon.log");
        Self {
            child: None,
            dir,
            runtime,
            config: config_path,
            log,
            nofile,
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Runs `plugin-supervisor` on this config and runtime directory,
    /// appending its log to `daemon.log`.
    fn launch(&mut self) {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bins::supervisor());
                cmd
            }
            None => Command::new(bins::supervisor()),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--runtime-dir")
            .arg(&self.runtime)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PLUGIN_SUPERVISOR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(n) = self.nofile {
            let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
            // SAFETY: setrlimit is async-signal-safe and only reads `lim`, a
            // copy owned by the closure.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        // A daemon starts with the default action for every signal, as systemd or a shell
        // in a terminal starts it. One started from a script's background job (as CI
        // may be) would otherwise inherit SIGINT ignored, and a SIGINT sent before the
        // daemon catches signals would do nothing where a test expects it to end it.
        // SAFETY: signal(2) is async-signal-safe; this runs in the child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn plugin-supervisor");
        self.child = Some(child);
    }

    pub fn control(&self) -> PathBuf {
        self.runtime.join("control.sock")
    }

    pub fn gateway(&self) -> PathBuf {
        self.runtime.join("gateway.sock")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the control socket answers.
    pub fn wait_control(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.control().exists() && self.control_answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("daemon did not come up within {timeout:?}; log:\n{}", self.log_text());
    }

    /// Runs `supervisorctl --socket <control.sock> args...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bins::supervisorctl())
            .arg("--socket")
            .arg(self.control())
            .args(args)
            .output()
            .expect("run supervisorctl")
    }

    /// Whether `supervisorctl status` gets an answer: it exits 0 when every instance
    /// runs and serves, 3 when not.
    pub fn control_answers(&self) -> bool {
        matches!(self.ctl(&["status"]).status.code(), Some(0 | 3))
    }

    /// `status --json` parsed (whatever the instances' states: exit 0 or 3).
    pub fn status(&self) -> Vec<Value> {
        let out = self.ctl(&["status", "--json"]);
        assert!(matches!(out.status.code(), Some(0 | 3)), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("status --json is a JSON array")
    }

    /// The status object of one instance ("echo-0").
    pub fn instance(&self, id: &str) -> Value {
        self.status().into_iter().find(|v| v["instance"] == id).unwrap_or_else(|| panic!("no instance {id}"))
    }

    /// Waits until `pred` holds for the instance, returning its status.
    pub fn wait_for(&self, id: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.instance(id);
            if pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("{id} did not become {what} within {timeout:?}: {v}\nlog:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, state, |v| v["state"] == state)
    }

    /// Sends `sig` and waits for the daemon to exit; returns its status (with a wrapper,
    /// the wrapper's, which `unshare` makes the daemon's).
    pub fn stop_with(&mut self, sig: i32, timeout: Duration) -> Option<std::process::ExitStatus> {
        // `unshare` blocks SIGTERM and SIGINT while it waits: the signal goes to what it runs
        // (or to `unshare` itself when what it ran has gone, so `unshare` ends on its own).
        let target = self.inner_pid();
        let mut child = self.child.take()?;
        let target = target.unwrap_or(child.id() as i32);
        // SAFETY: signalling our own child, or the process our own child runs, by pid.
        unsafe { libc::kill(target, sig) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Daemon {
    /// Waits up to `timeout` for the daemon to exit on its own; its status,
    /// or None while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` without waiting (with a wrapper, to what it runs).
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.inner_pid() {
            // SAFETY: signalling our own child, or the process our own child runs, by pid.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// The cgroup subtree name of this daemon's config (`[supervisor.cgroup] name`).
    pub fn cgroup_name(&self) -> String {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let at = text.find("[supervisor.cgroup]").expect("a [supervisor.cgroup] section");
        let line = text[at..].lines().find(|l| l.trim_start().starts_with("name")).expect("a name key");
        line.split('"').nth(1).expect("a quoted name").to_owned()
    }

    /// The pids the daemon's log says it spawned, in order.
    pub fn spawned_pids(&self) -> Vec<i32> {
        self.log_text()
            .lines()
            .filter_map(|l| l.split("spawned pid ").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(15));
    }
}

/// A cgroup subtree name no other test uses; the `pstest-<pid>-` prefix
/// lets a later run sweep what a killed run left behind.
pub fn unique_cgroup_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("pstest-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// The `[supervisor]` section every test config starts with: the shipped
/// policies, a private state directory, a cgroup subtree of its own.
pub fn supervisor_section(extra: &str) -> String {
    // Relative paths resolve against the config file's directory, a
    // scratch directory removed with the test.
    format!(
        "[supervisor]\npolicies_dir = {:?}\nstate_dir = \"state\"\n{extra}\n[supervisor.cgroup]\nname = {:?}\n\n",
        bins::repo().join("policies").display().to_string(),
        unique_cgroup_name(),
    )
}

/// A config for `plugins` (TOML `[[plugin]]` entries) with test-friendly
/// defaults: short timeouts and quick restarts.
pub fn config(plugins: &str) -> String {
    config_with("", plugins)
}

/// How much longer than here start-ups and calls take where the tests run
/// (`PLUGIN_TEST_TIMEOUT_FACTOR`, set by the VM lane, whose emulated CPU is
/// about 20x slower); 1 by default.
pub fn timeout_factor() -> u32 {
    std::env::var("PLUGIN_TEST_TIMEOUT_FACTOR").ok().and_then(|f| f.parse().ok()).filter(|f| *f > 0).unwrap_or(1)
}

/// [`config`] with extra `[supervisor]` keys.
pub fn config_with(supervisor: &str, plugins: &str) -> String {
    let head = supervisor_section(supervisor);
    let t = 5 * timeout_factor();
    format!(
        r#"{head}[supervisor.defaults]
handshake_timeout = "{t}s"
call_timeout = "{t}s"
stop_timeout = "2s"

[supervisor.defaults.backoff]
initial = "100ms"
max = "1s"

{plugins}"#
    )
}

/// The shipped example config (`supervisor/examples/supervisor.toml`) made
/// runnable from a test: this build's examples, the repository's policies,
/// a private state directory and cgroup subtree.
pub fn example_config() -> String {
    let shipped =
        std::fs::read_to_string(bins::repo().join("supervisor/examples/supervisor.toml")).expect("example config");
    let replaced = shipped
        .replace("../../target/release/examples", &bins::profile_dir().join("examples").display().to_string())
        .replace("\"../../policies\"", &format!("{:?}", bins::repo().join("policies").display().to_string()))
        .replace("\"/var/lib/plugin-supervisor\"", "\"state\"")
        .replace("name = \"plugin-supervisor\"", &format!("name = {:?}", unique_cgroup_name()));
    for (from, what) in
        [("../../target", "examples"), ("../../policies", "policies"), ("/var/lib/plugin-supervisor", "state_dir")]
    {
        assert!(!replaced.contains(from), "the example config's {what} path was not replaced");
    }
    replaced
}

/// A `[[plugin]]` entry for a binary.
pub fn plugin(name: &str, binary: &Path, extra: &str) -> String {
    format!("[[plugin]]\nname = {name:?}\nbinary = {:?}\n{extra}\n", binary.display().to_string())
}

impl Daemon {
    /// Stops the daemon (SIGTERM) and starts it again on the same config,
    /// runtime directory and state: a supervisor restart.
    pub fn restart(&mut self) {
        let status = self.stop_with(libc::SIGTERM, Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "daemon did not stop cleanly: {status:?}");
        self.restart_after_crash();
    }

    /// Starts the daemon again on the same config after it was killed
    /// (SIGKILL): the new one must clean up what the dead one left.
    pub fn restart_after_crash(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.launch();
        self.wait_control(Duration::from_secs(30));
    }

    /// `events --json` parsed.
    pub fn events(&self) -> Vec<Value> {
        let out = self.ctl(&["events", "--json"]);
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits until an event of `kind` whose message contains `text` exists.
    pub fn wait_event(&self, kind: &str, text: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(text)))
            {
                return e;
            }
            if Instant::now() > deadline {
                panic!("no {kind} event containing {text:?} within {timeout:?}: {:#?}", self.events());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
