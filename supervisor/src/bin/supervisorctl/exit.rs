//! supervisorctl's exit codes: the one table every command follows, and how a
//! failure (the daemon's gRPC status, a connection that failed) maps to it.

use std::process::ExitCode;

/// The exit status of a command (`call` adds its own: 64 + the gRPC code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// The command ran and did not succeed.
    Failure = 1,
    /// Bad arguments or input (clap's own code).
    Usage = 2,
    /// `status`: not every selected instance is running and serving.
    NotRunning = 3,
    /// The plugin named does not exist.
    NoSuchPlugin = 4,
    /// The daemon cannot be reached, did not answer within `--wait`, or refused us.
    Unreachable = 5,
}

/// The table as `--help` and the README show it.
pub const TABLE: &str = "\
Exit status:
  0   success
  1   failure
  2   usage error
  3   status: not every selected instance is running and serving
      (starting, backoff, draining, stopped, failed, NOT_SERVING or
      its circuit open)
  4   no such plugin
  5   the supervisor cannot be reached, did not answer within --wait,
      or refused us
  64+ call: 64 + the gRPC code of the call's status (grpcurl's convention)";

/// The metadata key of the control socket's refusal of a peer: set by the daemon, so
/// that its refusal is told from a plugin's own PERMISSION_DENIED answer to `call`.
pub use plugin_supervisor::control::refusal::REFUSED_KEY;
/// The metadata key of the daemon's answer about the command's own arguments.
pub use plugin_supervisor::control::usage::USAGE_KEY;

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What a control RPC (other than `call`'s) that failed with `status` exits with.
    /// The control API answers NOT_FOUND for an unknown plugin only.
    pub fn of_status(status: &tonic::Status) -> Exit {
        if refused_or_cut(status) {
            return Exit::Unreachable;
        }
        if bad_argument(status) {
            return Exit::Usage;
        }
        match status.code() {
            tonic::Code::NotFound => Exit::NoSuchPlugin,
            tonic::Code::PermissionDenied => Exit::Unreachable,
            _ => Exit::Failure,
        }
    }
}

/// The daemon's answer is about the command's arguments (a signal that is none, a quota
/// that does not parse, a call's request that is not its message): a usage error. An
/// invalid config file on `reload` or `update` is INVALID_ARGUMENT too, but a failure.
pub fn bad_argument(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::InvalidArgument && status.metadata().contains_key(USAGE_KEY)
}

/// The daemon refused this connection, or the connection failed (the status came from
/// our transport, not from an answer of the daemon's).
pub fn refused_or_cut(status: &tonic::Status) -> bool {
    if status.metadata().contains_key(REFUSED_KEY) {
        return true;
    }
    plugin_proto::transport::from_transport(status)
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    pub exit: Exit,
    pub reason: String,
}

impl Failure {
    pub fn new(exit: Exit, reason: impl Into<String>) -> Self {
        Self { exit, reason: reason.into() }
    }

    /// A control RPC failed with `status`.
    pub fn status(status: &tonic::Status) -> Self {
        Self::new(Exit::of_status(status), crate::client::reason(status))
    }
}

/// A plain reason is a failure (exit 1).
impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self::new(Exit::Failure, reason)
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        Self::new(Exit::Failure, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_table() {
        let codes = [
            (Exit::Success, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::NotRunning, 3),
            (Exit::NoSuchPlugin, 4),
            (Exit::Unreachable, 5),
        ];
        for (exit, code) in codes {
            assert_eq!(exit.code(), code, "{exit:?}");
            assert!(TABLE.contains(&format!("  {code}   ")), "{exit:?} missing from the table");
        }
    }

    #[test]
    fn an_unknown_plugin_exits_4() {
        assert_eq!(Exit::of_status(&tonic::Status::not_found("unknown plugin \"ghost\"")), Exit::NoSuchPlugin);
    }

    #[test]
    fn a_refusal_or_a_failed_connection_exits_5() {
        assert_eq!(Exit::of_status(&tonic::Status::permission_denied("uid 7 may not")), Exit::Unreachable);
        let mut refused = tonic::Status::unavailable("refused");
        refused.metadata_mut().insert(REFUSED_KEY, "7".parse().unwrap());
        assert_eq!(Exit::of_status(&refused), Exit::Unreachable);
        let cut = tonic::Status::from_error(Box::new(plugin_proto::transport::ChannelError::H2(h2::Error::from(
            h2::Reason::CONNECT_ERROR,
        ))));
        assert_eq!(Exit::of_status(&cut), Exit::Unreachable, "{cut:?}");
    }

    #[test]
    fn an_answer_about_the_commands_arguments_exits_2_and_an_invalid_config_1() {
        let bad = plugin_supervisor::control::usage::bad_argument("not a signal: \"NOPE\"");
        assert_eq!(Exit::of_status(&bad), Exit::Usage);
        let config = tonic::Status::invalid_argument("/etc/ps.toml:3: plugin.name: missing");
        assert_eq!(Exit::of_status(&config), Exit::Failure);
    }

    #[test]
    fn any_other_answer_of_the_daemon_is_a_failure() {
        for status in [
            tonic::Status::failed_precondition("no rollout"),
            tonic::Status::invalid_argument("bad quota"),
            tonic::Status::unavailable("shutting down"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::unknown("?"),
        ] {
            assert_eq!(Exit::of_status(&status), Exit::Failure, "{status:?}");
        }
    }
}
