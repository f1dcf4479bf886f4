//! The daemon: the supervisor plus its runtime directory (a lock, the
//! control and gateway sockets), serving until SIGTERM or SIGINT, then
//! stopping every plugin and removing what it created.
//!
//! Signals are caught from the first moment of start-up (the caller sets
//! them up before anything else), so a stop signal at any point ends in the
//! same clean exit: start-up runs to its end, then everything is stopped.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use plugin_proto::signals::Signals;

use crate::Supervisor;
use crate::config::Config;
use crate::sandbox::pidfd::signal_name;

pub const CONTROL_SOCKET: &str = "control.sock";
pub const GATEWAY_SOCKET: &str = "gateway.sock";
/// The longest socket path the kernel takes (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;
const LOCK_FILE: &str = "supervisor.lock";
// The runtime directory's length is checked on the gateway socket's path alone: the
// control socket's, and the path each is bound at first, must be no longer.
const _: () =
    assert!(CONTROL_SOCKET.len() <= GATEWAY_SOCKET.len() && crate::net::BIND_NAME_LEN <= GATEWAY_SOCKET.len());

/// The signals the daemon handles: the stop signals, and SIGHUP, which
/// must never be fatal (its default action would take every plugin down).
pub const HANDLED_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Holds the runtime directory for this daemon; removes its files on drop.
struct RuntimeDir {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl RuntimeDir {
    fn claim(dir: &Path) -> anyhow::Result<Self> {
        // Before anything is made: its sockets could not be bound (control.sock, and the
        // private path each socket is bound at before its rename, are no longer).
        let socket = dir.join(GATEWAY_SOCKET);
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            bail!(
                "runtime directory {}: its socket {} would be {len} bytes, more than the {MAX_SOCKET_PATH} a socket's path may have",
                dir.display(),
                socket.display()
            );
        }
        if dir.as_os_str().is_empty() {
            bail!("the runtime directory is empty: give one in [supervisor] runtime_dir or --runtime-dir");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating runtime directory {}", dir.display()))?;
        let meta = std::fs::metadata(dir).with_context(|| format!("runtime directory {}", dir.display()))?;
        if meta.permissions().mode() & 0o002 != 0 {
            bail!("runtime directory {} is world-writable; refusing to put sockets there", dir.display());
        }
        let path = dir.join(LOCK_FILE);
        let mut lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!("another plugin-supervisor (pid {}) is using runtime directory {}", holder.trim(), dir.display());
        }
        lock.set_len(0)?;
        writeln!(lock, "{}", std::process::id())?;
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        for f in [CONTROL_SOCKET, GATEWAY_SOCKET, LOCK_FILE] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }
}

/// What a caught signal asks of the daemon.
enum Asked {
    Stop(i32),
    /// SIGHUP: apply the config file, as `supervisorctl update` does.
    Update,
}

fn asked(sig: i32) -> Asked {
    if sig == libc::SIGHUP { Asked::Update } else { Asked::Stop(sig) }
}

/// The next stop signal; each SIGHUP before it is handed to `on_hup`.
async fn stop_signal(signals: &mut Signals, on_hup: impl Fn()) -> anyhow::Result<i32> {
    loop {
        match asked(signals.recv().await.context("reading caught signals")?) {
            Asked::Stop(sig) => return Ok(sig),
            Asked::Update => on_hup(),
        }
    }
}

/// Applies the config file each time `hup` is notified. SIGHUPs that arrive while an
/// update runs make one more after it, not one each: `Notify` keeps a single permit.
async fn update_on_hup(sup: Arc<Supervisor>, hup: Arc<tokio::sync::Notify>) {
    loop {
        hup.notified().await;
        tracing::info!(signal = "SIGHUP", "applying the config file");
        match sup.update(&[], crate::reload::ReloadOptions::default()).await {
            Ok(done) => {
                for line in done.lines() {
                    tracing::info!(signal = "SIGHUP", "update: {line}");
                }
                if !done.failed.is_empty() {
                    tracing::warn!(
                        signal = "SIGHUP",
                        failed = done.failed.len(),
                        "some plugins' changes were refused: they run on as they were, but for what the lines \
                         above say was applied in place"
                    );
                }
            }
            Err(e) => tracing::error!(signal = "SIGHUP", error = %e, "update refused: nothing changed"),
        }
    }
}

/// Runs the daemon until a stop signal; returns once everything is stopped.
/// `signals` must catch [`HANDLED_SIGNALS`] and be set up before the config
/// was read, so that no moment of start-up dies of a signal's default action.
pub async fn run(config: Config, runtime_dir: Option<PathBuf>, mut signals: Signals) -> anyhow::Result<()> {
    // Refused before anything is created: a gateway with too few descriptors would lock every caller out.
    let gateway_limits = crate::routing::server::Limits::new(config.supervisor.gateway.clone())?;
    // Relative to the config file, as its other paths are.
    let dir = runtime_dir.unwrap_or_else(|| config.resolve(&config.supervisor.runtime_dir));
    let runtime = RuntimeDir::claim(&dir)?;

    let control_path = dir.join(CONTROL_SOCKET);
    let gateway_path = dir.join(GATEWAY_SOCKET);
    let control = crate::net::bind_unix(&control_path, config.supervisor.control_socket_mode.0)
        .await
        .with_context(|| format!("binding {}", control_path.display()))?;
    let gateway = crate::net::bind_unix(&gateway_path, config.supervisor.gateway_socket_mode.0)
        .await
        .with_context(|| format!("binding {}", gateway_path.display()))?;

    let metrics = match config.supervisor.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics_listen {addr} (the [supervisor] section)"))?,
        ),
        None => None,
    };

    let allowed = config.supervisor.control_allowed_uids.clone();
    let gateway_fd_reserve = config.supervisor.gateway.fd_reserve;
    // Not raced with the signals: a start abandoned halfway would leave its
    // cgroups behind. It is bounded (plugins start in the background), and a
    // signal caught meanwhile waits in the pipe and is acted on right after.
    let sup = Arc::new(Supervisor::start(config).await?);
    let control_limits = crate::control::conns::Limits::within(gateway_fd_reserve);
    let control_task = tokio::spawn(crate::control::serve(control, sup.clone(), allowed, control_limits));
    let gateway_task = tokio::spawn(crate::routing::server::serve(gateway, sup.gateway(), gateway_limits));
    let metrics_task = metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics on /metrics");
        }
        tokio::spawn(crate::observe::scrape::serve(listener, sup.clone()))
    });
    tracing::info!(control = %control_path.display(), gateway = %gateway_path.display(), "supervisor ready");
    // Under systemd (Type=notify): READY=1 once the autostart plugins have started, the
    // status line, reloads and watchdog pings. Kept running through the shutdown, whose
    // drains may outlast a watchdog period.
    let notifier = crate::service::Notifier::from_env();
    sup.notify_service(notifier.clone());
    let service_task = notifier.enabled().then(|| tokio::spawn(crate::service::report(sup.clone(), notifier.clone())));

    // A SIGHUP caught during start-up waited in the pipe: it is applied now.
    let hup = Arc::new(tokio::sync::Notify::new());
    let hup_task = tokio::spawn(update_on_hup(sup.clone(), hup.clone()));
    let stopped_by = stop_signal(&mut signals, || hup.notify_one()).await;
    notifier.stopping();
    match &stopped_by {
        Ok(sig) => tracing::info!(signal = %signal_name(*sig), "stopping every plugin"),
        Err(e) => tracing::error!(error = %e, "stopping every plugin"),
    }
    hup_task.abort();
    control_task.abort();
    gateway_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    {
        let shutdown = sup.shutdown();
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            sig = stop_signal(&mut signals, || tracing::warn!(signal = "SIGHUP", "stopping: SIGHUP ignored")) => {
                if let Ok(sig) = sig {
                    tracing::warn!(signal = %signal_name(sig), "second stop signal: killing plugins without waiting for them to drain");
                }
                sup.hurry();
                shutdown.await;
            }
        }
    }
    if let Some(task) = service_task {
        task.abort();
    }
    drop(sup);
    drop(runtime);
    tracing::info!("stopped");
    notifier.flush(std::time::Duration::from_secs(1));
    stopped_by.map(drop)
}

/// An error and its causes on one line, each said once: many errors already
/// include their cause in their own message, which `{:#}` would repeat.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("/var/lib/x/state.json: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[test]
    fn a_runtime_directory_too_long_for_its_sockets_is_refused_before_anything_is_made() {
        let long = PathBuf::from(format!("/tmp/ps-{}", "r".repeat(87)));
        let Err(e) = RuntimeDir::claim(&long) else { panic!("claimed {}", long.display()) };
        assert_eq!(
            e.to_string(),
            format!(
                "runtime directory {0}: its socket {0}/gateway.sock would be 108 bytes, more than the 107 a socket's path may have",
                long.display()
            )
        );
        assert!(!long.exists(), "it was made");
        let Err(e) = RuntimeDir::claim(Path::new("")) else { panic!("claimed the empty path") };
        assert!(e.to_string().starts_with("the runtime directory is empty"), "{e}");
    }

    #[tokio::test]
    async fn both_sockets_bind_in_the_longest_runtime_directory_accepted() {
        let base = tempfile::Builder::new().prefix("ps-").tempdir_in("/tmp").unwrap();
        // The runtime directory is made by the claim, one level below the guard's.
        let room = MAX_SOCKET_PATH - 1 - GATEWAY_SOCKET.len() - base.path().as_os_str().len() - 1;
        let dir = base.path().join("r".repeat(room));
        assert_eq!(dir.join(GATEWAY_SOCKET).as_os_str().len(), MAX_SOCKET_PATH);
        let runtime = RuntimeDir::claim(&dir).unwrap_or_else(|e| panic!("{e:#}"));
        for name in [CONTROL_SOCKET, GATEWAY_SOCKET] {
            // Several times: the private path's digits are drawn anew each time.
            for _ in 0..4 {
                let path = dir.join(name);
                let listener = crate::net::bind_unix(&path, 0o600)
                    .await
                    .unwrap_or_else(|e| panic!("binding {} ({} bytes): {e}", path.display(), path.as_os_str().len()));
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
                drop(listener);
                std::fs::remove_file(&path).unwrap();
            }
        }
        drop(runtime);
    }

    #[test]
    fn one_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8");
        let e = anyhow::Error::new(Repeats { source: io }).context("opening the state");
        assert_eq!(one_line(&e), "opening the state: /var/lib/x/state.json: stream did not contain valid UTF-8");
        let plain = anyhow::anyhow!("bare");
        assert_eq!(one_line(&plain.context("outer")), "outer: bare");
    }
}
