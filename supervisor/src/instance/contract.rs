//! The contract a plugin declared at its handshake, parsed once per distinct
//! declaration: every instance, revision and plugin that declares the same bytes
//! shares one parsed copy.
//!
//! One binary configured under many names, replicas and reload surges all declare
//! the same descriptors; parsed per plugin, the descriptors and their name index
//! cost ~15 KiB each, which at a thousand plugins was a sixth of the daemon's
//! memory. The cache holds only weak references: a contract nobody serves any more
//! is freed as before, and the cache forgets it on the next insertion.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use prost_reflect::{DescriptorError, DescriptorPool};
use sha2::{Digest, Sha256};

/// The contract the plugin declared at its last handshake.
#[derive(Debug)]
pub struct Contract {
    pub pool: DescriptorPool,
    pub services: Vec<String>,
    /// As declared: an encoded `FileDescriptorSet`.
    pub descriptor_set: Vec<u8>,
}

/// Process-wide, as the parsed descriptors it dedups are: it is keyed by content, so
/// which supervisor (tests start several in one process) asked first does not matter.
static PARSED: LazyLock<Mutex<HashMap<[u8; 32], Weak<Contract>>>> = LazyLock::new(Mutex::default);

impl Contract {
    /// The parsed contract for `descriptor_set` declaring `services`: the one already
    /// in use when some instance declared exactly these, or else parsed now.
    pub fn shared(descriptor_set: Vec<u8>, services: Vec<String>) -> Result<Arc<Contract>, DescriptorError> {
        let key = key(&descriptor_set, &services);
        if let Some(known) = lookup(&key)
            && known.descriptor_set == descriptor_set
            && known.services == services
        {
            return Ok(known);
        }
        // Parsed outside the lock: a large contract must not hold up other handshakes.
        let pool = DescriptorPool::decode(descriptor_set.as_slice())?;
        let parsed = Arc::new(Contract { pool, services, descriptor_set });
        let mut map = PARSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forgetting the dead here bounds the map by the contracts alive at some moment.
        map.retain(|_, c| c.strong_count() > 0);
        match map.get(&key).and_then(Weak::upgrade) {
            // Another handshake parsed the same meanwhile: keep one.
            Some(known) if known.descriptor_set == parsed.descriptor_set && known.services == parsed.services => {
                Ok(known)
            }
            _ => {
                map.insert(key, Arc::downgrade(&parsed));
                Ok(parsed)
            }
        }
    }
}

fn lookup(key: &[u8; 32]) -> Option<Arc<Contract>> {
    PARSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).and_then(Weak::upgrade)
}

fn key(descriptor_set: &[u8], services: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((descriptor_set.len() as u64).to_le_bytes());
    h.update(descriptor_set);
    for s in services {
        // Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ.
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Vec<u8> {
        plugin_proto::FILE_DESCRIPTOR_SET.to_vec()
    }

    fn lifecycle() -> Vec<String> {
        vec!["plugin.v1.PluginLifecycle".into()]
    }

    #[test]
    fn the_same_declaration_is_parsed_once_and_shared() {
        let a = Contract::shared(echo(), lifecycle()).unwrap();
        let b = Contract::shared(echo(), lifecycle()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "two plugins declaring the same bytes share one parse");
    }

    #[test]
    fn other_services_over_the_same_descriptors_are_another_contract() {
        let a = Contract::shared(echo(), lifecycle()).unwrap();
        let b = Contract::shared(echo(), vec![]).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(b.services.is_empty());
    }

    #[test]
    fn a_contract_nobody_holds_is_freed_and_forgotten() {
        let mut set = echo();
        // A unique declaration: an unknown field appended to the encoded set (field 15,
        // varint) decodes as the same set but is other bytes.
        set.extend_from_slice(&[0x78, 0x2a]);
        let a = Contract::shared(set.clone(), lifecycle()).unwrap();
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(weak.upgrade().is_none(), "the cache kept it alive");
        // The next insertion forgets the dead entry.
        let _other = Contract::shared(echo(), vec!["x".into()]).unwrap();
        let k = key(&set, &lifecycle());
        assert!(!PARSED.lock().unwrap().contains_key(&k), "a dead entry stays in the cache");
    }

    #[test]
    fn bytes_that_do_not_decode_are_refused_with_the_decoder_s_reason() {
        let err = Contract::shared(vec![0xff, 0xff], lifecycle()).unwrap_err();
        assert_eq!(err.to_string(), "failed to decode file descriptor set");
        assert!(lookup(&key(&[0xff, 0xff], &lifecycle())).is_none(), "a failure is not cached");
    }
}
