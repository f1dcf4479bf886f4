//! What fences a plugin process: how it is started (descriptors, session,
//! parent-death signal, exec of the verified file) and, per tier, the
//! kernel's limits on it.

pub mod abstract_unix;
pub mod cgroup;
pub mod confine;
pub mod deadman;
pub mod denials;
pub mod host;
pub mod landlock;
pub mod leftovers;
pub mod netns;
pub mod notify;
pub mod pidfd;
pub mod quota;
pub mod spawn;
pub mod tier;

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use plugin_proto::launch::{COOKIE_ENV, COOKIE_VALUE, HOST_SOCKET_ENV, INSTANCE_ENV};

use crate::config::PluginSpec;

/// The supervisor's ends of an instance's connections and output.
#[derive(Debug)]
pub struct InstanceIo {
    pub plugin: UnixStream,
    pub host: UnixStream,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Creates the socketpairs and pipes; returns our ends and the child's
/// fds 0-4 (stdin from /dev/null, stdout, stderr, plugin socket, host socket).
pub fn instance_io() -> io::Result<(InstanceIo, [OwnedFd; 5])> {
    let (plugin, plugin_child) = UnixStream::pair()?;
    let (host, host_child) = UnixStream::pair()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let null = std::fs::File::open("/dev/null")?;
    Ok((
        InstanceIo { plugin, host, stdout: out_r, stderr: err_r },
        [null.into(), out_w, err_w, plugin_child.into(), host_child.into()],
    ))
}

/// argv and the cleared environment: only the allow-listed variables, the
/// cookie, the instance id and which socket fd 4 is (`host_socket`, its inode number).
pub fn argv_env(spec: &PluginSpec, instance: &str, host_socket: Option<u64>) -> (Vec<CString>, Vec<CString>) {
    let cstr = |b: &[u8]| CString::new(b.to_vec()).unwrap_or_default();
    let mut argv = vec![cstr(spec.binary.as_os_str().as_bytes())];
    argv.extend(spec.args.iter().map(|a| cstr(a.as_bytes())));
    let mut env = vec![
        cstr(format!("{COOKIE_ENV}={COOKIE_VALUE}").as_bytes()),
        cstr(format!("{INSTANCE_ENV}={instance}").as_bytes()),
    ];
    if let Some(ino) = host_socket {
        env.push(cstr(format!("{HOST_SOCKET_ENV}={ino}").as_bytes()));
    }
    for name in &spec.env {
        if let Some(v) = std::env::var_os(name) {
            let mut kv = name.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(cstr(&kv));
        }
    }
    (argv, env)
}
