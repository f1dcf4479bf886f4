//! Answers about a command's own arguments (a signal that is none, a quota that does not
//! parse, a call's request that is not its message): INVALID_ARGUMENT marked with
//! [`USAGE_KEY`], so that `supervisorctl` exits 2 on them as on a bad flag, and tells
//! them from an invalid config file (also INVALID_ARGUMENT, exit 1). A plugin's own
//! answer relayed by `call` is cleared of the supervisor's marks: a plugin cannot make
//! its answer pass for the supervisor's.

use tonic::Status;
use tonic::metadata::{KeyAndValueRef, MetadataMap, MetadataValue};

/// Set (to "1") on an answer about the command's arguments.
pub const USAGE_KEY: &str = "x-supervisor-usage";
/// Every mark the supervisor sets on its own answers starts so.
const OURS: &str = "x-supervisor-";

/// INVALID_ARGUMENT about the command's arguments.
pub fn bad_argument(message: impl Into<String>) -> Status {
    let mut s = Status::invalid_argument(message);
    s.metadata_mut().insert(USAGE_KEY, MetadataValue::from_static("1"));
    s
}

/// A plugin's answer, without any metadata key the supervisor itself sets.
pub fn from_plugin(s: Status) -> Status {
    let mut kept = MetadataMap::new();
    for kv in s.metadata().iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) if !k.as_str().starts_with(OURS) => {
                kept.append(k.clone(), v.clone());
            }
            KeyAndValueRef::Binary(k, v) if !k.as_str().starts_with(OURS) => {
                kept.append_bin(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Status::with_details_and_metadata(s.code(), s.message().to_owned(), s.details().to_vec().into(), kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_argument_is_marked() {
        let s = bad_argument("not a signal: NOPE");
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.metadata().get(USAGE_KEY).map(|v| v.to_str().unwrap()), Some("1"));
    }

    #[test]
    fn a_plugins_answer_keeps_its_own_metadata_and_loses_ours() {
        let mut s = Status::with_details(tonic::Code::InvalidArgument, "bad token", vec![1, 2, 3].into());
        s.metadata_mut().insert(USAGE_KEY, MetadataValue::from_static("1"));
        s.metadata_mut().insert(crate::control::refusal::REFUSED_KEY, MetadataValue::from_static("0"));
        s.metadata_mut().insert("x-reason", MetadataValue::from_static("expired"));
        s.metadata_mut().insert_bin("trace-bin", tonic::metadata::MetadataValue::from_bytes(b"\x00\x01"));
        let relayed = from_plugin(s);
        assert_eq!(
            (relayed.code(), relayed.message(), relayed.details()),
            (tonic::Code::InvalidArgument, "bad token", &[1u8, 2, 3][..])
        );
        assert!(relayed.metadata().get(USAGE_KEY).is_none());
        assert!(relayed.metadata().get(crate::control::refusal::REFUSED_KEY).is_none());
        assert_eq!(relayed.metadata().get("x-reason").map(|v| v.to_str().unwrap()), Some("expired"));
        assert!(relayed.metadata().get_bin("trace-bin").is_some());
    }
}
