//! The plugins a supervisor runs, by name: fixed at start until `update` adds and
//! removes some. The supervisor writes the set; the sampler, the control API and the
//! update read it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::instance::Plugin;

#[derive(Debug, Default)]
pub(crate) struct PluginSet(RwLock<BTreeMap<String, Arc<Plugin>>>);

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().get(name).cloned()
    }

    /// Every plugin, in name order.
    pub fn all(&self) -> Vec<Arc<Plugin>> {
        self.read().values().cloned().collect()
    }

    pub fn insert(&self, p: Arc<Plugin>) {
        self.write().insert(p.name.clone(), p);
        crate::instance::instances_changed();
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Plugin>> {
        let gone = self.write().remove(name);
        crate::instance::instances_changed();
        gone
    }

    // A panic elsewhere while the lock was held cannot leave the map half-written (each
    // write is one call on it), so a poisoned lock is still good to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
