//! What an ended instance may have left on the host, found from the kernel's own tables:
//! processes of the plugin's uid (`/proc`), System V IPC objects (`/proc/sysvipc`), files of
//! its uid in the directories every uid may write to (`/dev/shm`, `/tmp`, `/var/tmp`) and
//! its POSIX message queues (`/dev/mqueue`), and the descriptors the supervisor held for
//! it (`/proc/self/fd`). Each table is parsed by a pure function (unit-tested on captured
//! text) and each directory read by one that takes it as a parameter; the readers here
//! are thin.

pub mod files;
pub mod held;
pub mod ipc;
pub mod mqueue;
pub mod procs;
pub mod retry;
