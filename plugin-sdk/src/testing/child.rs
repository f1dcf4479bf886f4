//! A plugin binary run as the supervisor runs it, minus the sandbox: a cleared
//! environment with the cookie and instance id, stdin on `/dev/null`, stdout
//! and stderr on pipes, and one end of a socketpair on fd 3 (the plugin's
//! connection) and on fd 4 (the host's). Its exit is watched through a pidfd,
//! so it is never signalled by a pid that could have been reused.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use plugin_proto::launch::{COOKIE_ENV, COOKIE_VALUE, HOST_FD, HOST_SOCKET_ENV, INSTANCE_ENV, PLUGIN_FD};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

/// What the supervisor's config entry would say about how to run the binary.
pub struct Launch<'a> {
    pub path: &'a Path,
    pub args: &'a [OsString],
    pub env: &'a [(OsString, OsString)],
    pub instance: &'a str,
    /// Its working directory: the plugin's data directory, or `/` as under the supervisor.
    pub dir: &'a Path,
}

/// The running child and our ends of its connections and output.
pub struct Spawned {
    pub child: Child,
    /// Our end of its fd 3: we are the HTTP/2 client.
    pub plugin: UnixStream,
    /// Our end of its fd 4: we serve the host service.
    pub host: UnixStream,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// The plugin's process, killed and reaped when dropped unless it has ended.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// In the forked child: `plugin` onto fd 3 and `host` onto fd 4, both
/// inheritable. Either may already sit on 3 or 4, where the other must go, so
/// both are first copied above them (close-on-exec, so the copies go at exec).
fn place(plugin: RawFd, host: RawFd) -> io::Result<()> {
    // SAFETY: fcntl and dup2 on descriptors this process holds; both are
    // async-signal-safe, as code between fork and exec must be.
    unsafe {
        let plugin = cvt(libc::fcntl(plugin, libc::F_DUPFD_CLOEXEC, 10))?;
        let host = cvt(libc::fcntl(host, libc::F_DUPFD_CLOEXEC, 10))?;
        cvt(libc::dup2(plugin, PLUGIN_FD))?;
        cvt(libc::dup2(host, HOST_FD))?;
    }
    Ok(())
}

fn receiver(fd: impl Into<OwnedFd>) -> io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd.into())
}

/// Starts the binary; must be called within a tokio runtime.
pub fn spawn(launch: &Launch<'_>) -> io::Result<Spawned> {
    let (plugin_ours, plugin_theirs) = std::os::unix::net::UnixStream::pair()?;
    let (host_ours, host_theirs) = std::os::unix::net::UnixStream::pair()?;
    let (plugin_fd, host_fd) = (plugin_theirs.as_raw_fd(), host_theirs.as_raw_fd());
    // Which socket fd 4 is, by its inode, as the supervisor names it.
    // SAFETY: libc::stat is plain data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor this function owns, into a stat buffer it owns.
    if unsafe { libc::fstat(host_fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let host_inode = st.st_ino;
    let mut cmd = Command::new(std::path::absolute(launch.path)?);
    cmd.args(launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env(COOKIE_ENV, COOKIE_VALUE)
        .env(INSTANCE_ENV, launch.instance)
        .env(HOST_SOCKET_ENV, host_inode.to_string())
        .current_dir(launch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // `place`, which is async-signal-safe; the two descriptors it reads stay
    // open in the parent until spawn has returned.
    unsafe {
        cmd.pre_exec(move || place(plugin_fd, host_fd));
    }
    let mut inner = cmd.spawn()?;
    drop((plugin_theirs, host_theirs));
    // Until `inner` is reaped (only in `Child::exited`) its pid cannot be reused.
    let pid = inner.id() as libc::pid_t;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = if raw < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        // SAFETY: an OwnedFd's descriptor stays open, and the same, until it is dropped
        // with the AsyncFd that owns it.
        unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }.map_err(io::Error::from)
    };
    let pidfd = match pidfd {
        Ok(pidfd) => pidfd,
        Err(e) => {
            let _ = inner.kill();
            let _ = inner.wait();
            return Err(e);
        }
    };
    // From here on, dropping `child` (any error below) kills and reaps the process.
    let mut child = Child { inner, pidfd, status: None };
    let stdout = child.inner.stdout.take().ok_or_else(|| io::Error::other("stdout was not piped"))?;
    let stderr = child.inner.stderr.take().ok_or_else(|| io::Error::other("stderr was not piped"))?;
    plugin_ours.set_nonblocking(true)?;
    host_ours.set_nonblocking(true)?;
    Ok(Spawned {
        plugin: UnixStream::from_std(plugin_ours)?,
        host: UnixStream::from_std(host_ours)?,
        stdout: receiver(stdout)?,
        stderr: receiver(stderr)?,
        child,
    })
}

impl Child {
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Waits for the process to end and reaps it. Cancel-safe.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            // A pidfd turns readable when its process has ended.
            let mut ready = self.pidfd.readable().await?;
            match self.inner.try_wait()? {
                Some(status) => self.status = Some(status),
                None => ready.clear_ready(),
            }
        }
    }

    /// Sends `signal` unless the process has been reaped.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal on our own pidfd, with no siginfo; the
        // pidfd names this process even if its pid were reused.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A test that failed halfway leaves no plugin behind.
            let _ = self.signal(libc::SIGKILL);
            let _ = self.inner.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// As under the supervisor, the child is told which socket fd 4 is (its inode): an
    /// SDK that checks it takes fd 4 only when it is that one. The harness named none, so
    /// a plugin relying on it lost its logs and host channel under the harness alone.
    #[tokio::test]
    async fn the_child_is_told_which_socket_fd_4_is() {
        let script = format!("echo \"${HOST_SOCKET_ENV}\"; stat -L -c %i /proc/self/fd/{HOST_FD}");
        let args = [OsString::from("-c"), OsString::from(script)];
        let launch =
            Launch { path: Path::new("/bin/sh"), args: &args, env: &[], instance: "sh-0", dir: Path::new("/") };
        let mut spawned = spawn(&launch).unwrap();
        let mut out = String::new();
        spawned.stdout.read_to_string(&mut out).await.unwrap();
        assert!(spawned.child.exited().await.unwrap().success());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        assert!(lines[0].parse::<u64>().is_ok(), "named: {out:?}");
        assert_eq!(lines[0], lines[1], "the inode named is fd 4's");
    }

    /// The echo example, which `cargo test` builds beside this test binary.
    fn echo_example() -> std::path::PathBuf {
        let exe = std::env::current_exe().unwrap();
        let profile = exe.parent().and_then(Path::parent).unwrap();
        let echo = profile.join("examples").join("echo");
        assert!(echo.exists(), "{} is missing: `cargo test` builds the examples", echo.display());
        echo
    }

    /// The echo example started as the supervisor starts a plugin, but by hand, so a test
    /// may hold fds 3 and 4 (`plugin`, `host`) as it likes and name fd 4's socket
    /// (`host_socket`) as it likes; none named when `None`.
    fn echo_by_hand(
        plugin: std::os::unix::net::UnixStream,
        host: std::os::unix::net::UnixStream,
        host_socket: Option<&str>,
        stderr: Stdio,
    ) -> std::process::Child {
        let (plugin_fd, host_fd) = (plugin.as_raw_fd(), host.as_raw_fd());
        let mut cmd = Command::new(echo_example());
        cmd.env_clear()
            .env(COOKIE_ENV, COOKIE_VALUE)
            .env(INSTANCE_ENV, "echo-0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(named) = host_socket {
            cmd.env(HOST_SOCKET_ENV, named);
        }
        // SAFETY: as in `spawn`: only `place`, async-signal-safe, between fork and exec;
        // the two descriptors it reads stay open until spawn has returned.
        unsafe {
            cmd.pre_exec(move || place(plugin_fd, host_fd));
        }
        let child = cmd.spawn().unwrap();
        drop((plugin, host));
        child
    }

    /// A PLUGIN_LOG the plugin cannot use is said on its stderr (which the supervisor
    /// keeps), naming the variable and the value; it was taken for `info` without a word.
    #[tokio::test]
    async fn a_log_filter_the_plugin_cannot_use_is_said_on_its_stderr() {
        use super::super::{LogSource, Options};
        let plugin =
            Options::named("echo").env("PLUGIN_LOG", "info,h2=loud").start_binary(echo_example()).await.unwrap();
        let said =
            plugin.wait_for_log(|l| l.source == LogSource::Stderr && l.message.contains("PLUGIN_LOG")).await.unwrap();
        assert!(said.message.starts_with("ignoring PLUGIN_LOG=\"info,h2=loud\": "), "{}", said.message);
        assert!(plugin.shutdown().await.unwrap().ended.is_clean());
    }

    /// A host socket named by something other than an inode number is said on the
    /// plugin's stderr, naming the variable and the value: the plugin then leaves fd 4
    /// alone, losing its logs and host channel, which it did without a word.
    #[test]
    fn a_host_socket_name_that_is_no_inode_number_is_said_on_stderr() {
        use std::io::BufRead;
        let (plugin_ours, plugin_theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (host_ours, host_theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut child = echo_by_hand(plugin_theirs, host_theirs, Some("fd4"), Stdio::piped());
        // The plugin serves on fd 3, which stays open and silent: its first stderr line
        // is the note, or nothing until it is killed.
        let stderr = child.stderr.take().unwrap();
        let pid = child.id() as libc::pid_t;
        let (read, read_rx) = std::sync::mpsc::channel::<()>();
        let killer = std::thread::spawn(move || {
            // Read or not within 10 s, the plugin is killed, which ends its stderr.
            let _ = read_rx.recv_timeout(std::time::Duration::from_secs(10));
            // SAFETY: kill with the pid of a child this test started; it is reaped only
            // after this thread has been joined.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let first = std::io::BufReader::new(stderr).lines().next();
        let _ = read.send(());
        killer.join().unwrap();
        let _ = child.wait();
        drop((plugin_ours, host_ours));
        let first = first.expect("a line on stderr before the plugin ended").unwrap();
        assert_eq!(
            first,
            "ignoring PLUGIN_SUPERVISOR_HOST_SOCKET=\"fd4\": not a socket's inode number; \
             fd 4 is left alone: this plugin sends no logs and cannot call its host"
        );
    }

    /// A stop with no time to drain (`stop_timeout = "0s"`) still gets its answer, with the
    /// calls in flight, before the plugin exits 0: the deadline passing at once ended the
    /// process before the answer to the Shutdown call left it.
    #[tokio::test]
    async fn a_stop_with_no_time_to_drain_is_answered_before_the_plugin_exits() {
        use super::super::Options;
        for _ in 0..5 {
            let plugin = Options::named("echo")
                .stop_timeout(std::time::Duration::ZERO)
                .start_binary(echo_example())
                .await
                .unwrap();
            let stopped = plugin.shutdown().await.unwrap();
            assert_eq!(stopped.in_flight, Some(0), "{stopped:?}");
            assert!(stopped.ended.is_clean(), "{stopped:?}");
        }
    }

    /// What the thread `pid` of this process's child waits in: its syscall number.
    fn syscall_of(pid: u32) -> Option<i64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// A SIGTERM arriving while the plugin starts (here held in `serve`, writing its
    /// HTTP/2 preface to a fd 4 whose socket is full, as a busy supervisor's might be)
    /// drains it once it runs: it exits 0. The supervisor starts plugins with every signal
    /// at its default, and the SDK caught SIGTERM only once its host connection was up:
    /// the process was killed by the signal, a crash to the supervisor, which restarted it.
    #[test]
    fn a_sigterm_while_the_plugin_starts_drains_it_once_it_runs() {
        use std::io::{Read, Write};
        let (plugin_ours, plugin_theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut host_ours, mut host_theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        // Fill what the plugin's end of fd 4 may have unread: its first write waits.
        host_theirs.set_nonblocking(true).unwrap();
        loop {
            match host_theirs.write(&[0; 4096]) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling fd 4: {e}"),
            }
        }
        let mut child = echo_by_hand(plugin_theirs, host_theirs, None, Stdio::null());
        let pid = child.id();
        let killed = |child: &mut std::process::Child| {
            let _ = child.kill();
            let _ = child.wait();
        };
        // Held in `serve`: its one thread waits in epoll for fd 4 to take the preface.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !matches!(syscall_of(pid), Some(libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2)) {
            if std::time::Instant::now() > until {
                killed(&mut child);
                panic!("the plugin never waited on fd 4: {:?}", syscall_of(pid));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: kill with the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
        // Let it go on: fd 4 drained from here on, fd 3 held open and silent.
        host_ours.set_nonblocking(false).unwrap();
        let reader = std::thread::spawn(move || {
            let mut sink = [0; 4096];
            while matches!(host_ours.read(&mut sink), Ok(n) if n > 0) {}
        });
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > until {
                killed(&mut child);
                panic!("the plugin did not end within 20 s of its SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        drop(plugin_ours);
        reader.join().unwrap();
        assert_eq!(status.code(), Some(0), "drained and exited 0, not killed: {status:?}");
    }
}
