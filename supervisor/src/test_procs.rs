//! For unit tests that look at another process through `/proc`: its state, and waiting until
//! it has settled (named as expected, and asleep) before its tables are read.

use std::time::{Duration, Instant};

/// `/proc/PID/stat`'s state letter ('S' asleep, 'Z' a zombie), None once reaped.
pub(crate) fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Waits until process `pid` is called `name` and is asleep, for up to 5 s, and fails the
/// test if it never is. Its name alone says too little: a process that names itself (or
/// is named at exec) still runs its start after it, opening and closing descriptors, and
/// is runnable until it blocks.
pub(crate) fn wait_named_and_asleep(pid: i32, name: &str) {
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim_end().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (comm() != name || state(pid) != Some('S')) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((comm().as_str(), state(pid)), (name, Some('S')), "process {pid} named {name:?} and asleep");
}
