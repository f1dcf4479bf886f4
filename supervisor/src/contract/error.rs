//! Errors from loading or decoding a contract; each names the input it came from.

use std::fmt;
use std::path::PathBuf;

/// Which side of a comparison an in-memory input was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Old,
    New,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Old => "old",
            Side::New => "new",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot compile contract {}{at}: {source}", path.display())]
    Compile {
        path: PathBuf,
        /// Where in the sources the compiler stopped, e.g. ` (at echo.proto:3:9)`;
        /// empty when it does not say.
        at: String,
        #[source]
        source: protox::Error,
    },

    #[error("contract {} is not a valid FileDescriptorSet: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },

    #[error("the {side} contract is not a valid FileDescriptorSet: {source}")]
    DecodeBytes {
        side: Side,
        #[source]
        source: prost::DecodeError,
    },

    #[error("contract directory {} holds no .proto files", path.display())]
    NoProtoFiles { path: PathBuf },

    #[error("no contract files were given")]
    NoInputs,
}
