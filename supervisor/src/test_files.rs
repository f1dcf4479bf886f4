//! For unit tests of what must be a regular file: a path of every other kind, and a way to
//! call what might wait on one forever without the test waiting with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Paths in `dir` (which is itself one, a directory) that are no regular file, each with
/// the kind `file_kind` names it by: a FIFO nobody writes to (opening it to read waits for
/// a writer), `/dev/zero` (reading it never ends) and a listening socket (which cannot be
/// opened at all). The listener must be kept while the paths are used.
pub(crate) fn not_regular(dir: &Path) -> (Vec<(PathBuf, &'static str)>, std::os::unix::net::UnixListener) {
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path in the caller's temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let socket = dir.join("socket");
    let listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let paths = vec![
        (fifo, "FIFO"),
        (PathBuf::from("/dev/zero"), "character device"),
        (dir.to_path_buf(), "directory"),
        (socket, "socket"),
    ];
    (paths, listening)
}

/// `f`'s result, run on a thread of its own; fails the test, naming `what`, when it takes
/// longer than 10 s (the thread is left behind, stuck where it waits).
pub(crate) fn within_10s<T: Send + 'static>(what: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what:?} hung"))
}

/// Waits until what the test just made is old enough for a resolution of the loader's
/// files to trust its stamps (see `FileStamp::racy`): made within the margin before the
/// resolution began, a file is recorded as untrusted, and the grants as stale at once.
pub(crate) fn settle_stamps() {
    std::thread::sleep(crate::integrity::libraries::RACY_MARGIN + Duration::from_millis(20));
}
