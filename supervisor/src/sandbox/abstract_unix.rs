//! Whether a plugin can reach the host's abstract unix sockets. They are no
//! files, so Landlock's filesystem rules do not cover them, and a host
//! daemon listening on one would be reachable from every plugin that may
//! create sockets (the class of containerd-shim's CVE-2020-15257). Two
//! things close it: Landlock's abstract-socket scope (ABI 6, Linux 6.12) and
//! a network namespace of the plugin's own, which has its own abstract names.
//! `status` and `doctor` say which, or that neither does.

use super::landlock::ABSTRACT_UNIX_SCOPE_ABI;

/// What stands between a plugin and the host's abstract unix sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbstractUnixReach {
    /// It has a network namespace of its own: the host's names do not exist there.
    OwnNetworkNamespace,
    /// Landlock refuses connections to sockets made outside its domain (EPERM).
    ScopedByLandlock,
    /// Nothing: the kernel's Landlock (this ABI) cannot scope them.
    Reachable { landlock_abi: i32 },
}

impl AbstractUnixReach {
    /// `scoped`: the plugin's Landlock ruleset is in force and scopes them.
    pub fn of(own_network_namespace: bool, scoped: bool, landlock_abi: i32) -> Self {
        if own_network_namespace {
            Self::OwnNetworkNamespace
        } else if scoped {
            Self::ScopedByLandlock
        } else {
            Self::Reachable { landlock_abi }
        }
    }

    pub fn is_closed(self) -> bool {
        !matches!(self, Self::Reachable { .. })
    }

    pub fn describe(self) -> String {
        match self {
            Self::OwnNetworkNamespace => "host abstract unix sockets out of reach (own network namespace)".to_owned(),
            Self::ScopedByLandlock => "host abstract unix sockets out of reach (Landlock scope)".to_owned(),
            Self::Reachable { landlock_abi } => format!(
                "abstract unix sockets of the host are reachable: Landlock ABI {landlock_abi} cannot scope them \
                 (ABI {ABSTRACT_UNIX_SCOPE_ABI}, Linux 6.12, can); set network_namespace = true to close this"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_namespace_closes_the_gap_on_any_kernel_and_landlock_where_it_can() {
        assert_eq!(AbstractUnixReach::of(true, false, 2), AbstractUnixReach::OwnNetworkNamespace);
        assert_eq!(AbstractUnixReach::of(false, true, 7), AbstractUnixReach::ScopedByLandlock);
        let open = AbstractUnixReach::of(false, false, 5);
        assert!(!open.is_closed());
        assert_eq!(
            open.describe(),
            "abstract unix sockets of the host are reachable: Landlock ABI 5 cannot scope them \
             (ABI 6, Linux 6.12, can); set network_namespace = true to close this"
        );
    }
}
