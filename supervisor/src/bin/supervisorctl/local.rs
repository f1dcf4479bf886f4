//! What the local commands (`plugin`, `contract`) share: how a failure is
//! reported and which exit code it gets.

use std::process::ExitCode;

use crate::exit::Exit;

/// Why a local command did not succeed, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub reason: String,
}

impl Failure {
    /// The check ran and said no (a breaking change, an invalid binary) or
    /// the action failed: exit 1.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self { code: Exit::Failure, reason: reason.into() }
    }

    /// An input or argument cannot be used, so nothing was checked: exit 2,
    /// the code clap uses for bad usage.
    pub fn input(reason: impl Into<String>) -> Self {
        Self { code: Exit::Usage, reason: reason.into() }
    }
}

/// Prints the one-line reason of a failure and turns it into the exit code.
pub fn finish(result: Result<ExitCode, Failure>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("supervisorctl: {}", one_line(&failure.reason));
            failure.code.into()
        }
    }
}

/// Folds a multi-line message (a compiler diagnostic, a list of config
/// problems) into one line, so scripts can read a failure with `head -1`.
pub fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(one_line("a.proto:1: x\n  b.proto:2: y\n\n"), "a.proto:1: x; b.proto:2: y");
        assert_eq!(one_line("single"), "single");
    }
}
