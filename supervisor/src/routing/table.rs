//! Which plugin serves which gRPC service, learnt from handshakes and kept
//! across restarts, so a call to a plugin that is down is answered with
//! its state rather than "unknown service".

use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct RouteTable {
    services: RwLock<HashMap<String, String>>,
}

impl RouteTable {
    /// Records that `plugin` serves `services`; fails with the first
    /// service another plugin already serves, and its owner.
    pub fn claim(&self, plugin: &str, services: &[String]) -> Result<(), (String, String)> {
        let Ok(mut map) = self.services.write() else {
            return Ok(());
        };
        if let Some((s, owner)) =
            services.iter().find_map(|s| map.get(s).filter(|o| *o != plugin).map(|o| (s.clone(), o.clone())))
        {
            return Err((s, owner));
        }
        for s in services {
            map.insert(s.clone(), plugin.to_owned());
        }
        Ok(())
    }

    /// `plugin` is gone for good: its services are free for others.
    pub fn release(&self, plugin: &str) {
        if let Ok(mut map) = self.services.write() {
            map.retain(|_, owner| owner != plugin);
        }
    }

    pub fn lookup(&self, service: &str) -> Option<String> {
        self.services.read().ok()?.get(service).cloned()
    }

    pub fn services(&self) -> Vec<String> {
        let mut v: Vec<String> = self.services.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_belongs_to_one_plugin() {
        let t = RouteTable::default();
        t.claim("echo", &["echo.v1.Echo".into()]).unwrap();
        t.claim("echo", &["echo.v1.Echo".into()]).unwrap();
        assert_eq!(t.claim("copy", &["echo.v1.Echo".into()]), Err(("echo.v1.Echo".into(), "echo".into())));
        assert_eq!(t.lookup("echo.v1.Echo").as_deref(), Some("echo"));
        assert_eq!(t.lookup("nope"), None);
        t.release("echo");
        assert_eq!(t.lookup("echo.v1.Echo"), None);
        t.claim("copy", &["echo.v1.Echo".into()]).unwrap();
        assert_eq!(t.lookup("echo.v1.Echo").as_deref(), Some("copy"));
    }
}
