//! Finding what the supervisor handed us (fd 3 and 4, the cookie), and
//! saying plainly what this binary is when someone starts it by hand.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use plugin_proto::launch::{COOKIE_ENV, COOKIE_VALUE, HOST_FD, INSTANCE_ENV, PLUGIN_FD};

/// The connections a supervised plugin inherits.
#[derive(Debug)]
pub struct Inherited {
    /// The plugin serves on this one.
    pub plugin: UnixStream,
    /// Host callbacks (logs) go out on this one, when present.
    pub host: Option<UnixStream>,
    /// The instance id the supervisor gave this process.
    pub instance: String,
}

/// Why this process is not running under the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum NotSupervised {
    #[error(
        "{name} is a plugin for plugin-supervisor: it serves gRPC on a socket the supervisor hands it, so it is started by the supervisor, not by hand (add it to the supervisor's config and use `supervisorctl status`)"
    )]
    ByHand { name: String },
    #[error("{name}: the supervisor's cookie is set but fd {fd} is not a socket")]
    NoSocket { name: String, fd: RawFd },
}

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat only writes into the zeroed stat buffer we own; an fd
    // that is not open makes it fail with EBADF, which we treat as "no".
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

/// Takes ownership of fd 3 (and 4) when the supervisor started us.
pub fn inherited(name: &str) -> Result<Inherited, NotSupervised> {
    if std::env::var(COOKIE_ENV).ok().as_deref() != Some(COOKIE_VALUE) {
        return Err(NotSupervised::ByHand { name: name.to_owned() });
    }
    if !is_socket(PLUGIN_FD) {
        return Err(NotSupervised::NoSocket { name: name.to_owned(), fd: PLUGIN_FD });
    }
    // SAFETY: fd 3 is an open socket (checked above) that nothing else in
    // this process owns: the supervisor put it there for us before exec.
    let plugin = unsafe { UnixStream::from_raw_fd(PLUGIN_FD) };
    // SAFETY: as for fd 3, when fd 4 is an open socket.
    let host = is_socket(HOST_FD).then(|| unsafe { UnixStream::from_raw_fd(HOST_FD) });
    let instance = std::env::var(INSTANCE_ENV).unwrap_or_else(|_| name.to_owned());
    Ok(Inherited { plugin, host, instance })
}
