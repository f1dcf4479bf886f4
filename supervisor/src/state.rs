//! Desired state changed at run time (quotas set with `supervisorctl quota`, plugins
//! stopped with `supervisorctl stop`), kept in one JSON file written atomically, so it
//! survives restarts and a crash mid-write never leaves half a file.
//!
//! The file holds the config text of rollouts' stable revisions, secrets and all, so it
//! is readable by its owner alone, and a directory the supervisor makes for it too. One
//! supervisor at a time keeps its state in a directory: each rewrites the whole file,
//! and forgets (with their kept binaries) the rollouts of plugins its config does not
//! name, so a second one would undo the first's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::QuotaConfig;
use crate::rollout::saved::SavedRollout;

const FILE: &str = "state.json";
/// Locked (`flock`) by the supervisor whose state the directory holds, and holding its pid.
const LOCK_FILE: &str = "lock";
/// What the state file, the lock and the directories the supervisor makes for them may
/// be: its owner's alone.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// What is persisted.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// Quota overrides per plugin name. Entries for plugins no longer in
    /// the config are kept, not dropped: the config may come back.
    #[serde(default)]
    pub quotas: BTreeMap<String, SavedQuota>,
    /// Plugins the operator stopped and has not started since: not started at the next
    /// start, whatever `autostart` says. Kept for plugins no longer in the config, as
    /// quotas are. Left out of the file while empty, so that a file without any still
    /// loads in a daemon from before this field (it refuses fields it does not know).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub stopped: BTreeSet<String>,
    /// Canary rollouts under way or rolled back, per plugin, with the stable revision
    /// they left: the next start brings the plugin back on it (an interrupted rollout; a
    /// rolled-back one whose canary the file still names), and `update` does not try a
    /// rolled-back canary again. Unlike quotas and stops, dropped at start for a plugin the
    /// config no longer has: it keeps a revision of an entry that is gone, which a plugin of
    /// that name added back must not inherit. Left out while empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollouts: BTreeMap<String, SavedRollout>,
}

/// A plugin's persisted quota change: as this version reads it, or as it was written when
/// it does not read (a value a newer check refuses, such as a CPU share an older version
/// kept as "0%"; a hand edit). One that does not read costs only that plugin's change,
/// not the start: it is not applied (see `quotas::restore`), and it stays in the file, for
/// the operator, until `quota NAME ...` replaces it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SavedQuota {
    Read(QuotaConfig),
    Unread(serde_json::Value),
}

/// Why the state cannot be read or written. Each message names the file or
/// directory and says its cause once (the cause is part of the message,
/// not a separate `source`, so printing the chain does not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state_dir {}: {cause}", path.display())]
    Dir { path: PathBuf, cause: std::io::Error },
    #[error("state file {}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("state file {}: line {line}: {message} (fix or move the file; it is not overwritten)", path.display())]
    Corrupt { path: PathBuf, line: usize, message: String },
    #[error(
        "state_dir {}: in use by a running plugin-supervisor ({}); a second one needs a state_dir of its own",
        dir.display(),
        pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"))
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("state_dir {}: this supervisor has shut down and no longer holds it; the change was not saved", dir.display())]
    Released { dir: PathBuf },
}

/// The state file and its contents.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    data: Mutex<Persisted>,
    /// The directory's lock, held until `release` or as long as the store: the kernel
    /// lets it go when the holder dies, so a crash never leaves the directory locked.
    /// Nothing is written once it is let go: another supervisor may hold it by then.
    held: Mutex<Option<std::fs::File>>,
}

impl StateStore {
    /// Opens (or starts) the state in `dir`, and holds it for as long as the store lives.
    /// A file that does not parse is an error, never silently replaced; so is a directory
    /// the first change could not be saved in, found now rather than at that change, and
    /// one whose state another live store holds.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let unusable = |cause| StateError::Dir { path: dir.to_owned(), cause };
        make_dir(dir).map_err(unusable)?;
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
            .map_err(|errno| unusable(std::io::Error::from(errno)))?;
        let lock = lock(dir)?;
        let path = dir.join(FILE);
        let data = match std::fs::File::open(&path) {
            Ok(mut file) => {
                let io = |cause| StateError::Io { path: path.clone(), cause };
                // Written world-readable by a version before the file kept secrets from
                // other users: not left so until the next change.
                let mode = file.metadata().map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    file.set_permissions(std::fs::Permissions::from_mode(mode & FILE_MODE)).map_err(io)?;
                }
                let mut text = String::new();
                std::io::Read::read_to_string(&mut file, &mut text).map_err(io)?;
                serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    line: e.line(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(cause) => return Err(StateError::Io { path, cause }),
        };
        Ok(Self { path, data: Mutex::new(data), held: Mutex::new(Some(lock)) })
    }

    /// Lets the directory go (a supervisor that shut down, whose host may start another
    /// on it before dropping this one): later changes are refused, not written.
    pub fn release(&self) {
        drop(self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    }

    /// Runs `f` (a change to what else the directory keeps, such as a kept binary) while
    /// the directory is still held, as the file's writes are.
    pub fn while_held<T>(&self, f: impl FnOnce() -> T) -> Result<T, StateError> {
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_none() {
            return Err(StateError::Released { dir: self.dir().to_owned() });
        }
        Ok(f())
    }

    /// Writes `next` as the file, while the directory is still held (the lock on `held`
    /// is kept across the write, so a release waits for a write under way).
    fn write(&self, next: &Persisted) -> Result<(), StateError> {
        self.while_held(|| write_atomically(&self.path, next))?
    }

    /// Why `plugin`'s persisted quota change does not read, if it does not: it is not
    /// applied, and stays in the file.
    pub fn unreadable_quota(&self, plugin: &str) -> Option<String> {
        let why = match self.lock().quotas.get(plugin)? {
            SavedQuota::Read(_) => return None,
            SavedQuota::Unread(v) => QuotaConfig::deserialize(v).err().map_or_else(String::new, |e| e.to_string()),
        };
        Some(format!("state file {}: quotas.{plugin}: {why}", self.path.display()))
    }

    /// `plugin`'s persisted quota change, or none (also when it does not read).
    pub fn quota(&self, plugin: &str) -> QuotaConfig {
        match self.lock().quotas.get(plugin) {
            Some(SavedQuota::Read(q)) => q.clone(),
            Some(SavedQuota::Unread(_)) | None => QuotaConfig::default(),
        }
    }

    /// Replaces a plugin's overrides and writes the file before returning.
    pub fn set_quota(&self, plugin: &str, q: QuotaConfig) -> Result<(), StateError> {
        let mut data = self.data.lock().map_err(|_| StateError::Io {
            path: self.path.clone(),
            cause: std::io::Error::other("state lock poisoned"),
        })?;
        let mut next = data.clone();
        if q == QuotaConfig::default() {
            next.quotas.remove(plugin);
        } else {
            next.quotas.insert(plugin.to_owned(), SavedQuota::Read(q));
        }
        self.write(&next)?;
        *data = next;
        Ok(())
    }

    /// Whether the operator stopped `plugin` and has not started it since.
    pub fn stopped(&self, plugin: &str) -> bool {
        self.lock().stopped.contains(plugin)
    }

    /// Records that the operator stopped `plugin` (or started it again), and runs `issue`,
    /// the command itself, under the same lock: commands racing each other then leave the
    /// file saying what was done last. The file is written first (a crash in between
    /// errs on the side of what the operator asked for), and only when this changes it;
    /// `issue` runs even when the write fails. What `issue` returned, and whether the
    /// change was saved.
    pub fn set_stopped<T>(
        &self,
        plugin: &str,
        stopped: bool,
        issue: impl FnOnce() -> T,
    ) -> (T, Result<(), StateError>) {
        let mut data = self.lock();
        if data.stopped.contains(plugin) == stopped {
            return (issue(), Ok(()));
        }
        let mut next = data.clone();
        if stopped {
            next.stopped.insert(plugin.to_owned());
        } else {
            next.stopped.remove(plugin);
        }
        let saved = self.write(&next);
        if saved.is_ok() {
            *data = next;
        }
        (issue(), saved)
    }

    /// Forgets all that is kept for `plugin` (removed from the config by `update`): a
    /// plugin of the same name added later starts from its config entry.
    pub fn forget(&self, plugin: &str) -> Result<(), StateError> {
        self.change(|next| {
            next.quotas.remove(plugin);
            next.stopped.remove(plugin);
            next.rollouts.remove(plugin);
        })
    }

    /// The directory the state is kept in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The rollout of `plugin` kept (under way, or rolled back), if any.
    pub fn rollout(&self, plugin: &str) -> Option<SavedRollout> {
        self.lock().rollouts.get(plugin).cloned()
    }

    /// Every kept rollout, by plugin name.
    pub fn rollouts(&self) -> Vec<(String, SavedRollout)> {
        self.lock().rollouts.iter().map(|(name, saved)| (name.clone(), saved.clone())).collect()
    }

    /// Every kept rollout's copy of its stable binary.
    pub fn rollout_copies(&self) -> Vec<PathBuf> {
        self.lock().rollouts.values().filter_map(|r| r.stable_copy.clone()).collect()
    }

    /// Keeps (or, with None, forgets) `plugin`'s rollout.
    pub fn set_rollout(&self, plugin: &str, saved: Option<SavedRollout>) -> Result<(), StateError> {
        self.change(|next| match saved {
            Some(s) => drop(next.rollouts.insert(plugin.to_owned(), s)),
            None => drop(next.rollouts.remove(plugin)),
        })
    }

    /// Applies `f` to a copy, writes the copy when it differs, and only then keeps it.
    fn change(&self, f: impl FnOnce(&mut Persisted)) -> Result<(), StateError> {
        let mut data = self.lock();
        let mut next = data.clone();
        f(&mut next);
        if next == *data {
            return Ok(());
        }
        self.write(&next)?;
        *data = next;
        Ok(())
    }

    // The data is replaced whole, and only after its file was written: a panic elsewhere
    // while the lock was held cannot leave it half-changed, so a poisoned lock is still
    // good to use (and a stop must go ahead whatever happened to a quota change).
    fn lock(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.data.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a missing parent of a state_dir is made as.
const PARENT_MODE: u32 = 0o755;

/// Makes `dir` when missing, for its owner alone, and what it lies in as any directory
/// (a parent shared with a plugin's data_dir must stay passable to the plugin's uid); one
/// that exists, the operator's, is left as it is.
pub(crate) fn make_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        make_parents(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        made => made,
    }
}

/// Makes `dir` and what it lies in, where missing, passable to all and writable by their
/// owner alone whatever the umask (mkdir's mode is masked by it: each one made is set
/// after); directories that exist are left as they are.
fn make_parents(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(PARENT_MODE))?,
            // Made meanwhile by someone else: theirs, as it is.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Takes the lock of the state in `dir`, or says who holds it.
fn lock(dir: &Path) -> Result<std::fs::File, StateError> {
    let path = dir.join(LOCK_FILE);
    let io = |cause| StateError::Io { path: path.clone(), cause };
    // Never removed: a lock file removed while another opened it would let two hold
    // locks on two files of one name.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let cause = std::io::Error::last_os_error();
        if cause.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(cause));
        }
        // Empty while the holder has yet to write it.
        let pid = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok());
        return Err(StateError::InUse { dir: dir.to_owned(), pid });
    }
    file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id())).map_err(io)?;
    Ok(file)
}

/// Temp file (its owner's alone from its first byte), fsync, rename, fsync the
/// directory: after a crash the file is either the old or the new one.
fn write_atomically(path: &Path, data: &Persisted) -> Result<(), StateError> {
    let io = |cause| StateError::Io { path: path.to_owned(), cause };
    let dir = path.parent().unwrap_or(Path::new("."));
    make_dir(dir).map_err(io)?;
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(data).map_err(|e| io(std::io::Error::other(e)))?;
    // One left by a crash of a process with this pid keeps its mode when truncated:
    // made anew, the file has ours.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp).map_err(io)?;
    f.write_all(&text).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::ByteSize;

    #[test]
    fn quotas_survive_reopening_and_defaults_remove_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let q = QuotaConfig { memory_max: Some(ByteSize(256 << 20)), ..Default::default() };
        s.set_quota("echo", q.clone()).unwrap();
        drop(s);
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(again.quota("echo"), q);
        again.set_quota("echo", QuotaConfig::default()).unwrap();
        drop(again);
        assert_eq!(StateStore::open(dir.path()).unwrap().quota("echo"), QuotaConfig::default());
        // Nothing but the state file and the lock is left in the directory.
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, [std::ffi::OsString::from("lock"), std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn stopped_plugins_survive_reopening_and_a_start_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let (issued, saved) = s.set_stopped("echo", true, || "stop issued");
        assert_eq!((issued, saved.is_ok()), ("stop issued", true));
        s.set_stopped("zoo", true, || ()).1.unwrap();
        drop(s);
        let again = StateStore::open(dir.path()).unwrap();
        assert!(again.stopped("echo") && again.stopped("zoo") && !again.stopped("other"));
        // Quotas and stops live side by side in the one file.
        let q = QuotaConfig { pids_max: Some(64), ..Default::default() };
        again.set_quota("echo", q.clone()).unwrap();
        again.set_stopped("echo", false, || ()).1.unwrap();
        drop(again);
        let third = StateStore::open(dir.path()).unwrap();
        assert_eq!((third.stopped("echo"), third.stopped("zoo"), third.quota("echo")), (false, true, q));
        // With none stopped, the file is as a daemon without stops wrote it.
        third.set_stopped("zoo", false, || ()).1.unwrap();
        let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
        assert!(!text.contains("stopped"), "{text}");
    }

    #[test]
    fn a_file_from_before_stops_were_kept_loads_with_none_stopped() {
        let dir = tempfile::tempdir().unwrap();
        // As the previous version wrote it: quotas only.
        let old = "{\n  \"quotas\": {\n    \"echo\": {\n      \"memory_max\": \"256M\",\n      \"pids_max\": 64\n    }\n  }\n}";
        std::fs::write(dir.path().join("state.json"), old).unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        assert!(!s.stopped("echo"));
        let q = QuotaConfig { memory_max: Some(ByteSize(256 << 20)), pids_max: Some(64), ..Default::default() };
        assert_eq!(s.quota("echo"), q);
        drop(s);
        // A field no version wrote is still refused.
        std::fs::write(dir.path().join("state.json"), "{\"quotas\": {}, \"paused\": []}").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unknown field `paused`"), "{err}");
    }

    #[test]
    fn a_stop_that_cannot_be_saved_is_still_issued_and_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let s = StateStore::open(&state_dir).unwrap();
        // The directory is gone and a file has its name: nothing can be written there.
        std::fs::remove_dir_all(&state_dir).unwrap();
        std::fs::write(&state_dir, "").unwrap();
        let mut issued = false;
        let ((), saved) = s.set_stopped("echo", true, || issued = true);
        let err = saved.unwrap_err();
        assert!(matches!(&err, StateError::Io { path, .. } if path == &state_dir.join("state.json")), "{err:?}");
        assert!(issued, "the command goes ahead");
        assert!(!s.stopped("echo"), "what was not saved is not claimed either");
    }

    #[test]
    fn forgetting_a_plugin_drops_its_quotas_and_its_stop() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.set_quota("echo", QuotaConfig { pids_max: Some(64), ..Default::default() }).unwrap();
        s.set_stopped("echo", true, || ()).1.unwrap();
        s.set_stopped("zoo", true, || ()).1.unwrap();
        s.forget("echo").unwrap();
        drop(s);
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            (again.quota("echo"), again.stopped("echo"), again.stopped("zoo")),
            (QuotaConfig::default(), false, true)
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\n  \"quotas\": [oops\n").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json: line 2"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"quotas\": [oops\n");
    }

    /// What an older version wrote for `quota --cpu 0.001%` (kept as "0%"), beside a
    /// readable entry: the file still opens, the unreadable entry is told with the file
    /// and the plugin and not applied, and it stays in the file, as written, across
    /// writes of other changes until a change of that plugin's quotas replaces it.
    #[test]
    fn a_quota_entry_that_no_longer_reads_costs_only_that_plugins_change() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\n  \"quotas\": {\n    \"echo\": {\"cpu\": \"0%\"},\n    \"zoo\": {\"pids_max\": 64}\n  },\n  \"stopped\": [\"zoo\"]\n}\n";
        std::fs::write(dir.path().join("state.json"), text).unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.quota("echo"), QuotaConfig::default());
        assert_eq!(s.quota("zoo"), QuotaConfig { pids_max: Some(64), ..Default::default() });
        assert!(s.stopped("zoo"));
        let why = s.unreadable_quota("echo").unwrap();
        assert!(why.contains("state.json: quotas.echo: ") && why.contains("\"0%\""), "{why}");
        assert_eq!(s.unreadable_quota("zoo"), None);
        assert_eq!(s.unreadable_quota("other"), None);
        s.set_stopped("zoo", false, || ()).1.unwrap();
        drop(s);
        let again = StateStore::open(dir.path()).unwrap();
        assert!(again.unreadable_quota("echo").unwrap().contains("\"0%\""), "kept across another change");
        assert!(!again.stopped("zoo"));
        let q = QuotaConfig { pids_max: Some(8), ..Default::default() };
        again.set_quota("echo", q.clone()).unwrap();
        drop(again);
        let last = StateStore::open(dir.path()).unwrap();
        assert_eq!((last.quota("echo"), last.unreadable_quota("echo")), (q, None), "replaced by the operator's change");
    }

    #[test]
    fn anything_but_a_quota_entry_that_does_not_read_is_still_the_files_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\n  \"stoped\": [],\n  \"quotas\": {\"echo\": {\"cpu\": \"0%\"}}\n}\n";
        std::fs::write(dir.path().join("state.json"), text).unwrap();
        let err = StateStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json: line 2: unknown field `stoped`"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_text_is_named_and_its_cause_said_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"\xff\xfe{}").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StateError::Io { .. }), "{err:?}");
        assert!(text.starts_with("state file ") && text.contains("state.json: "), "{text}");
        assert_eq!(text.matches("valid UTF-8").count(), 1, "{text}");
        assert!(std::error::Error::source(&err).is_none(), "the cause is in the message, not repeated as a source");
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// The file keeps the config text of rollouts' stable revisions, secrets and all: it
    /// was written 0644 (the umask's) in a 0755 directory, for every local user to read.
    #[test]
    fn the_state_file_and_a_directory_made_for_it_are_their_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("made").join("state");
        let s = StateStore::open(&state_dir).unwrap();
        assert_eq!(mode(&state_dir), 0o700, "a state_dir the supervisor made");
        // What it lies in may hold a plugin's data_dir too: passable to all.
        assert_eq!(mode(&dir.path().join("made")), 0o755, "not its owner's alone");
        s.set_stopped("echo", true, || ()).1.unwrap();
        assert_eq!(mode(&state_dir.join("state.json")), 0o600);
        assert_eq!(mode(&state_dir.join("lock")), 0o600);
        drop(s);
        // The operator's directory is left as it is; a file an earlier version wrote
        // for all to read is its owner's alone from the open on.
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(theirs.join("state.json"), "{\"stopped\": [\"echo\"]}").unwrap();
        std::fs::set_permissions(theirs.join("state.json"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = StateStore::open(&theirs).unwrap();
        assert!(s.stopped("echo"));
        assert_eq!((mode(&theirs), mode(&theirs.join("state.json"))), (0o750, 0o600));
    }

    #[test]
    fn a_second_store_on_a_directory_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StateError::InUse { dir: d, pid: Some(p) } if d == dir.path() && *p == std::process::id()),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "state_dir {}: in use by a running plugin-supervisor (pid {}); a second one needs a state_dir of its own",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(first);
        let again = StateStore::open(dir.path()).expect("the lock went with the first store");
        again.set_stopped("echo", true, || ()).1.unwrap();
    }

    #[test]
    fn a_released_store_lets_another_take_the_directory_and_saves_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        first.set_stopped("echo", true, || ()).1.unwrap();
        first.release();
        let second = StateStore::open(dir.path()).expect("released: the directory is free");
        assert!(second.stopped("echo"));
        // The first one's later changes would overwrite the second's file: refused, and
        // the command itself still runs.
        let (ran, saved) = first.set_stopped("echo", false, || "stopped");
        assert_eq!(ran, "stopped");
        let err = saved.unwrap_err();
        assert!(matches!(&err, StateError::Released { dir: d } if d == dir.path()), "{err:?}");
        assert!(err.to_string().contains("has shut down"), "{err}");
        assert!(matches!(first.forget("echo"), Err(StateError::Released { .. })));
        assert!(matches!(first.while_held(|| unreachable!("run after the release")), Err(StateError::Released { .. })));
        assert!(matches!(
            first.set_quota("echo", QuotaConfig { pids_max: Some(10), ..Default::default() }),
            Err(StateError::Released { .. })
        ));
        drop(first);
        let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
        assert!(text.contains("echo") && !text.contains("pids_max"), "{text}");
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let err = StateStore::open(&file).unwrap_err();
        assert!(matches!(err, StateError::Dir { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("state_dir {}: ", file.display())), "{err}");
    }
}
