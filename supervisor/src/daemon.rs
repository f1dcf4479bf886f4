//! The daemon: the supervisor plus its runtime directory (a lock, the
//! control and gateway sockets), serving until SIGTERM or SIGINT, then
//! stopping every plugin and removing what it created.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use plugin_proto::signals::Signals;

use crate::Supervisor;
use crate::config::Config;

pub const CONTROL_SOCKET: &str = "control.sock";
pub const GATEWAY_SOCKET: &str = "gateway.sock";
const LOCK_FILE: &str = "supervisor.lock";

/// Holds the runtime directory for this daemon; removes its files on drop.
struct RuntimeDir {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl RuntimeDir {
    fn claim(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating runtime directory {}", dir.display()))?;
        let meta = std::fs::metadata(dir)?;
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

/// Runs the daemon until a stop signal; returns once everything is stopped.
pub async fn run(config: Config, runtime_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = runtime_dir.unwrap_or_else(|| config.supervisor.runtime_dir.clone());
    let runtime = RuntimeDir::claim(&dir)?;
    let mut signals = Signals::new(&[libc::SIGTERM, libc::SIGINT]).context("catching SIGTERM and SIGINT")?;

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
    let gateway_limits = config.supervisor.gateway.clone();
    let sup = Arc::new(Supervisor::start(config).await?);
    let control_task = tokio::spawn(crate::control::serve(control, sup.clone(), allowed));
    let gateway_task = tokio::spawn(crate::routing::server::serve(gateway, sup.gateway(), gateway_limits));
    let metrics_task = metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics on /metrics");
        }
        tokio::spawn(crate::observe::scrape::serve(listener, sup.clone()))
    });
    tracing::info!(control = %control_path.display(), gateway = %gateway_path.display(), "supervisor ready");

    let sig = crate::sandbox::pidfd::signal_name(signals.recv().await?);
    tracing::info!(signal = %sig, "stopping every plugin");
    control_task.abort();
    gateway_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    tokio::select! {
        () = sup.shutdown() => {}
        _ = signals.recv() => tracing::warn!("second signal: killing plugins without waiting"),
    }
    drop(sup);
    drop(runtime);
    tracing::info!("stopped");
    Ok(())
}
