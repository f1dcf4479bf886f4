//! Printing to stdout the way Unix tools do: when the reader goes away
//! (`supervisorctl events -f | grep -m1 -q stopped`), the process ends
//! quietly, as if by SIGPIPE, instead of panicking in `println!`.
//!
//! Rust ignores SIGPIPE so that writes to a closed socket fail with EPIPE;
//! that stays so for the control socket, and only stdout gets the Unix
//! behaviour back.

use std::fmt;
use std::io::{self, Write};

/// `println!` that ends the process quietly when stdout's reader is gone.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends the process quietly when stdout's reader is gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

/// Writes and flushes at once, so a reader that left is noticed now and
/// nothing is left in a buffer to fail at exit.
pub fn write(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        failed(&e);
    }
}

fn failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        end_by_sigpipe();
    }
    eprintln!("supervisorctl: cannot write to stdout: {e}");
    std::process::exit(1)
}

/// Ends the process by SIGPIPE, as `yes | head -1` ends `yes`: silently,
/// and a shell sees status 141.
fn end_by_sigpipe() -> ! {
    use nix::sys::signal::{SigHandler, Signal, raise, signal};
    // SAFETY: restores the default disposition; no handler of ours runs.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = raise(Signal::SIGPIPE);
    std::process::exit(128 + libc::SIGPIPE)
}
