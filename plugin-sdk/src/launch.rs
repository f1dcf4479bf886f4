//! Finding what the supervisor handed us (fd 3 and 4, the cookie), and
//! saying plainly what this binary is when someone starts it by hand.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use plugin_proto::launch::{COOKIE_ENV, COOKIE_VALUE, HOST_FD, HOST_SOCKET_ENV, INSTANCE_ENV, PLUGIN_FD};

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
    /// A socket the plugin cannot serve on: it would wait on it for ever, saying nothing.
    #[error(
        "{name}: the supervisor's cookie is set but fd {fd} is {what}, not the connected Unix stream socket the supervisor hands a plugin"
    )]
    WrongSocket { name: String, fd: RawFd, what: &'static str },
}

/// `getsockopt(fd, SOL_SOCKET, opt)` as an int, or `None` when it cannot be known: a
/// tier's policy may refuse the call (the shipped ones allow it), and a socket the
/// supervisor handed over is not to be refused for that.
fn sockopt(fd: RawFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which we own, and `len`
    // says its size.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast(), &raw mut len) };
    (r == 0).then_some(value)
}

/// What the socket `fd` is, when it is not one a plugin can serve on: a connected Unix
/// stream socket, one end of the supervisor's socketpair. What cannot be asked is taken
/// to be as it should.
fn unservable(fd: RawFd) -> Option<&'static str> {
    if sockopt(fd, libc::SO_DOMAIN).is_some_and(|d| d != libc::AF_UNIX) {
        return Some("not a Unix socket");
    }
    match sockopt(fd, libc::SO_TYPE) {
        Some(libc::SOCK_STREAM) | None => {}
        Some(libc::SOCK_DGRAM) => return Some("a datagram socket"),
        Some(libc::SOCK_SEQPACKET) => return Some("a seqpacket socket"),
        Some(_) => return Some("not a stream socket"),
    }
    if sockopt(fd, libc::SO_ACCEPTCONN).is_some_and(|listening| listening != 0) {
        return Some("a listening socket");
    }
    // SAFETY: getpeername writes at most `len` bytes into the zeroed address we own.
    let unconnected = unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        libc::getpeername(fd, (&raw mut addr).cast(), &raw mut len) != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
    };
    unconnected.then_some("an unconnected socket")
}

/// `fd`'s inode number when it is an open socket.
fn socket_inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat only writes into the zeroed stat buffer we own; an fd
    // that is not open makes it fail with EBADF, which we treat as "no".
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(st.st_ino)
    }
}

fn is_socket(fd: RawFd) -> bool {
    socket_inode(fd).is_some()
}

/// Whether `fd` is the host's socket: the one whose inode number the supervisor named
/// (`said`, from [`HOST_SOCKET_ENV`]), or, from a supervisor that names none, a
/// connected Unix stream socket. A plugin may close fd 4 and open a socket of its own
/// that takes the number (a database's connection): taken for the host's, the SDK would
/// own it a second time, write its HTTP/2 preface and log records into it, and fail the
/// plugin when its handshake did not come back.
fn is_host_socket(fd: RawFd, said: Option<&str>) -> bool {
    let Some(inode) = socket_inode(fd) else { return false };
    match said {
        Some(said) => said.parse::<u64>().is_ok_and(|named| named == inode),
        None => unservable(fd).is_none(),
    }
}

/// What to say on stderr (which the supervisor keeps) of a host socket's name that is
/// no inode number: fd 4 is then left alone, and the plugin loses its log stream and its
/// host channel, which it did without a word.
fn unusable_host_socket_name(said: &Result<String, std::env::VarError>) -> Option<String> {
    let consequence = "fd 4 is left alone: this plugin sends no logs and cannot call its host";
    match said {
        Ok(said) if said.parse::<u64>().is_ok() => None,
        Ok(said) => Some(format!("ignoring {HOST_SOCKET_ENV}={said:?}: not a socket's inode number; {consequence}")),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(said)) => {
            Some(format!("ignoring {HOST_SOCKET_ENV}={said:?}: not UTF-8 text; {consequence}"))
        }
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
    if let Some(what) = unservable(PLUGIN_FD) {
        return Err(NotSupervised::WrongSocket { name: name.to_owned(), fd: PLUGIN_FD, what });
    }
    // Not for any program the plugin runs: a child would hold the supervisor's
    // connection (and the host's) open past the plugin's end, and one built with this
    // SDK would serve on it too, its frames among ours.
    // Fd 4 only when it is the host's socket, which the SDK takes: a plugin may have
    // closed it and used the number for something of its own.
    let said = std::env::var(HOST_SOCKET_ENV);
    if let Some(note) = unusable_host_socket_name(&said) {
        eprintln!("{note}");
    }
    let said = match &said {
        Ok(said) => Some(said.as_str()),
        Err(std::env::VarError::NotPresent) => None,
        // Named, but no number: not taken, as any other name that is not fd 4's.
        Err(std::env::VarError::NotUnicode(_)) => Some(""),
    };
    let host = is_host_socket(HOST_FD, said);
    for fd in [Some(PLUGIN_FD), host.then_some(HOST_FD)].into_iter().flatten() {
        // SAFETY: F_SETFD on an open descriptor (checked above) only changes its flags.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: fd 3 is an open socket (checked above) that nothing else in
    // this process owns: the supervisor put it there for us before exec.
    let plugin = unsafe { UnixStream::from_raw_fd(PLUGIN_FD) };
    // SAFETY: as for fd 3, when fd 4 is the socket the supervisor put there (its inode
    // number is the one named, or the supervisor named none and it is a connected Unix
    // stream socket): nothing else in this process owns it.
    let host = host.then(|| unsafe { UnixStream::from_raw_fd(HOST_FD) });
    let instance = std::env::var(INSTANCE_ENV).unwrap_or_else(|_| name.to_owned());
    Ok(Inherited { plugin, host, instance })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn fd_4_is_taken_only_when_it_is_the_socket_the_supervisor_named() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let inode = socket_inode(fd).unwrap().to_string();
        assert!(is_host_socket(fd, Some(&inode)));
        // The plugin's own socket in its place: another inode.
        let (own, _peer) = UnixStream::pair().unwrap();
        assert!(!is_host_socket(own.as_raw_fd(), Some(&inode)), "a socket of the plugin's own was taken");
        assert!(!is_host_socket(fd, Some("not a number")));
        // A supervisor that names none: a connected Unix stream socket, not a TCP one.
        assert!(is_host_socket(fd, None));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!is_host_socket(tcp.as_raw_fd(), None), "a TCP socket was taken for the host's");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_host_socket(file.as_raw_fd(), Some(&inode)));
    }

    #[test]
    fn only_a_connected_unix_stream_socket_is_servable() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        assert_eq!(unservable(ours.as_raw_fd()), None);
        let (dgram, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert_eq!(unservable(dgram.as_raw_fd()), Some("a datagram socket"));
        let dir = std::env::temp_dir().join(format!("plugin-sdk-launch-{}", std::process::id()));
        let listener = std::os::unix::net::UnixListener::bind(&dir);
        let _ = std::fs::remove_file(&dir);
        assert_eq!(unservable(listener.unwrap().as_raw_fd()), Some("a listening socket"));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(unservable(tcp.as_raw_fd()), Some("not a Unix socket"));
    }

    /// An operator's tier may refuse getsockopt and getpeername (the shipped ones allow
    /// them): the supervisor's own socket is then still served on, not refused.
    #[test]
    fn a_socket_that_cannot_be_asked_about_is_served_on() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        // The filter binds only this thread, which it ends with.
        let seen = std::thread::spawn(move || {
            let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
            let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
            let ret = (libc::BPF_RET | libc::BPF_K) as u16;
            let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
            let prog = [
                insn(ld, 0, 0, 0),
                insn(jeq, 2, 0, libc::SYS_getsockopt as u32),
                insn(jeq, 1, 0, libc::SYS_getpeername as u32),
                insn(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
                insn(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            ];
            let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
            // SAFETY: no_new_privs and a filter on this thread only, from a program that
            // outlives the calls.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
                let rc = libc::syscall(libc::SYS_seccomp, 1 as libc::c_ulong, 0 as libc::c_ulong, &fprog);
                assert_eq!(rc, 0, "installing the test filter: {}", std::io::Error::last_os_error());
            }
            unservable(fd)
        })
        .join()
        .unwrap();
        assert_eq!(seen, None);
    }
}
