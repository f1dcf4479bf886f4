//! Which plugins serve which gRPC service, learnt from handshakes and kept
//! across restarts, so a call to a plugin that is down is answered with
//! its state rather than "unknown service". A service may have several
//! owners (one binary configured under several names, or two plugins
//! implementing one contract): the gateway then picks one by the caller's
//! `x-plugin` header.

use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Each service's owners, in name order.
    services: RwLock<HashMap<String, Vec<String>>>,
}

impl RouteTable {
    /// `plugin` serves exactly `services` from now on (those of its revisions that take
    /// calls), beside whichever other plugins serve them too: what it served before and
    /// does not list is no longer its.
    pub fn set(&self, plugin: &str, services: &[String]) {
        let Ok(mut map) = self.services.write() else {
            return;
        };
        map.retain(|service, owners| {
            if !services.contains(service) {
                owners.retain(|o| o != plugin);
            }
            !owners.is_empty()
        });
        for s in services {
            let owners = map.entry(s.clone()).or_default();
            if let Err(at) = owners.binary_search_by(|o| o.as_str().cmp(plugin)) {
                owners.insert(at, plugin.to_owned());
            }
        }
    }

    /// `plugin` is gone for good: it serves nothing any more.
    pub fn release(&self, plugin: &str) {
        if let Ok(mut map) = self.services.write() {
            map.retain(|_, owners| {
                owners.retain(|o| o != plugin);
                !owners.is_empty()
            });
        }
    }

    /// The plugins serving `service`, in name order (empty when none does).
    pub fn owners(&self, service: &str) -> Vec<String> {
        self.services.read().ok().and_then(|m| m.get(service).cloned()).unwrap_or_default()
    }

    /// Whether `plugin` serves `service`.
    pub fn serves(&self, plugin: &str, service: &str) -> bool {
        self.services.read().is_ok_and(|m| m.get(service).is_some_and(|o| o.iter().any(|o| o == plugin)))
    }

    #[cfg(test)]
    fn services(&self) -> Vec<String> {
        let mut v: Vec<String> = self.services.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_may_have_several_owners_each_named_once() {
        let t = RouteTable::default();
        t.set("echo", &["echo.v1.Echo".into()]);
        t.set("echo", &["echo.v1.Echo".into()]);
        t.set("copy", &["echo.v1.Echo".into(), "copy.v1.Copy".into()]);
        assert_eq!(t.owners("echo.v1.Echo"), ["copy", "echo"]);
        assert_eq!(t.owners("copy.v1.Copy"), ["copy"]);
        assert!(t.serves("echo", "echo.v1.Echo"));
        assert!(!t.serves("echo", "copy.v1.Copy"));
        assert!(t.owners("nope").is_empty());
    }

    #[test]
    fn a_plugins_services_are_replaced_not_added_to() {
        let t = RouteTable::default();
        t.set("a", &["echo.v1.Echo".into(), "zoo.v1.Zoo".into()]);
        t.set("b", &["echo.v1.Echo".into()]);
        t.set("a", &["zoo.v1.Zoo".into()]);
        assert_eq!(t.owners("echo.v1.Echo"), ["b"], "a dropped it");
        assert_eq!(t.owners("zoo.v1.Zoo"), ["a"]);
        t.set("b", &[]);
        assert_eq!(t.services(), ["zoo.v1.Zoo"]);
    }

    #[test]
    fn a_released_plugin_serves_nothing_and_the_others_keep_serving() {
        let t = RouteTable::default();
        t.set("echo", &["echo.v1.Echo".into()]);
        t.set("copy", &["echo.v1.Echo".into(), "copy.v1.Copy".into()]);
        t.release("copy");
        assert_eq!(t.owners("echo.v1.Echo"), ["echo"]);
        assert!(t.owners("copy.v1.Copy").is_empty());
        assert_eq!(t.services(), ["echo.v1.Echo"]);
        t.release("echo");
        assert!(t.services().is_empty());
    }
}
