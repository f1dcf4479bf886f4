//! Verified images shared between plugins that run one binary under the same checks:
//! 1,000 plugins configured from one binary verify it, and hold its sealed copy, once. A
//! copy each would hold the binary 1,000 times in memory (28 GB for a 28 MB binary).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::launcher::Image;
use crate::config::PluginSpec;
use crate::integrity::Sha256Digest;

/// What makes two plugins' verification of their binary the same: the file, and every
/// check the image passed (a plugin with a pin, a signature requirement, other keys or
/// another declared name verifies its own).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    binary: PathBuf,
    sha256: Option<Sha256Digest>,
    require_signature: bool,
    trusted_keys: Vec<[u8; 32]>,
    declared_name: String,
}

impl Key {
    pub fn of(spec: &PluginSpec) -> Self {
        let i = &spec.integrity;
        Self {
            binary: spec.binary.clone(),
            sha256: i.sha256,
            require_signature: i.require_signature,
            trusted_keys: i.trusted_keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
            declared_name: spec.declared_name.clone(),
        }
    }
}

/// One key's image, locked while it is verified, so plugins starting together verify it
/// once; weak, so the image goes with the last revision that runs it.
pub type Slot = Arc<tokio::sync::Mutex<Weak<Image>>>;

#[derive(Debug, Default)]
pub struct SharedImages {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl SharedImages {
    pub fn slot(&self, key: Key) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // A slot nobody waits on whose image is gone is dropped: the map holds only the
        // keys in use.
        slots.retain(|_, s| Arc::strong_count(s) > 1 || s.try_lock().map_or(true, |w| w.strong_count() > 0));
        slots.entry(key).or_default().clone()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn specs(extra: &str) -> Vec<PluginSpec> {
        let text = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n\
             [[plugin]]\nname = \"a\"\nbinary = \"/bin/true\"\ntier = \"none\"\ndeclared_name = \"x\"\n\
             [[plugin]]\nname = \"b\"\nbinary = \"/bin/true\"\ntier = \"none\"\ndeclared_name = \"x\"\n\
             [[plugin]]\nname = \"c\"\nbinary = \"/bin/true\"\ntier = \"none\"\n{extra}\n"
        );
        text.parse::<Config>().unwrap().specs()
    }

    fn image() -> Arc<Image> {
        Arc::new(Image {
            held: None,
            sha256: String::new(),
            signed_version: None,
            writable_exec: None,
            payload: Arc::new(()),
        })
    }

    #[tokio::test]
    async fn plugins_of_one_binary_and_checks_share_a_slot_which_goes_with_its_image() {
        let s = specs("");
        let images = SharedImages::default();
        let (a, b, c) = (images.slot(Key::of(&s[0])), images.slot(Key::of(&s[1])), images.slot(Key::of(&s[2])));
        assert!(Arc::ptr_eq(&a, &b), "one binary, one declared name: one image");
        assert!(!Arc::ptr_eq(&a, &c), "another declared name verifies its own");
        let held = image();
        *a.lock().await = Arc::downgrade(&held);
        drop((a, b, c));
        let _ = images.slot(Key::of(&s[2]));
        assert_eq!(images.len(), 2, "a's slot stays while its image is held; c's is in use");
        drop(held);
        let _ = images.slot(Key::of(&s[2]));
        assert_eq!(images.len(), 1, "a's image gone: its slot too");
    }

    #[test]
    fn a_pin_makes_another_key() {
        let same = specs("declared_name = \"x\"");
        assert_eq!(Key::of(&same[2]), Key::of(&same[0]), "the same binary and checks");
        let s = specs(&format!("declared_name = \"x\"\nsha256 = \"{}\"", "ab".repeat(32)));
        assert!(s[2].integrity.sha256.is_some());
        assert_ne!(Key::of(&s[2]), Key::of(&s[0]), "a pin is a check of its own");
    }
}
