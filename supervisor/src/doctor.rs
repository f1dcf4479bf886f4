//! `supervisorctl doctor`: what this host gives the sandbox (cgroup layout
//! and controllers, seccomp, Landlock and its abstract-socket scope,
//! namespaces, pidfd, clone3), what
//! that means for each tier, and whether the configured plugins can run as
//! configured.

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, UNSANDBOXED};
use crate::sandbox::abstract_unix::AbstractUnixReach;
use crate::sandbox::cgroup::{Controller, Layout, LayoutKind, RealFs};
use crate::sandbox::host;
use crate::sandbox::landlock::{ABSTRACT_UNIX_SCOPE_ABI, TARGET_ABI};
use crate::sandbox::tier::Tier;

/// One finding about the host.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What a tier (or a plugin in it) gets on this host.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub tier: String,
    /// Can run as configured.
    pub runnable: bool,
    /// What is enforced, and what is not (and why).
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub tiers: Vec<Verdict>,
    pub plugins: Vec<Verdict>,
}

impl Report {
    /// False when some configured plugin cannot run as configured.
    pub fn runnable(&self) -> bool {
        self.plugins.iter().all(|p| p.runnable)
    }
}

/// What the host offers, probed once.
struct Host {
    layout: Result<Layout, String>,
    landlock: i32,
    seccomp: bool,
    cgroup_kill: bool,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check { name: name.into(), ok, detail: detail.into() }
}

const CONTROLLERS: [(Controller, &str); 3] =
    [(Controller::Memory, "memory_max"), (Controller::Cpu, "cpu"), (Controller::Pids, "pids_max")];

impl Host {
    fn probe(parent: Option<&Path>) -> Self {
        let layout = Layout::detect(&RealFs, parent).map_err(|e| e.to_string());
        let cgroup_kill =
            layout.as_ref().ok().and_then(|l| l.unified()).is_some_and(|u| has_cgroup_kill(&u.mount_point));
        Self { layout, landlock: host::landlock_abi(), seccomp: host::seccomp_available(), cgroup_kill }
    }

    fn has(&self, c: Controller) -> bool {
        self.layout.as_ref().is_ok_and(|l| l.source(c).is_some())
    }

    fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        match &self.layout {
            Ok(l) => {
                let kind = match l.kind() {
                    LayoutKind::PureV2 => "pure cgroup v2",
                    LayoutKind::Hybrid => "hybrid (v2 for membership and kill, v1 controllers for quotas)",
                    LayoutKind::V1Only => "cgroup v1 only",
                };
                out.push(check("cgroups", true, kind));
                for (c, _) in CONTROLLERS {
                    let detail = match l.source(c).and_then(|id| l.hierarchy(id)) {
                        Some(h) => format!(
                            "{c} from {} at {}",
                            if h.version == crate::sandbox::cgroup::Version::V2 { "v2" } else { "v1" },
                            h.mount_point.display()
                        ),
                        None => format!("no {c} controller: {c} quotas cannot be enforced"),
                    };
                    out.push(check(&format!("cgroup {c}"), self.has(c), detail));
                }
                out.push(check(
                    "cgroup.kill",
                    self.cgroup_kill,
                    if self.cgroup_kill {
                        "kills a whole cgroup at once"
                    } else {
                        "absent: stop falls back to freeze and signal"
                    },
                ));
                for n in l.notes() {
                    out.push(check("cgroups note", true, n.clone()));
                }
            }
            Err(e) => out.push(check("cgroups", false, format!("unusable: {e}"))),
        }
        out.push(check(
            "seccomp",
            self.seccomp,
            if self.seccomp { "filters with user notifications" } else { "unavailable: no tier can run" },
        ));
        let full = self.landlock >= TARGET_ABI as i32;
        out.push(check(
            "landlock",
            self.landlock > 0,
            match self.landlock {
                0 => "unavailable: filesystem rules cannot be enforced".to_owned(),
                v if full => format!("ABI {v}: every rule enforced"),
                v => format!("ABI {v}: enforced in part (full enforcement needs ABI {})", TARGET_ABI as i32),
            },
        ));
        let scoped = self.landlock >= ABSTRACT_UNIX_SCOPE_ABI;
        out.push(check(
            "abstract unix sockets",
            scoped,
            if scoped {
                "Landlock scopes them: a plugin cannot connect to the host's".to_owned()
            } else {
                format!(
                    "not scoped (Landlock ABI {}, needs {ABSTRACT_UNIX_SCOPE_ABI}): a plugin without a network namespace of its own can connect to the host's",
                    self.landlock
                )
            },
        ));
        out.push(check(
            "user namespaces",
            true,
            if host::user_namespaces() { "allowed" } else { "disabled for unprivileged users" },
        ));
        out.push(check("pidfd", host::pidfd_available(), "process handles that cannot be confused with a reused pid"));
        out.push(check(
            "clone3",
            host::clone3_available(),
            "children join their cgroup before their first instruction",
        ));
        out.push(check("running as root", is_root(), "needed to create cgroups and switch plugins to their own uids"));
        out
    }

    /// What `tier` gets here, for a plugin with these settings.
    fn judge(
        &self,
        tier: &Tier,
        quota_optional: bool,
        landlock_required: bool,
        own_netns: bool,
    ) -> (bool, Vec<String>) {
        let mut ok = self.seccomp;
        let mut details =
            vec![if self.seccomp { "seccomp filter enforced".to_owned() } else { "seccomp unavailable".to_owned() }];
        for (c, quota) in CONTROLLERS {
            if self.has(c) {
                details.push(format!("{quota} enforced"));
            } else if quota_optional {
                details.push(format!("{quota} NOT enforced (no {c} controller; quota optional)"));
            } else {
                ok = false;
                details.push(format!("{quota} cannot be enforced: no {c} controller"));
            }
        }
        let full = self.landlock >= TARGET_ABI as i32;
        match (self.landlock, full, landlock_required) {
            (_, true, _) => details.push("Landlock fully enforced".into()),
            (0, _, true) | (_, false, true) => {
                ok = false;
                details.push(format!("Landlock required but the kernel's ABI is {}", self.landlock));
            }
            (0, _, false) => details.push("Landlock unavailable (best effort: not enforced)".into()),
            (v, _, false) => details.push(format!("Landlock enforced in part (ABI {v}, best effort)")),
        }
        let ns = tier.namespaces;
        let network = ns.network || own_netns;
        details
            .push(AbstractUnixReach::of(network, self.landlock >= ABSTRACT_UNIX_SCOPE_ABI, self.landlock).describe());
        let names: Vec<&str> =
            [(network, "network"), (ns.ipc, "IPC"), (ns.uts, "UTS"), (ns.pid, "PID"), (ns.mount, "mount")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
        if !names.is_empty() {
            details.push(format!("new {} namespaces", names.join(", ")));
        }
        (ok, details)
    }
}

/// The root cgroup has no `cgroup.kill`; any other has one when the kernel
/// supports it (5.14+). Look at a cgroup that exists, else at the version.
fn has_cgroup_kill(mount: &Path) -> bool {
    let child = std::fs::read_dir(mount).ok().and_then(|d| d.flatten().find(|e| e.path().is_dir()));
    if let Some(c) = child {
        return c.path().join("cgroup.kill").exists();
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (5, 14)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Examines the host, the tiers of `config` (if given) and its plugins.
pub fn examine(config: Option<&Config>) -> Report {
    let parent = config.and_then(|c| c.supervisor.cgroup.parent.clone());
    let host = Host::probe(parent.as_deref());
    let mut tiers = Vec::new();
    let mut plugins = Vec::new();
    if let Some(config) = config {
        if let Some(set) = config.tiers() {
            for t in set.iter() {
                let (runnable, details) = host.judge(t, false, t.landlock.required, false);
                tiers.push(Verdict { name: t.name.clone(), tier: t.name.clone(), runnable, details });
            }
        }
        for spec in config.specs() {
            let verdict = if spec.tier == UNSANDBOXED {
                Verdict {
                    name: spec.name.clone(),
                    tier: spec.tier.clone(),
                    runnable: true,
                    details: vec!["UNSANDBOXED (development only)".into()],
                }
            } else if let Some(t) = config.tiers().and_then(|s| s.get(&spec.tier)) {
                let required = spec.landlock_required.unwrap_or(t.landlock.required);
                let (runnable, details) = host.judge(t, spec.quota.optional, required, spec.network_namespace);
                Verdict { name: spec.name.clone(), tier: spec.tier.clone(), runnable, details }
            } else {
                Verdict {
                    name: spec.name.clone(),
                    tier: spec.tier.clone(),
                    runnable: false,
                    details: vec!["tier not loaded".into()],
                }
            };
            plugins.push(verdict);
        }
    }
    Report { checks: host.checks(), tiers, plugins }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_gives_every_tier_what_it_needs() {
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let text = format!(
            "[supervisor]\npolicies_dir = {:?}\n[[plugin]]\nname = \"a\"\nbinary = \"/bin/true\"\ntier = \"L3\"\n",
            policies.display().to_string()
        );
        let config: Config = text.parse().unwrap();
        let r = examine(Some(&config));
        assert!(r.checks.iter().any(|c| c.name == "seccomp" && c.ok));
        assert_eq!(r.tiers.len(), 3, "{r:?}");
        assert!(r.runnable(), "{r:#?}");
        assert!(r.plugins[0].details.iter().any(|d| d.contains("new network, IPC, UTS namespaces")), "{r:#?}");
    }
}
