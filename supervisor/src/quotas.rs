//! Changing a plugin's quotas at run time: the change is checked, applied to
//! every running instance's cgroup at once, and persisted in the state file
//! (so it survives restarts) only once every kernel took it.

use std::sync::Arc;

use crate::config::QuotaConfig;
use crate::config::units::{ByteSize, CpuShare};
use crate::instance::{Plugin, Revision};
use crate::observe::events::EventKind;
use crate::sandbox::cgroup::{self, Limits};
use crate::sandbox::quota;
use crate::supervisor::Shared;
use crate::{Supervisor, SupervisorError};

/// The cgroup leaves of a plugin's running instances, by instance id.
type Leaves = [(String, Arc<cgroup::Instance>)];

/// One requested change: `Some(Some(v))` sets, `Some(None)` returns the
/// value to its configured default, `None` leaves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaChange {
    pub memory_max: Option<Option<ByteSize>>,
    pub memory_high: Option<Option<ByteSize>>,
    pub cpu: Option<Option<CpuShare>>,
    pub pids_max: Option<Option<u64>>,
}

/// The word that returns a value to its default.
pub const DEFAULT: &str = "default";

fn parse<T>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Option<Option<T>>, String> {
    match s.trim() {
        "" => Ok(None),
        DEFAULT => Ok(Some(None)),
        v => f(v).map(|v| Some(Some(v))),
    }
}

impl QuotaChange {
    /// From the strings operators type ("256M", "50%", "64", "default").
    pub fn parse(memory_max: &str, memory_high: &str, cpu: &str, pids_max: &str) -> Result<Self, String> {
        Ok(Self {
            memory_max: parse(memory_max, ByteSize::parse).map_err(|e| format!("memory: {e}"))?,
            memory_high: parse(memory_high, ByteSize::parse).map_err(|e| format!("memory-high: {e}"))?,
            cpu: parse(cpu, CpuShare::parse).map_err(|e| format!("cpu: {e}"))?,
            pids_max: parse(pids_max, |v| {
                v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{v:?} is not a task count above 0"))
            })
            .map_err(|e| format!("pids: {e}"))?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn apply(&self, mut q: QuotaConfig) -> QuotaConfig {
        if let Some(v) = self.memory_max {
            q.memory_max = v;
        }
        if let Some(v) = self.memory_high {
            q.memory_high = v;
        }
        if let Some(v) = self.cpu {
            q.cpu = v;
        }
        if let Some(v) = self.pids_max {
            q.pids_max = v;
        }
        q
    }
}

impl Supervisor {
    /// The quotas `name`'s instances start with now.
    pub fn quota(&self, name: &str) -> Result<QuotaConfig, SupervisorError> {
        let p = self.plugin(name)?;
        let tier = self.shared().launcher.tier_quota(&p.spec().tier);
        Ok(p.quota(tier.as_ref()))
    }

    /// Applies `change` to `name`: set on every running instance, then
    /// persisted. A change the kernel refuses for any instance is undone on
    /// the others and not persisted: the previous limits stay in force. A
    /// memory limit below what an instance uses now is refused unless
    /// `force` (v2 would reclaim and then OOM-kill it). Returns the quotas in
    /// force and what happened.
    pub fn change_quota(
        &self,
        name: &str,
        change: &QuotaChange,
        force: bool,
    ) -> Result<(QuotaConfig, String), SupervisorError> {
        let p = self.plugin(name)?;
        if change.is_empty() {
            return Ok((self.quota(name)?, "unchanged".into()));
        }
        // One change at a time: each starts from what the last one left.
        let _one = p.quota_lock.lock().unwrap_or_else(|e| e.into_inner());
        let bad = |reason: String| SupervisorError::Quota { plugin: name.into(), reason };
        let before = (**p.overrides.load()).clone();
        let overrides = change.apply(before.clone());
        // Every revision's instances get them, each under its own entry and tier (a reload
        // that changes the config's quotas is the config's word, the overrides the
        // operator's).
        let parts = parts(self.shared(), &p, |rev| rev.spec(), &before, &overrides);
        for part in &parts {
            if let (Some(Some(high)), Some(max)) = (change.memory_high, part.effective.memory_max)
                && high >= max
            {
                return Err(bad(format!("{}memory-high {high} must be below memory {max}", part.named())));
            }
            part.limits.validate().map_err(|e| bad(format!("{}{e}", part.named())))?;
        }
        // Only a change of the memory limit can put it below what an instance uses.
        if !force
            && change.memory_max.is_some()
            && let Some((instance, limit, usage)) = above_usage_any(&parts)
        {
            return Err(SupervisorError::MemoryBelowUsage { plugin: name.into(), instance, limit, usage });
        }
        // Instances starting meanwhile take the new quotas; undone below if refused.
        p.overrides.store(Arc::new(overrides.clone()));
        let applied = apply_parts(name, &parts).and_then(|applied| {
            match self.shared().state.set_quota(name, overrides.clone()) {
                Ok(()) => Ok(applied),
                Err(e) => {
                    undo_parts(&parts);
                    Err(e.into())
                }
            }
        });
        let applied = match applied {
            Ok(n) => n,
            Err(e) => {
                p.overrides.store(Arc::new(before));
                self.events().emit(name, "", EventKind::QuotaRefused, e.to_string(), &[]);
                return Err(e);
            }
        };
        parts.iter().for_each(Part::show_in_force);
        let effective = parts[0].effective.clone();
        let shown = describe(&effective);
        // Unsandboxed (tier "none"), an instance runs without a cgroup: nothing holds it to
        // the change, which is kept all the same (for its next start under a tier).
        let unheld = p
            .instances()
            .iter()
            .filter(|i| i.status().state == crate::instance::state::State::Running && i.cgroup.load().is_none())
            .count();
        let message = match unheld {
            0 => format!("{name}: {shown} (persisted; applied to {applied} running instance(s))"),
            n => format!(
                "{name}: {shown} (persisted; applied to {applied} running instance(s); not enforced on {n} running without a cgroup)"
            ),
        };
        self.events().emit(name, "", EventKind::Quota, message.clone(), &[]);
        Ok((effective, message))
    }
}

/// Gives `p`'s serving revision `spec`, which differs from its entry only in keys that
/// apply to running processes (see `config::changes`), and every other revision with
/// instances (a canary, a reload's new one) those keys too, or a canary promoted later
/// would bring the old ones back. The entries are stored first, so an instance starting
/// meanwhile takes them; then changed quotas are set on every running instance, each
/// revision's under its own tier and the operator's overrides (which keep winning until
/// `quota ... default`). A change the kernel refuses, or a memory limit below what an
/// instance uses now, is undone and the revisions keep their entries. Returns the
/// serving revision's quotas in force.
pub(crate) fn apply_live(
    shared: &Shared,
    p: &Plugin,
    spec: Arc<crate::config::PluginSpec>,
) -> Result<String, SupervisorError> {
    let _one = p.quota_lock.lock().unwrap_or_else(|e| e.into_inner());
    let serving = p.serving().number;
    let overrides = p.overrides.load_full();
    let entry = |rev: &Revision| {
        if rev.number == serving {
            spec.clone()
        } else {
            Arc::new(crate::config::changes::with_live_keys(&rev.spec(), &spec))
        }
    };
    let parts = parts(shared, p, entry, &overrides, &overrides);
    let old: Vec<_> = parts.iter().map(|part| part.rev.spec()).collect();
    if parts.iter().zip(&old).all(|(part, old)| old.quota == part.entry.quota) {
        parts.iter().for_each(|part| part.rev.set_live_spec(part.entry.clone()));
        return Ok(describe(&parts[0].effective));
    }
    let bad = |reason: String| SupervisorError::Quota { plugin: p.name.clone(), reason };
    for part in &parts {
        part.limits.validate().map_err(|e| bad(format!("{}{e}", part.named())))?;
    }
    if let Some((instance, limit, usage)) = above_usage_any(&parts) {
        return Err(bad(format!(
            "memory {limit} is below what {instance} uses now ({}); the config's quotas were not applied",
            usage
        )));
    }
    parts.iter().for_each(|part| part.rev.set_live_spec(part.entry.clone()));
    if let Err(e) = apply_parts(&p.name, &parts) {
        parts.iter().zip(old).for_each(|(part, old)| part.rev.set_live_spec(old));
        shared.events.emit(&p.name, "", EventKind::QuotaRefused, e.to_string(), &[]);
        return Err(e);
    }
    parts.iter().for_each(Part::show_in_force);
    Ok(describe(&parts[0].effective))
}

/// One revision's share of a quota change: its instances' cgroups, and the quotas in force
/// on them before and after. Each revision's come from its own entry and tier: a canary
/// may have quota keys of its own, or run under another tier.
struct Part {
    rev: Arc<Revision>,
    /// Its entry after the change.
    entry: Arc<crate::config::PluginSpec>,
    leaves: Vec<(String, Arc<cgroup::Instance>)>,
    effective: QuotaConfig,
    limits: Limits,
    previous: Limits,
    serving: bool,
}

impl Part {
    /// How a refusal names it: the serving revision goes without saying.
    fn named(&self) -> String {
        if self.serving { String::new() } else { format!("revision {}: ", self.rev.number) }
    }

    /// Its instances' status shows its quotas in force.
    fn show_in_force(&self) {
        for inst in &self.rev.instances {
            inst.update(|s| s.quota = self.effective.clone());
        }
    }
}

/// Every revision of `p` with instances, the serving one first: `entry` gives each its
/// entry after the change, `before` and `after` are the operator's overrides.
fn parts(
    shared: &Shared,
    p: &Plugin,
    entry: impl Fn(&Revision) -> Arc<crate::config::PluginSpec>,
    before: &QuotaConfig,
    after: &QuotaConfig,
) -> Vec<Part> {
    let serving = p.serving();
    let others = p.revisions().into_iter().filter(|r| r.number != serving.number);
    std::iter::once(serving.clone())
        .chain(others)
        .map(|rev| {
            let old = rev.spec();
            let new = entry(&rev);
            let previous = quota::effective(shared.launcher.tier_quota(&old.tier).as_ref(), &old.quota, before);
            let effective = quota::effective(shared.launcher.tier_quota(&new.tier).as_ref(), &new.quota, after);
            let leaves = rev.instances.iter().filter_map(|i| Some((i.id.clone(), i.cgroup.load_full()?))).collect();
            Part {
                serving: rev.number == serving.number,
                rev,
                entry: new,
                leaves,
                limits: quota::limits(&effective),
                previous: quota::limits(&previous),
                effective,
            }
        })
        .collect()
}

/// Sets every part's limits. On the first refusal, the parts already changed get their
/// previous limits back (the refused one restored itself). Returns the instances changed.
fn apply_parts(plugin: &str, parts: &[Part]) -> Result<usize, SupervisorError> {
    let mut applied = 0;
    for (n, part) in parts.iter().enumerate() {
        match apply_all(plugin, &part.leaves, &part.limits, &part.previous, part.effective.optional) {
            Ok(changed) => applied += changed,
            Err(e) => {
                undo_parts(&parts[..n]);
                return Err(e);
            }
        }
    }
    Ok(applied)
}

fn undo_parts(parts: &[Part]) {
    for part in parts {
        undo(&part.leaves, &part.previous, part.effective.optional);
    }
}

/// The first instance of any revision using more memory than its revision's new limit.
fn above_usage_any(parts: &[Part]) -> Option<(String, ByteSize, ByteSize)> {
    parts.iter().find_map(|part| above_usage(&part.leaves, part.effective.memory_max))
}

/// The first instance using more memory than `memory_max` now: its id, the
/// limit and what it uses.
fn above_usage(cgroups: &Leaves, memory_max: Option<ByteSize>) -> Option<(String, ByteSize, ByteSize)> {
    let max = memory_max?;
    cgroups.iter().find_map(|(id, cg)| {
        let used = cg.stats().ok()?.memory_current?;
        (used > max.bytes()).then(|| (id.clone(), max, ByteSize(used)))
    })
}

/// Sets the quotas `q` make on one instance's cgroup (those the host can enforce, when
/// they are optional).
pub(crate) fn apply_to(cg: &cgroup::Instance, q: &QuotaConfig) -> Result<(), cgroup::CgroupError> {
    let limits = quota::limits(q);
    let wanted = if q.optional { cg.enforceable(&limits) } else { limits };
    cg.set_limits(&wanted)
}

/// Sets `limits` on every cgroup (without the quotas an instance whose
/// quotas are optional cannot have here). On the first refusal, the ones
/// already changed get `previous` back; the refused one restored itself.
fn apply_all(
    plugin: &str,
    cgroups: &Leaves,
    limits: &Limits,
    previous: &Limits,
    optional: bool,
) -> Result<usize, SupervisorError> {
    let mut applied = 0;
    for (n, (id, cg)) in cgroups.iter().enumerate() {
        let wanted = if optional { cg.enforceable(limits) } else { *limits };
        match cg.set_limits(&wanted) {
            Ok(()) => applied += 1,
            // The instance ended and its cgroup is being removed: its next
            // start takes the new quotas.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                undo(&cgroups[..n], previous, optional);
                return Err(SupervisorError::QuotaRefused {
                    plugin: plugin.into(),
                    instance: id.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(applied)
}

fn undo(cgroups: &Leaves, previous: &Limits, optional: bool) {
    for (id, cg) in cgroups {
        let wanted = if optional { cg.enforceable(previous) } else { *previous };
        if let Err(e) = cg.set_limits(&wanted) {
            tracing::warn!(instance = %id, error = %e, "cannot put the previous quotas back");
        }
    }
}

/// The overrides persisted for `p`, unless the quotas they make cannot be
/// set (a state file written before a check existed, or edited by hand):
/// those are left in the file but not used, so the plugin can still start.
pub(crate) fn restore(p: &Plugin, shared: &Shared) {
    if let Some(e) = shared.state.unreadable_quota(&p.name) {
        let message = format!("persisted quota change ignored: {e}; the configured quotas apply");
        tracing::warn!(plugin = %p.name, reason = %e, "persisted quota change ignored");
        shared.events.emit(&p.name, "", EventKind::QuotaRefused, message, &[]);
        return;
    }
    let saved = shared.state.quota(&p.name);
    if saved == QuotaConfig::default() {
        return;
    }
    let spec = p.spec();
    let tier = shared.launcher.tier_quota(&spec.tier);
    match quota::limits(&quota::effective(tier.as_ref(), &spec.quota, &saved)).validate() {
        Ok(()) => p.overrides.store(Arc::new(saved)),
        Err(e) => {
            let message = format!("persisted quota change ignored: {e}; the configured quotas apply");
            tracing::warn!(plugin = %p.name, reason = %e, "persisted quota change ignored");
            shared.events.emit(&p.name, "", EventKind::QuotaRefused, message, &[]);
        }
    }
}

/// "memory 256M, cpu 50%, pids 64".
pub fn describe(q: &QuotaConfig) -> String {
    let mut parts = Vec::new();
    if let Some(m) = q.memory_max {
        parts.push(format!("memory {m}"));
    }
    if let Some(m) = q.memory_high {
        parts.push(format!("memory-high {m}"));
    }
    if let Some(c) = q.cpu {
        parts.push(format!("cpu {c}"));
    }
    if let Some(n) = q.pids_max {
        parts.push(format!("pids {n}"));
    }
    if parts.is_empty() { "no quotas".into() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_set_default_and_leave() {
        let c = QuotaChange::parse("256M", "", "default", "64").unwrap();
        assert_eq!(c.memory_max, Some(Some(ByteSize(256 << 20))));
        assert_eq!(c.memory_high, None);
        assert_eq!(c.cpu, Some(None));
        assert_eq!(c.pids_max, Some(Some(64)));
        let before = QuotaConfig { cpu: CpuShare::parse("20%").ok(), ..Default::default() };
        let after = c.apply(before);
        assert_eq!(after.cpu, None);
        assert_eq!(after.memory_max, Some(ByteSize(256 << 20)));
        assert!(QuotaChange::parse("", "", "", "").unwrap().is_empty());
    }

    /// Two running instances on a fake hybrid host (v1 memory), with
    /// `before` in force.
    fn two_instances(before: &Limits) -> (Arc<crate::sandbox::cgroup::fake_fs::FakeFs>, cgroup::Subtree, Box<Leaves>) {
        use crate::sandbox::cgroup::test_hosts::{create, hybrid};
        let (fs, layout) = hybrid();
        let cfg = cgroup::SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        let cgroups = ["p-0", "p-1"]
            .into_iter()
            .map(|id| (id.to_owned(), Arc::new(tree.create_instance("p", id, before).unwrap())))
            .collect();
        (fs, tree, cgroups)
    }

    fn uses(fs: &crate::sandbox::cgroup::fake_fs::FakeFs, cg: &cgroup::Instance, bytes: u64) {
        let (_, dir) = cg.cgroups().dirs().find(|(_, d)| d.starts_with("/sys/fs/cgroup/memory")).unwrap();
        fs.set_file(&format!("{}/memory.usage_in_bytes", dir.display()), &format!("{bytes}\n"));
    }

    #[test]
    fn a_refusal_by_one_instance_undoes_the_change_on_the_others() {
        let before = Limits { memory_max: Some(256 << 20), pids_max: Some(64), ..Limits::default() };
        let (fs, _tree, cgroups) = two_instances(&before);
        uses(&fs, &cgroups[1].1, 100 << 20);
        let after = Limits { memory_max: Some(32 << 20), pids_max: Some(8), ..Limits::default() };
        let e = apply_all("p", &cgroups, &after, &before, false).unwrap_err();
        match &e {
            SupervisorError::QuotaRefused { plugin, instance, source } => {
                assert_eq!((plugin.as_str(), instance.as_str()), ("p", "p-1"));
                assert_eq!(source.raw_os_error(), Some(libc::EBUSY), "{source}");
            }
            other => panic!("unexpected {other}"),
        }
        let text = e.to_string();
        assert!(text.contains("memory.limit_in_bytes") && text.contains("nothing was saved"), "{text}");
        for (id, cg) in &cgroups {
            assert_eq!(cg.limits().unwrap(), before, "{id}");
        }
        assert_eq!(apply_all("p", &cgroups[..1], &after, &before, false).unwrap(), 1);
        assert_eq!(cgroups[0].1.limits().unwrap(), after);
    }

    #[test]
    fn an_instance_whose_cgroup_just_went_away_does_not_refuse_the_change() {
        let before = Limits { pids_max: Some(64), ..Limits::default() };
        let (_fs, _tree, cgroups) = two_instances(&before);
        assert!(cgroups[0].1.try_remove().unwrap().is_removed());
        let after = Limits { pids_max: Some(8), ..Limits::default() };
        assert_eq!(apply_all("p", &cgroups, &after, &before, false).unwrap(), 1);
        assert_eq!(cgroups[1].1.limits().unwrap(), after);
    }

    #[test]
    fn memory_below_what_an_instance_uses_is_found() {
        let (fs, _tree, cgroups) = two_instances(&Limits::default());
        uses(&fs, &cgroups[0].1, 10 << 20);
        uses(&fs, &cgroups[1].1, 40 << 20);
        assert_eq!(above_usage(&cgroups, None), None);
        assert_eq!(above_usage(&cgroups, Some(ByteSize(64 << 20))), None);
        assert_eq!(
            above_usage(&cgroups, Some(ByteSize(16 << 20))),
            Some(("p-1".to_owned(), ByteSize(16 << 20), ByteSize(40 << 20)))
        );
        let e = SupervisorError::MemoryBelowUsage {
            plugin: "p".into(),
            instance: "p-1".into(),
            limit: ByteSize(16 << 20),
            usage: ByteSize((40 << 20) + (300 << 10)),
        };
        assert!(e.to_string().contains("memory 16M is below what p-1 uses now (40.3M)"), "{e}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(QuotaChange::parse("lots", "", "", "").unwrap_err().starts_with("memory:"));
        assert!(QuotaChange::parse("", "", "half", "").unwrap_err().starts_with("cpu:"));
        assert!(QuotaChange::parse("", "", "", "0").unwrap_err().starts_with("pids:"));
    }
}
