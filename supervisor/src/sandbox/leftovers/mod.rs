//! What an ended instance may have left on the host, found from the kernel's own tables:
//! processes of the plugin's uid (`/proc`), System V IPC objects (`/proc/sysvipc`), and the
//! descriptors the supervisor held for it (`/proc/self/fd`). Each table is parsed by a pure
//! function (unit-tested on captured text); the readers here are thin.

pub mod held;
pub mod ipc;
pub mod procs;
pub mod retry;
