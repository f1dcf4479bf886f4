//! Fencing one instance: its cgroup leaf with the effective quotas, its
//! identity, namespaces, limits, Landlock ruleset and seccomp filter,
//! assembled in the parent into what the child applies between fork and
//! exec.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::abstract_unix::AbstractUnixReach;
use super::cgroup::{self, CgroupError, Controller, Layout, RealFs, Removal, Subtree, SubtreeConfig};
use super::deadman::Deadman;
use super::host;
use super::landlock::{self, Grants};
use super::spawn::ChildSandbox;
use super::tier::{Tier, TierSet, ViolationAction};
use crate::config::{Config, PluginSpec, QuotaConfig, UNSANDBOXED};
use crate::integrity::libraries::{LoaderFiles, Seen};

/// Supervisor-wide sandbox state.
#[derive(Debug)]
pub struct Sandbox {
    tiers: Option<Arc<TierSet>>,
    /// The delegated cgroup subtree, or why there is none.
    cgroups: Mutex<Result<Subtree, String>>,
    /// Kills every plugin process if the supervisor dies; disarmed before the subtree it
    /// sits in is removed.
    deadman: Mutex<Option<Deadman>>,
}

/// Why the sandbox cannot be set up at all (as opposed to quotas being unavailable, which
/// only refuses the plugins that need them).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Another live supervisor owns the configured cgroup subtree; its plugins are left
    /// alone.
    #[error(transparent)]
    SubtreeInUse(CgroupError),
    #[error("cannot start the spawner thread: {0}")]
    Spawner(std::io::Error),
    #[error("building the sandbox panicked: {0}")]
    Panicked(String),
}

/// An instance's fences, ready for the spawn.
#[derive(Debug)]
pub struct Confined {
    pub child: ChildSandbox,
    pub cgroup: Option<cgroup::Instance>,
    /// What to do with seccomp notifications, when a filter is installed.
    pub seccomp: Option<ViolationAction>,
    /// Quotas the host could not enforce (the plugin allowed that).
    pub notes: Vec<String>,
    /// The tier it is fenced by.
    pub tier: Option<String>,
}

/// Why an instance cannot be fenced.
#[derive(Debug)]
pub enum ConfineError {
    /// It cannot run as configured on this host.
    Refused(String),
    /// Something failed that a retry may fix.
    Failed(String),
}

/// What a plugin's image grants under Landlock, and the rulesets built from it.
///
/// One image serves every entry of its binary and checks, and an old revision's image
/// serves the new revision too, but the tier's paths, the data directory and whether
/// Landlock is required are each entry's own: a ruleset is kept per set of those, never
/// one per image.
#[derive(Debug)]
pub struct ImageGrants {
    /// Files the loader opens (read + execute), as last resolved.
    loader: Arc<Mutex<Resolved>>,
    /// Held while the loader's files are resolved again, so that starts of one image
    /// after an upgrade resolve them once, not once each. An async lock: the starts
    /// waiting for it hold no thread (1,000 instances of one binary restarted after a
    /// library upgrade would otherwise take the blocking pool's 512 to wait).
    refreshing: Arc<tokio::sync::Mutex<()>>,
    /// The most recently used first, at most [`RULESETS_KEPT`]: each holds a descriptor,
    /// and an image outlives entries that changed their data directory.
    rulesets: Mutex<VecDeque<(RulesetKey, Arc<landlock::Built>)>>,
}

/// Everything a ruleset is built from beside the image's loader files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RulesetKey {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    /// The device and inode each write path names now: a rule holds the directory it was
    /// made for, so one removed and made again (by the operator, or at the next start)
    /// needs a ruleset of its own, or the plugin finds its data directory refused.
    write_inodes: Vec<(u64, u64)>,
    /// The same for the loader's files and the read-only paths: a package upgrade or
    /// `ldconfig` renames a new file over a library, the loader cache or a file such as
    /// /etc/resolv.conf, and a ruleset kept from before would refuse the new one.
    granted_inodes: Vec<(u64, u64)>,
    required: bool,
}

impl RulesetKey {
    /// Whether the files this ruleset grants are still those their paths name, `loader`
    /// being what the loader's files to grant are now.
    fn current(&self, loader: &[(u64, u64)]) -> bool {
        self.granted_inodes.starts_with(loader)
            && self.granted_inodes.len() == loader.len() + self.read.len()
            && identities(&self.read) == self.granted_inodes[loader.len()..]
            && identities(&self.write) == self.write_inodes
    }
}

/// The loader's files as found by one resolution: the canonical paths to grant, and each
/// file by the path the loader opens with what it was when the resolution read it.
#[derive(Debug, Clone)]
struct Resolved {
    paths: Vec<PathBuf>,
    stamps: Vec<(PathBuf, Seen)>,
}

impl Resolved {
    fn of(files: LoaderFiles) -> Self {
        Self { paths: files.paths().into_iter().collect(), stamps: files.stamps }
    }
}

/// The device and inode each of `paths` names now; (0, 0) for one that is not there.
fn identities<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<(u64, u64)> {
    paths.into_iter().map(|p| std::fs::metadata(p).map_or((0, 0), |m| (m.dev(), m.ino()))).collect()
}

/// Rulesets one image keeps; beyond them (many entries of one binary, each with a data
/// directory of its own) a start builds its ruleset afresh, which costs a few opens.
const RULESETS_KEPT: usize = 16;

impl ImageGrants {
    /// `loader`: the canonical paths to grant; `stamps`: what the resolution saw at each
    /// path the loader opens or looks at first (see [`LoaderFiles::stamps`]).
    pub fn new(loader: Vec<PathBuf>, stamps: Vec<(PathBuf, Seen)>) -> Self {
        Self {
            loader: Arc::new(Mutex::new(Resolved { paths: loader, stamps })),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
            rulesets: Mutex::new(VecDeque::new()),
        }
    }

    /// The grants of what a resolution found.
    pub fn of(files: LoaderFiles) -> Self {
        let Resolved { paths, stamps } = Resolved::of(files);
        Self::new(paths, stamps)
    }

    /// Whether a path the loader opens names another file than the resolution read, or
    /// that file changed since, or something changed where the loader looks first (a
    /// library there would be opened instead), or the resolution could not trust what it
    /// saw somewhere (a change within the clock's tick of its look). A revision keeps its
    /// image for life, but its libraries are read from disk at every start: an upgrade
    /// renaming a new library over one, or repointing a symlink to another version, may
    /// bring libraries the old did not need (a new DT_NEEDED, which Landlock would refuse
    /// the loader), and one whose owner or mode changed must pass the owners' check again.
    pub fn stale(&self) -> bool {
        // Copied out: the stats are not made holding the lock.
        let Ok(stamps) = self.loader.lock().map(|r| r.stamps.clone()) else { return true };
        stamps.iter().any(|(path, seen)| !seen.still(path))
    }

    /// Runs `resolve` (blocking: it reads the libraries) on the blocking pool for the
    /// files to grant from now on, once among starts that found them stale together: the
    /// others wait without a thread each, and find them fresh. The outer error is
    /// `resolve` panicking, or the runtime shutting down under it.
    pub async fn refresh<E: Send + 'static>(
        &self,
        resolve: impl FnOnce() -> Result<LoaderFiles, E> + Send + 'static,
    ) -> Result<Result<(), E>, tokio::task::JoinError> {
        let one = self.refreshing.clone().lock_owned().await;
        if !self.stale() {
            return Ok(Ok(()));
        }
        let loader = self.loader.clone();
        // The lock and the result go with the job: a start cancelled while it runs (a stop,
        // the supervisor's shutdown) leaves it to finish and keep what it found, and the
        // starts waiting find the files fresh instead of resolving them again beside it.
        tokio::task::spawn_blocking(move || {
            let _one = one;
            let files = resolve()?;
            if let Ok(mut r) = loader.lock() {
                *r = Resolved::of(files);
            }
            Ok(())
        })
        .await
    }

    /// The files to grant read and execute.
    pub fn loader(&self) -> Vec<PathBuf> {
        self.loader.lock().map(|r| r.paths.clone()).unwrap_or_default()
    }
}

const STALE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a teardown of the supervisor's cgroup subtree left in place.
#[derive(Debug, thiserror::Error)]
pub enum SubtreeLeft {
    #[error("cgroup {} still held processes or children when the teardown gave up", cgroup.display())]
    Busy { cgroup: PathBuf },
    #[error("the teardown failed: {0}")]
    Failed(CgroupError),
}

/// The last pass's outcome, said in the log when something was left.
fn said(step: Result<(), SubtreeLeft>) -> Result<(), SubtreeLeft> {
    if let Err(left) = &step {
        tracing::error!(
            error = %left,
            "the supervisor's cgroup subtree was left in place: the next supervisor on this config may be refused it; remove it once its processes are gone"
        );
    }
    step
}

impl Sandbox {
    /// Sets up the cgroup subtree (after cleaning what a dead supervisor left) when any
    /// plugin is sandboxed, and arms the dead man's switch over it.
    pub fn new(config: &Config) -> Result<Self, SandboxError> {
        let tiers = config.tiers().cloned();
        let cgroups = match tiers {
            Some(_) => match setup_cgroups(config) {
                Err(e @ CgroupError::InUse { .. }) => return Err(SandboxError::SubtreeInUse(e)),
                other => other.map_err(|e| e.to_string()),
            },
            None => Err("no sandboxed plugin".into()),
        };
        let deadman = match &cgroups {
            Ok(tree) => arm_deadman(tree),
            Err(e) => {
                tracing::warn!(reason = %e, "no cgroup subtree: quotas cannot be enforced");
                None
            }
        };
        Ok(Self { tiers, cgroups: Mutex::new(cgroups), deadman: Mutex::new(deadman) })
    }

    /// A sandbox over a subtree built by the test (on a fake kernel), with no tiers.
    #[cfg(test)]
    pub(crate) fn over(tree: Subtree) -> Self {
        Self { tiers: None, cgroups: Mutex::new(Ok(tree)), deadman: Mutex::new(None) }
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.as_ref()?.get(name)
    }

    /// Takes the subtree down (moving the supervisor back where it started), trying for
    /// [`STALE_WAIT`]; what it could not take down is said (an error in the log, naming
    /// the cgroup or the failure) and returned. A daemon that logged "stopped" with its
    /// subtree, or itself, left in place had the next start refused or nested.
    pub async fn teardown(&self) -> Result<(), SubtreeLeft> {
        let deadline = tokio::time::Instant::now() + STALE_WAIT;
        loop {
            let step = self.teardown_step();
            if step.is_ok() || tokio::time::Instant::now() >= deadline {
                return said(step);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// [`Sandbox::teardown`] for a caller that cannot wait asynchronously
    /// (a `Supervisor` dropped without `shutdown`): kills what is left and
    /// removes the subtree, waiting at most `limit`.
    pub fn teardown_blocking(&self, limit: std::time::Duration) -> Result<(), SubtreeLeft> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let step = self.teardown_step();
            if step.is_ok() || std::time::Instant::now() >= deadline {
                return said(step);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes `plugin`'s cgroup set, once its instances' leaves have gone (they go as
    /// their processes are reaped): the plugin was removed for good. A set still busy
    /// after `STALE_WAIT` is left to the subtree's teardown, and said so.
    pub async fn forget_plugin(&self, plugin: &str) {
        let deadline = tokio::time::Instant::now() + STALE_WAIT;
        loop {
            let step = match self.cgroups.lock() {
                Ok(guard) => match guard.as_ref() {
                    Ok(tree) => tree.remove_plugin(plugin),
                    Err(_) => return,
                },
                Err(_) => return,
            };
            match step {
                Ok(Removal::Removed) => return,
                Ok(Removal::Pending { cgroup }) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(plugin, cgroup = %cgroup.display(), "a removed plugin's cgroup is still busy; the supervisor's teardown removes it");
                    return;
                }
                Ok(Removal::Pending { .. }) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(e) => {
                    tracing::warn!(plugin, error = %e, "a removed plugin's cgroup could not be removed");
                    return;
                }
            }
        }
    }

    /// One pass of the subtree's teardown: done, or what is left after it (a failure is
    /// tried again too, until the caller's time is up: a write refused EBUSY while a
    /// process exits goes through on a later pass).
    fn teardown_step(&self) -> Result<(), SubtreeLeft> {
        // The switch sits in the subtree's supervisor leaf, which it would keep busy.
        if let Ok(mut slot) = self.deadman.lock() {
            slot.take();
        }
        match self.cgroups.lock() {
            Ok(mut guard) => match guard.as_mut() {
                Ok(tree) => match tree.teardown() {
                    Ok(Removal::Removed) => Ok(()),
                    Ok(Removal::Pending { cgroup }) => Err(SubtreeLeft::Busy { cgroup }),
                    Err(e) => Err(SubtreeLeft::Failed(e)),
                },
                Err(_) => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }

    /// Builds the fences of instance `instance` of `spec`.
    pub fn confine(
        &self,
        spec: &PluginSpec,
        instance: &str,
        quota: &QuotaConfig,
        grants: &ImageGrants,
    ) -> Result<Confined, ConfineError> {
        let (uid, gid) = spec.ids;
        let mut child = ChildSandbox {
            creds: Some((uid, gid)),
            no_new_privs: true,
            rlimits: vec![(libc::RLIMIT_CORE, 0, 0)],
            ..ChildSandbox::default()
        };
        if let Some(dir) = &spec.data_dir {
            // Written `link/` or `link/.`, a link would be followed as a directory on the
            // way; put together from its parts again, its last part is the link itself.
            let dir = &dir.components().collect::<PathBuf>();
            // As validation refuses them: through `sub/..`, a `sub` turned into a link would
            // be followed, past the last part the open does not follow.
            if dir.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(ConfineError::Refused(format!(
                    "data_dir {}: it goes up with \"..\"; name the directory itself",
                    dir.display()
                )));
            }
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(ConfineError::Refused(format!(
                    "data_dir {}: it is a symbolic link; name the directory itself",
                    dir.display()
                )));
            }
            prepare_data_dir(dir, uid, gid)
                .map_err(|e| ConfineError::Failed(format!("data_dir {}: {e}", dir.display())))?;
            child.cwd = Some(
                CString::new(dir.as_os_str().as_bytes())
                    .map_err(|e| ConfineError::Refused(format!("data_dir {}: {e}", dir.display())))?,
            );
        }
        if spec.tier == UNSANDBOXED {
            return Ok(Confined { child, cgroup: None, seccomp: None, notes: Vec::new(), tier: None });
        }
        // Borrowed from the loaded set, not cloned: a tier holds its whole seccomp policy
        // as read (tens of KiB), and a crowd of instances starting at once each held a copy.
        let tiers = self.tiers.clone();
        let tier = tiers
            .as_deref()
            .and_then(|t| t.get(&spec.tier))
            .ok_or_else(|| ConfineError::Refused(format!("tier {:?} is not loaded", spec.tier)))?;
        let (cg, mut notes) = self.cgroup(spec, instance, quota)?;
        child.cgroup = match &cg {
            Some(c) => Some(c.join_fds().map_err(|e| ConfineError::Failed(e.to_string()))?),
            None => None,
        };
        child.rlimits.push((libc::RLIMIT_NOFILE, u64::from(tier.limits.nofile), u64::from(tier.limits.nofile)));
        child.clone_flags = tier.namespaces.clone_flags();
        if spec.network_namespace {
            child.clone_flags |= libc::CLONE_NEWNET;
        }
        let (landlock, scoped) = self.landlock(spec, tier, grants)?;
        child.landlock = landlock;
        let reach = AbstractUnixReach::of(child.clone_flags & libc::CLONE_NEWNET != 0, scoped, host::landlock_abi());
        if !reach.is_closed() {
            notes.push(reach.describe());
        }
        child.seccomp = Some(tier.program.instructions().to_vec());
        Ok(Confined { child, cgroup: cg, seccomp: Some(tier.violation), notes, tier: Some(spec.tier.clone()) })
    }

    /// The instance's cgroup leaf with every quota the host can enforce; a
    /// quota it cannot is an error unless the plugin made quotas optional.
    fn cgroup(
        &self,
        spec: &PluginSpec,
        instance: &str,
        quota: &QuotaConfig,
    ) -> Result<(Option<cgroup::Instance>, Vec<String>), ConfineError> {
        let mut limits = super::quota::limits(quota);
        let mut notes = Vec::new();
        let guard = self.cgroups.lock().map_err(|_| ConfineError::Failed("cgroup state poisoned".into()))?;
        let tree = match guard.as_ref() {
            Ok(tree) => tree,
            Err(reason) if quota.optional => {
                notes.push(format!("quotas not enforced: {reason}"));
                return Ok((None, notes));
            }
            Err(reason) => {
                return Err(ConfineError::Refused(format!(
                    "cannot enforce quotas: {reason} (set quota.optional = true to run without them)"
                )));
            }
        };
        for _ in 0..4 {
            match tree.create_instance(&spec.name, instance, &limits) {
                Ok(cg) => return Ok((Some(cg), notes)),
                Err(CgroupError::ControllerUnavailable { controller, quota: which }) if quota.optional => {
                    notes.push(format!("{which} not enforced: no {controller} controller on this host"));
                    drop_limit(&mut limits, controller);
                }
                Err(CgroupError::ControllerUnavailable { controller, quota: which }) => {
                    return Err(ConfineError::Refused(format!(
                        "cannot enforce {which}: no {controller} controller on this host (set quota.optional = true to run without it)"
                    )));
                }
                Err(CgroupError::AlreadyExists { cgroup }) => {
                    // A leaf left by an instance whose removal is pending.
                    let _ = tree.remove_instance(&spec.name, instance);
                    tracing::debug!(cgroup = %cgroup.display(), "reusing a leftover instance cgroup");
                }
                Err(e) => return Err(ConfineError::Failed(e.to_string())),
            }
        }
        Err(ConfineError::Failed(format!("cannot create the cgroup of {instance}")))
    }

    /// The ruleset's descriptor, and whether it scopes abstract unix sockets.
    fn landlock(
        &self,
        spec: &PluginSpec,
        tier: &Tier,
        grants: &ImageGrants,
    ) -> Result<(Option<OwnedFd>, bool), ConfineError> {
        let mut read = tier.landlock.read_only.clone();
        if Path::new("/etc/ld.so.cache").exists() {
            read.push("/etc/ld.so.cache".into());
        }
        let write: Vec<PathBuf> = spec.data_dir.iter().cloned().collect();
        let write_inodes = identities(&write);
        let loader = grants.loader();
        let loader_inodes = identities(&loader);
        let mut granted_inodes = loader_inodes.clone();
        granted_inodes.extend(identities(&read));
        let key = RulesetKey {
            read,
            write,
            write_inodes,
            granted_inodes,
            required: spec.landlock_required.unwrap_or(tier.landlock.required),
        };
        let mut kept = grants.rulesets.lock().map_err(|_| ConfineError::Failed("landlock state poisoned".into()))?;
        let found = kept.iter().position(|(k, _)| *k == key).and_then(|at| kept.remove(at));
        let built = match found {
            Some(entry) => {
                let built = entry.1.clone();
                kept.push_front(entry);
                built
            }
            None => {
                let mut exec = loader;
                exec.sort();
                exec.dedup();
                let access = Grants { exec, read: key.read.clone(), write: key.write.clone() };
                let b = landlock::build(&access, key.required).map_err(|e| match e {
                    landlock::LandlockError::NotFullyEnforced { .. } | landlock::LandlockError::Rule { .. } => {
                        ConfineError::Refused(e.to_string())
                    }
                    other => ConfineError::Failed(other.to_string()),
                })?;
                let b = Arc::new(b);
                // A kept ruleset whose files were replaced since can never match again (it
                // holds the old inodes open, so their numbers are not reused): let it go
                // now, with the descriptor and the old files it pins.
                kept.retain(|(k, _)| k.current(&loader_inodes));
                kept.push_front((key, b.clone()));
                kept.truncate(RULESETS_KEPT);
                b
            }
        };
        let fd = match &built.fd {
            Some(fd) => Some(fd.try_clone().map_err(|e| ConfineError::Failed(format!("landlock ruleset: {e}")))?),
            None => None,
        };
        Ok((fd, built.abstract_unix_scoped))
    }
}

fn drop_limit(l: &mut cgroup::Limits, c: Controller) {
    match c {
        Controller::Memory => {
            l.memory_max = None;
            l.memory_high = None;
        }
        Controller::Cpu => l.cpu_max = None,
        Controller::Pids => l.pids_max = None,
        _ => {}
    }
}

/// Locks the subtree (a live owner is an error), cleans what a dead one left, builds it.
fn setup_cgroups(config: &Config) -> Result<Subtree, CgroupError> {
    let fs: Arc<dyn cgroup::CgroupFs> = Arc::new(RealFs);
    let c = &config.supervisor.cgroup;
    let cfg = SubtreeConfig { name: c.name.clone(), parent: c.parent.clone(), move_self: c.move_self };
    let layout = Arc::new(Layout::detect(fs.as_ref(), cfg.parent.as_deref())?);
    let lock = Subtree::lock(fs.as_ref(), &layout, &cfg)?;
    let deadline = std::time::Instant::now() + STALE_WAIT;
    loop {
        match Subtree::cleanup_stale(fs.as_ref(), &layout, &cfg, &lock)? {
            Removal::Removed => break,
            Removal::Pending { cgroup } if std::time::Instant::now() < deadline => {
                tracing::info!(cgroup = %cgroup.display(), "waiting for a previous run's processes to die");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Removal::Pending { cgroup } => return Err(CgroupError::StaleNotEmptied { cgroup, waited: STALE_WAIT }),
        }
    }
    Subtree::create(fs, layout, &cfg, lock)
}

/// Arms the dead man's switch over the subtree's plugins, where the kernel can kill a
/// whole cgroup; without it, what plugins fork outlives a supervisor that is killed.
fn arm_deadman(tree: &Subtree) -> Option<Deadman> {
    let Some(file) = tree.plugins_kill_file() else {
        tracing::warn!(
            "no cgroup.kill on this host: processes plugins fork outlive a supervisor that is killed, until its next start"
        );
        return None;
    };
    match Deadman::arm(&file) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, file = %file.display(), "cannot arm the dead man's switch: processes plugins fork outlive a supervisor that is killed");
            None
        }
    }
}

/// Makes `dir` the plugin's own: created if missing, owned by its uid and gid, mode 0700.
///
/// The owner and mode are changed through a descriptor of the directory itself, opened
/// without following a last component that is a symbolic link: chown and chmod by path
/// follow links, and as root they would hand a link's target (planted by whoever can
/// write the directory the data_dir sits in) to the plugin.
fn prepare_data_dir(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    let opened =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(dir).map_err(
            |e| {
                if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::io::Error::other("it is a symbolic link; name the directory itself")
                } else {
                    e
                }
            },
        )?;
    std::os::unix::fs::fchown(&opened, Some(uid), Some(gid))?;
    opened.set_permissions(std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::path::Path;

    use super::*;
    use crate::sandbox::tier::TierSet;

    fn policies_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    /// A sandbox with the shipped tiers and no cgroups: enough to build Landlock rulesets.
    fn sandbox() -> Sandbox {
        let tiers = TierSet::load_dir(&policies_dir()).unwrap_or_else(|e| panic!("the shipped policies load: {e}"));
        Sandbox {
            tiers: Some(Arc::new(tiers)),
            cgroups: Mutex::new(Err("no cgroups in this test".into())),
            deadman: Mutex::new(None),
        }
    }

    /// Two entries of one binary (so one image): `a` and `b`, each as the test sets it.
    fn two_entries() -> (PluginSpec, PluginSpec) {
        let text = "[supervisor.sandbox]\nallow_unsandboxed = true\n\
                    [[plugin]]\nname = \"a\"\nbinary = \"/bin/true\"\ntier = \"none\"\ndeclared_name = \"x\"\n\
                    [[plugin]]\nname = \"b\"\nbinary = \"/bin/true\"\ntier = \"none\"\ndeclared_name = \"x\"\n";
        let mut specs = text.parse::<Config>().unwrap().specs().into_iter();
        (specs.next().unwrap(), specs.next().unwrap())
    }

    /// Which of `files` a child restricted by `ruleset` can open for reading, one bit each.
    fn readable_under(ruleset: &OwnedFd, files: &[&Path]) -> i32 {
        let paths: Vec<CString> = files.iter().map(|p| CString::new(p.as_os_str().as_bytes()).unwrap()).collect();
        // SAFETY: the child makes only raw, async-signal-safe syscalls on data prepared
        // before the fork.
        unsafe {
            crate::sandbox::landlock::exit_code_under(ruleset.as_raw_fd(), || {
                let mut bits = 0;
                for (i, p) in paths.iter().enumerate() {
                    let f = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if f >= 0 {
                        bits |= 1 << i;
                        libc::close(f);
                    }
                }
                bits
            })
        }
    }

    #[test]
    fn entries_sharing_an_image_each_get_the_landlock_rules_of_their_own_tier_and_data_dir() {
        let dirs = tempfile::tempdir().unwrap();
        let (a_dir, b_dir) = (dirs.path().join("a"), dirs.path().join("b"));
        for d in [&a_dir, &b_dir] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), "x").unwrap();
        }
        let (mut a, mut b) = two_entries();
        a.data_dir = Some(a_dir.clone());
        b.data_dir = Some(b_dir.clone());
        b.landlock_required = Some(false);
        let sandbox = sandbox();
        let (l1, l2) = (sandbox.tier("L1").unwrap(), sandbox.tier("L2").unwrap());
        // The image's grants: one for both entries, as the shared image holds them.
        let grants = ImageGrants::new(Vec::new(), Vec::new());
        let (a_rules, _) = sandbox.landlock(&a, l1, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        let (b_rules, _) = sandbox.landlock(&b, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        let (again, _) = sandbox.landlock(&a, l1, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        if host::landlock_abi() < 1 {
            assert!(a_rules.is_none() && b_rules.is_none(), "no Landlock here: no ruleset");
            return;
        }
        let (a_file, b_file) = (a_dir.join("f"), b_dir.join("f"));
        // /etc/localtime is on both tiers' read_only lists, /etc/hosts on L1's only.
        let files = [a_file.as_path(), b_file.as_path(), Path::new("/etc/localtime"), Path::new("/etc/hosts")];
        let present = |bit: i32, p: &str| if Path::new(p).exists() { bit } else { 0 };
        let (localtime, hosts) = (present(0b100, "/etc/localtime"), present(0b1000, "/etc/hosts"));
        let (want_a, want_b) = (0b01 | localtime | hosts, 0b10 | localtime);
        assert_eq!(
            readable_under(a_rules.as_ref().unwrap(), &files),
            want_a,
            "a (L1) reads its own dir and L1's paths"
        );
        assert_eq!(
            readable_under(b_rules.as_ref().unwrap(), &files),
            want_b,
            "b (L2) reads its own dir and L2's paths"
        );
        assert_eq!(readable_under(again.as_ref().unwrap(), &files), want_a, "a again: its own rules");
    }

    /// An image's grants of one library, `libx.so` in `dir`, replaced since: stale.
    fn stale_grants(dir: &Path) -> (Arc<ImageGrants>, PathBuf) {
        let lib = dir.join("libx.so");
        std::fs::write(&lib, "old").unwrap();
        let grants = Arc::new(ImageGrants::new(vec![lib.clone()], vec![(lib.clone(), Seen::now(&lib))]));
        let new = dir.join("libx.so.new");
        std::fs::write(&new, "new").unwrap();
        std::fs::rename(&new, &lib).unwrap();
        assert!(grants.stale());
        (grants, lib)
    }

    /// `path` as the loader finds it, needed by `required_by`.
    fn object(path: &Path, required_by: &Path) -> crate::integrity::LoadedObject {
        crate::integrity::LoadedObject {
            name: path.file_name().unwrap().to_owned(),
            required_by: required_by.to_path_buf(),
            path: path.to_path_buf(),
            canonical: path.to_path_buf(),
        }
    }

    /// A resolution of `lib` alone that takes `takes`, counted in `resolved`.
    fn slow_resolution(
        lib: PathBuf,
        takes: std::time::Duration,
        resolved: Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl FnOnce() -> Result<LoaderFiles, std::convert::Infallible> + Send + 'static {
        move || {
            resolved.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(takes);
            let stamps = vec![(lib.clone(), Seen::now(&lib))];
            Ok(LoaderFiles { libraries: vec![object(&lib, &lib)], stamps, ..LoaderFiles::default() })
        }
    }

    /// A start cancelled while its resolution runs (a stop, the supervisor shutting down)
    /// leaves the resolution to finish and keep what it found: the start waiting behind it
    /// resolved again beside it, on a thread of its own.
    #[test]
    fn a_start_cancelled_while_it_resolves_leaves_the_resolution_to_the_next() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (grants, lib) = stale_grants(dir.path());
        let resolved = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let outcome =
            rt.block_on(async {
                let first = tokio::spawn({
                    let (grants, lib, resolved) = (grants.clone(), lib.clone(), resolved.clone());
                    async move {
                        grants.refresh(slow_resolution(lib, std::time::Duration::from_millis(300), resolved)).await
                    }
                });
                while resolved.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                first.abort();
                assert!(first.await.unwrap_err().is_cancelled());
                grants.refresh(slow_resolution(lib, std::time::Duration::ZERO, resolved.clone())).await
            });
        assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}");
        assert_eq!(resolved.load(Ordering::SeqCst), 1, "resolved once: the cancelled start's resolution was kept");
        assert!(!grants.stale());
    }

    /// Starts of one image that find it stale together resolve it once, and those waiting
    /// for that hold no thread: each used to wait on a blocking-pool thread of its own, so
    /// 1,000 instances of one binary restarted after a library upgrade took the pool's 512.
    #[test]
    fn starts_finding_an_image_stale_together_resolve_it_once_on_one_thread() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (grants, lib) = stale_grants(dir.path());
        let threads = Arc::new(AtomicUsize::new(0));
        let started = threads.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .on_thread_start(move || {
                started.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let resolved = Arc::new(AtomicUsize::new(0));
        let outcomes = rt.block_on(async {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    let (grants, resolved, lib) = (grants.clone(), resolved.clone(), lib.clone());
                    // Long enough for every other start to find it under way.
                    let resolve = slow_resolution(lib, std::time::Duration::from_millis(100), resolved);
                    tokio::spawn(async move { grants.refresh(resolve).await })
                })
                .collect();
            let mut outcomes = Vec::new();
            for start in starts {
                outcomes.push(start.await.unwrap());
            }
            outcomes
        });
        assert!(outcomes.iter().all(|o| matches!(o, Ok(Ok(())))), "{outcomes:?}");
        assert_eq!(resolved.load(Ordering::SeqCst), 1, "resolved once among the starts");
        assert_eq!(threads.load(Ordering::SeqCst), 1, "one blocking thread, for the one resolution");
        assert!(!grants.stale());
    }

    /// A package upgrade or `ldconfig` replaces a library, the loader cache or a tier's
    /// read-only file by renaming a new file over it. A Landlock rule holds the inode it
    /// was made for, so a ruleset kept from before refused the new file: every later start
    /// of the plugin failed to load its libraries until the supervisor was restarted.
    #[test]
    fn a_granted_file_replaced_under_its_name_is_granted_again() {
        if host::landlock_abi() < 1 {
            eprintln!("skipped: no Landlock here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libx.so");
        std::fs::write(&lib, "old").unwrap();
        let (a, _) = two_entries();
        let sandbox = sandbox();
        let l2 = sandbox.tier("L2").unwrap();
        let stamp = |p: &Path| vec![(p.to_path_buf(), Seen::now(p))];
        let grants = ImageGrants::new(vec![lib.clone()], stamp(&lib));
        let (before, _) = sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(readable_under(before.as_ref().unwrap(), &[&lib]), 1, "granted when built");
        let new = dir.path().join("libx.so.new");
        std::fs::write(&new, "new").unwrap();
        std::fs::rename(&new, &lib).unwrap();
        assert!(grants.stale(), "the loader's files are to be resolved again");
        let (after, _) = sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(readable_under(after.as_ref().unwrap(), &[&lib]), 1, "the file now under the name is granted");
        assert_eq!(grants.rulesets.lock().unwrap().len(), 1, "the ruleset holding the replaced file was let go");
        // Resolved again, the new library needs another: granted from then on.
        let needed = dir.path().join("libneeded.so");
        std::fs::write(&needed, "needed").unwrap();
        let (before, _) = sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(readable_under(before.as_ref().unwrap(), &[&lib, &needed]), 0b01);
        let mut stamps = stamp(&lib);
        stamps.extend(stamp(&needed));
        let libraries = vec![object(&lib, &lib), object(&needed, &lib)];
        let resolved = LoaderFiles { libraries, stamps, ..LoaderFiles::default() };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(grants.refresh(move || Ok::<_, std::convert::Infallible>(resolved))).unwrap().unwrap();
        assert!(!grants.stale());
        let (renewed, _) = sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(readable_under(renewed.as_ref().unwrap(), &[&lib, &needed]), 0b11, "both granted");
        assert_eq!(grants.rulesets.lock().unwrap().len(), 1, "the ruleset for the list before was let go");
    }

    /// chown and chmod follow symbolic links, and the supervisor makes them as root: a
    /// data_dir whose last component is a link (planted by whoever can write the directory
    /// it sits in, e.g. the plugin owning an enclosing data_dir) handed the link's target,
    /// /etc say, to the plugin's uid with mode 0700.
    #[test]
    fn a_data_dir_that_is_a_symbolic_link_is_refused_and_its_target_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("data");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = prepare_data_dir(&link, 65534, 65534).expect_err("a data_dir that is a link is refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755), "the link's target kept its owner and mode");
        // A real directory is still made the plugin's own.
        let real = dir.path().join("real");
        prepare_data_dir(&real, 65534, 65534).unwrap();
        let meta = std::fs::metadata(&real).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (65534, 65534, 0o700));
        // Written with a trailing `/` or `/.`, the link is no last component the open
        // would refuse to follow: the start is refused all the same, as a config error.
        let (mut spec, _) = two_entries();
        for written in ["data/", "data/."] {
            spec.data_dir = Some(dir.path().join(written));
            let refused = match sandbox().confine(
                &spec,
                "a-0",
                &QuotaConfig::default(),
                &ImageGrants::new(Vec::new(), Vec::new()),
            ) {
                Err(ConfineError::Refused(why)) => why,
                Err(other) => panic!("{written}: refused as a failure to retry: {other:?}"),
                Ok(_) => panic!("{written}: a link was taken as the data_dir"),
            };
            assert_eq!(
                refused,
                format!("data_dir {}: it is a symbolic link; name the directory itself", link.display())
            );
            let meta = std::fs::metadata(&target).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755), "{written}: the link's target was given away");
        }
    }

    #[test]
    fn a_ruleset_is_built_once_per_set_of_settings_and_few_are_kept() {
        let dirs = tempfile::tempdir().unwrap();
        let (mut a, _) = two_entries();
        let sandbox = sandbox();
        let l2 = sandbox.tier("L2").unwrap();
        let grants = ImageGrants::new(Vec::new(), Vec::new());
        let kept = |g: &ImageGrants| g.rulesets.lock().unwrap().len();
        for _ in 0..3 {
            sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        }
        assert_eq!(kept(&grants), 1, "the same settings share one ruleset");
        for i in 0..RULESETS_KEPT + 4 {
            let dir = dirs.path().join(i.to_string());
            std::fs::create_dir(&dir).unwrap();
            a.data_dir = Some(dir);
            sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        }
        assert_eq!(kept(&grants), RULESETS_KEPT, "the oldest go beyond the limit");
        let newest = grants.rulesets.lock().unwrap()[0].0.write.clone();
        assert_eq!(newest, vec![dirs.path().join((RULESETS_KEPT + 3).to_string())]);
        // The same data directory removed and made again is another directory to Landlock:
        // a ruleset of its own, and the one holding the old directory is let go (it can
        // never match again).
        let again = dirs.path().join((RULESETS_KEPT + 3).to_string());
        let old_inodes = grants.rulesets.lock().unwrap()[0].0.write_inodes.clone();
        std::fs::remove_dir(&again).unwrap();
        std::fs::create_dir(&again).unwrap();
        sandbox.landlock(&a, l2, &grants).unwrap_or_else(|e| panic!("{e:?}"));
        let kept_now = grants.rulesets.lock().unwrap();
        assert_eq!(kept_now[0].0.write, vec![again.clone()]);
        assert_ne!(kept_now[0].0.write_inodes, old_inodes, "a ruleset for the new directory");
        assert_eq!(kept_now.iter().filter(|(k, _)| k.write == [again.clone()]).count(), 1, "the old one let go");
        assert_eq!(kept_now.len(), RULESETS_KEPT, "the other directories' rulesets kept");
    }

    /// A subtree that cannot be removed (here its root's rmdir is refused EBUSY for good)
    /// is said and returned once the teardown gives up, naming the cgroup: a daemon that
    /// logged only "stopped" left it for the next start to be refused or nested in.
    #[tokio::test(start_paused = true)]
    async fn a_subtree_the_teardown_cannot_remove_is_named_when_it_gives_up() {
        use crate::sandbox::cgroup::test_hosts::{create, hybrid};
        let (fs, layout) = hybrid();
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        let root: Vec<PathBuf> = tree.root().dirs().map(|(_, d)| d.to_path_buf()).collect();
        fs.fail_on(&root[0].display().to_string(), libc::EBUSY);
        let sandbox = Sandbox::over(tree);
        let began = tokio::time::Instant::now();
        match sandbox.teardown().await {
            Err(SubtreeLeft::Busy { cgroup }) => assert_eq!(cgroup, root[0]),
            other => panic!("expected the busy root named, got {other:?}"),
        }
        assert!(began.elapsed() >= STALE_WAIT, "gave up after {:?}", began.elapsed());
        fs.clear_failures();
        assert!(sandbox.teardown().await.is_ok(), "the subtree goes once it can");
        assert!(root.iter().all(|d| !fs.is_cgroup(&d.display().to_string())));
    }
}
