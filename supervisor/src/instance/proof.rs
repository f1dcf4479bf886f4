//! The real launcher's teardown of an ended instance and its proof: what is left in its
//! cgroup is listed, killed and removed; the supervisor's tasks for it end and its
//! descriptors close (checked in `/proc/self/fd`, and the pidfd by ownership); then the
//! host is searched for what the plugin's uid left: processes outside every instance of
//! the plugin, and IPC objects, files in the directories every uid may write to and POSIX
//! message queues once nothing of the plugin runs.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::launcher::{Others, OthersNow};
use crate::observe::events::EventBus;
use crate::observe::teardown::{Done, Leftover, Verdict};
use crate::sandbox::cgroup::{self, Removal};
use crate::sandbox::leftovers::files::{self, Place};
use crate::sandbox::leftovers::held::{self, Held};
use crate::sandbox::leftovers::retry::Retries;
use crate::sandbox::leftovers::{ipc, mqueue, procs};
use crate::sandbox::pidfd;

/// How long the supervisor's own tasks for an ended instance get to finish on their own
/// (the output readers reach the end of the pipes) before they are ended.
const TASKS_GRACE: Duration = Duration::from_millis(250);
/// How long the stragglers in a killed cgroup get to exit before its removal is retried
/// in the background.
const CGROUP_GRACE: Duration = Duration::from_secs(5);
/// How long a closed descriptor may take to be seen closed (a task being dropped).
const HELD_GRACE: Duration = Duration::from_millis(500);

/// Whose instance a process is, as its teardown needs to know.
#[derive(Clone)]
pub(super) struct Owner {
    pub plugin: String,
    pub instance: String,
    pub uid: u32,
    /// Set with `user`/`uid`: an account the host may use too, whose other processes and
    /// IPC objects are not the plugin's to remove.
    pub uid_shared: bool,
    pub events: Arc<EventBus>,
    pub retries: Arc<Retries>,
    /// The supervisor's subtree, when the daemon moved itself into it.
    pub own_subtree: Option<String>,
    /// Its seccomp filter lets `mq_open` through (or it has none), so it may have made
    /// POSIX message queues.
    pub queues_possible: bool,
    /// Its data directory, owned by its uid and maybe at the top of `/tmp` or `/var/tmp`:
    /// its own to keep, never a leftover.
    pub data_dir: Option<PathBuf>,
}

/// What the launcher kept of an ended instance, handed to its teardown.
pub(super) struct Parts {
    pub cgroup: Option<Arc<cgroup::Instance>>,
    /// The reaper, the seccomp listener, the output readers, the host service.
    pub tasks: Vec<JoinHandle<()>>,
    pub held: Vec<Held>,
    pub pidfd: Arc<AsyncFd<OwnedFd>>,
    pub owner: Owner,
}

/// Everything after an instance's main process ended, and the verdict on it.
pub(super) async fn teardown(parts: Parts, others: OthersNow) -> Verdict {
    let began = Instant::now();
    let mut verdict = Verdict::default();
    let Parts { cgroup, tasks, held, pidfd, owner } = parts;
    match &cgroup {
        Some(cg) => empty_cgroup(cg, &owner, &mut verdict).await,
        None => verdict.unchecked.push("what it forked: it ran without a cgroup".into()),
    }
    end_tasks(tasks).await;
    // Every task that held the pidfd is gone: this is the last handle, or something of
    // the supervisor still keeps it.
    if Arc::strong_count(&pidfd) > 1 {
        verdict.add(Leftover::Held { what: "pidfd" }, Done::LeftAlone("still in use inside the supervisor".into()));
    }
    drop(pidfd);
    drop(cgroup);
    check_held(held, &mut verdict).await;
    // Asked now, not at the end's beginning: an instance may have started since.
    let others = others();
    match tokio::task::spawn_blocking(move || sweep_uid(&owner, others)).await {
        Ok(v) => verdict.merge(v),
        Err(e) => verdict.unchecked.push(format!("its uid: the search panicked: {e}")),
    }
    verdict.took = began.elapsed();
    verdict
}

/// Lists what is left in the instance's cgroup (whatever is there once the main process
/// has ended outlived it), kills it and removes the cgroup, retried in the background if it
/// stays busy.
async fn empty_cgroup(cg: &Arc<cgroup::Instance>, owner: &Owner, verdict: &mut Verdict) {
    let outlived: Vec<(i32, String)> = match cg.procs() {
        Ok(pids) => pids
            .into_iter()
            .map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                // The process names itself: escaped, it cannot forge a line of the events,
                // the log or `status`, nor move the operator's terminal.
                (pid as i32, crate::observe::forward::clean(comm.trim_end()))
            })
            .collect(),
        Err(e) => {
            verdict.unchecked.push(format!("what is left in its cgroup: {e}"));
            Vec::new()
        }
    };
    let killed = cg.kill();
    let deadline = tokio::time::Instant::now() + CGROUP_GRACE;
    let removal = loop {
        match cg.try_remove() {
            Ok(Removal::Pending { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other,
        }
    };
    let done = match (&killed, &removal) {
        (_, Ok(Removal::Removed)) => Done::Killed,
        (Err(e), _) => Done::LeftAlone(format!("the kill failed: {e}").into()),
        (Ok(()), _) => Done::Retrying("its cgroup is not empty yet".into()),
    };
    for (pid, comm) in outlived {
        verdict.add(Leftover::Outlived { pid, comm }, done.clone());
    }
    if matches!(removal, Ok(Removal::Removed)) {
        return;
    }
    let why = match removal {
        Ok(Removal::Pending { cgroup }) => format!("{} still busy after {CGROUP_GRACE:?}", cgroup.display()),
        Err(e) => e.to_string(),
        Ok(Removal::Removed) => String::new(),
    };
    tracing::warn!(plugin = %owner.plugin, instance = %owner.instance, %why, "instance cgroup not removed; retried in the background");
    let path = cg.cgroups().dirs().map(|(_, d)| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let done = match owner.retries.push(&owner.plugin, &owner.instance, cg.clone(), owner.events.clone()) {
        Ok(()) => Done::Retrying(why),
        Err(e) => Done::LeftAlone(e.to_string().into()),
    };
    verdict.add(Leftover::Cgroup { path }, done);
}

/// Lets the instance's tasks finish on their own for a moment, then ends the rest; returns
/// once every one is gone, and with it what it held.
async fn end_tasks(tasks: Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + TASKS_GRACE;
    while tasks.iter().any(|t| !t.is_finished()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Proves `held` closed: no descriptor of the daemon refers to them (read off the
/// runtime's thread; a descriptor being dropped gets a moment).
async fn check_held(held: Vec<Held>, verdict: &mut Verdict) {
    let deadline = Instant::now() + HELD_GRACE;
    let mut open = held;
    loop {
        let asked = open.clone();
        let fds = Path::new("/proc/self/fd");
        match tokio::task::spawn_blocking(move || held::still_open(fds, &asked)).await {
            Ok(Ok(still)) => open = still,
            Ok(Err(e)) => {
                verdict.unchecked.push(format!("its descriptors: /proc/self/fd: {e}"));
                return;
            }
            Err(e) => {
                verdict.unchecked.push(format!("its descriptors: the check panicked: {e}"));
                return;
            }
        }
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for h in open {
        verdict.add(Leftover::Held { what: h.what }, Done::LeftAlone("still in use inside the supervisor".into()));
    }
}

/// What else runs or is kept under the plugin's uid.
///
/// Processes of that uid outside every instance leaf of the plugin (of any supervisor) are
/// strays: killed when they sit in the daemon's own cgroup inside its subtree (forked by an
/// instance that had no cgroup), reported otherwise. IPC objects, files at the top of the
/// directories every uid may write to and POSIX message queues of the uid are listed
/// first and removed only when no other instance of the plugin is alive and no process of
/// the uid runs at all (listing first means one a process makes meanwhile is not
/// touched). A uid shared with the host (`user`/`uid`) is not searched.
fn sweep_uid(owner: &Owner, others: Others) -> Verdict {
    let mut v = Verdict::default();
    if owner.uid_shared {
        v.unchecked.push(format!("uid {}: set with user/uid, it may be the host's too", owner.uid));
        return v;
    }
    let objects = ipc::of_uid(Path::new("/proc/sysvipc"), owner.uid);
    let account = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner.uid)) {
        Ok(found) => found.map(|a| a.name),
        // Not knowing is not "no account": its files are left unsearched.
        Err(e) => Some(format!("unknown (the account lookup failed: {e})")),
    };
    // SAFETY: geteuid has no preconditions.
    let files = if owner.uid == unsafe { libc::geteuid() } {
        // The supervisor's own files (its sockets, its state) are never a plugin's leftovers.
        v.unchecked.push(format!("files of its uid: uid {} is the supervisor's own", owner.uid));
        Vec::new()
    } else if let Some(account) = account {
        // A uid_range reaching into the host's accounts: their files are not the plugin's.
        v.unchecked.push(format!("files of its uid: uid {} is the account {account:?}'s", owner.uid));
        Vec::new()
    } else if others.live > 0 {
        // Nothing would be removed: not worth a listing of /tmp at every teardown.
        v.unchecked.push(format!("files of its uid: {} other instance(s) of the plugin still run as it", others.live));
        Vec::new()
    } else {
        let found = files_of_uid(&Places::host(owner.queues_possible), owner.uid, &mut v.unchecked);
        not_holding(found, owner.data_dir.as_deref())
    };
    let running = match procs::of_uid(Path::new("/proc"), owner.uid) {
        Ok(p) => p,
        Err(e) => {
            v.unchecked.push(format!("processes of its uid: /proc: {e}"));
            return v;
        }
    };
    if others.uncgrouped > 0 {
        v.unchecked.push("processes of its uid: another instance runs without a cgroup".into());
    } else {
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let ours = owner.own_subtree.as_ref().is_some_and(|name| mine.contains(&format!("/{name}/")));
        for p in running.iter().filter(|p| !p.in_instance_of(&owner.plugin)) {
            let done = if ours && p.cgroup == mine {
                kill_stray(p, owner.uid)
            } else {
                Done::LeftAlone("not in this supervisor's cgroups".into())
            };
            v.add(Leftover::Stray { pid: p.pid, comm: p.comm.clone() }, done);
        }
    }
    let busy = if others.live > 0 {
        Some(format!("{} other instance(s) of the plugin still run as it", others.live))
    } else if !running.is_empty() {
        Some(format!("{} process(es) of the uid still run", running.len()))
    } else {
        None
    };
    if !objects.is_empty() {
        match &busy {
            Some(why) => v.unchecked.push(format!("IPC objects of its uid: {why}")),
            None => {
                for obj in objects {
                    let done = match ipc::remove(obj) {
                        Ok(()) => Done::Removed,
                        Err(e) => Done::LeftAlone(format!("IPC_RMID failed: {e}").into()),
                    };
                    v.add(Leftover::Ipc(obj), done);
                }
            }
        }
    }
    remove_files(files, owner.uid, busy.as_deref(), &mut v);
    v
}

/// Where files of a plugin's uid are looked for.
struct Places {
    dirs: Vec<(PathBuf, Place)>,
    /// The queues' directory, when an `mqueue` file system is mounted there; else why
    /// they cannot be seen. None when the plugin's filter lets no `mq_open` through (no
    /// shipped tier does): it cannot have made one, and its verdict says nothing of them.
    mqueue: Option<Result<PathBuf, String>>,
}

impl Places {
    fn host(queues_possible: bool) -> Self {
        let dirs = files::SHARED.iter().map(|(dir, place)| (PathBuf::from(dir), *place)).collect();
        let mqueue = queues_possible.then(|| match mqueue::host_mounted() {
            Ok(true) => Ok(PathBuf::from(mqueue::DIR)),
            Ok(false) => Err(format!("{} is not mounted", mqueue::DIR)),
            Err(e) => Err(format!("/proc/self/mountinfo: {e}")),
        });
        Places { dirs, mqueue }
    }
}

/// The entries of `uid` in `places`; a directory that cannot be read, and message queues
/// that cannot be seen, are said not checked rather than clean.
fn files_of_uid(places: &Places, uid: u32, unchecked: &mut Vec<String>) -> Vec<files::Entry> {
    let mut found = Vec::new();
    let queues = match &places.mqueue {
        Some(Ok(dir)) => Some((dir.clone(), Place::Mqueue)),
        Some(Err(why)) => {
            unchecked.push(format!("POSIX message queues of its uid: {why}"));
            None
        }
        None => None,
    };
    for (dir, place) in places.dirs.iter().cloned().chain(queues) {
        match files::of_uid(&dir, place, uid) {
            Ok(entries) => found.extend(entries),
            Err(e) => unchecked.push(format!("files of its uid: {}: {e}", dir.display())),
        }
    }
    found
}

/// `found` without the data directory and what holds it: a `data_dir` such as
/// `/var/tmp/zoo` is the plugin's uid's, at the top of a shared directory, and kept.
fn not_holding(found: Vec<files::Entry>, data_dir: Option<&Path>) -> Vec<files::Entry> {
    match data_dir {
        Some(keep) => found.into_iter().filter(|e| !keep.starts_with(&e.path)).collect(),
        None => found,
    }
}

/// Removes `found` unless something of the uid may still use them (`busy` says what).
fn remove_files(found: Vec<files::Entry>, uid: u32, busy: Option<&str>, v: &mut Verdict) {
    if found.is_empty() {
        return;
    }
    if let Some(why) = busy {
        v.unchecked.push(format!("files of its uid: {why}"));
        return;
    }
    for entry in found {
        // A directory may be a data directory of the plugin's (another revision's, or one
        // named through a link or another path): named, never removed.
        let done = if entry.dir {
            Done::LeftAlone("a directory: not removed, it may hold what the plugin keeps".into())
        } else {
            match files::remove(&entry, uid) {
                Ok(()) => Done::Removed,
                Err(e) => Done::LeftAlone(format!("removing it failed: {e}").into()),
            }
        };
        v.add(Leftover::File(entry), done);
    }
}

/// Kills a stray through a pidfd opened first, after checking that the pid still names a
/// process of `uid` in the same cgroup: a pid reused since the scan is left alone.
fn kill_stray(p: &procs::Proc, uid: u32) -> Done {
    let fd = match pidfd::open(p.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Done::Killed,
        Err(_) => return Done::LeftAlone("the kill was refused".into()),
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid)).unwrap_or_default();
    if !procs::status_uids(&status).is_some_and(|ids| ids.contains(&uid)) || cgroup != p.cgroup {
        return Done::LeftAlone("it was gone before the kill".into());
    }
    match pidfd::send_signal(&fd, libc::SIGKILL) {
        Ok(()) => Done::Killed,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Done::Killed,
        Err(_) => Done::LeftAlone("the kill was refused".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::leftovers::files::tests::{give, uids};

    #[test]
    fn files_of_the_uid_are_removed_once_nothing_of_it_runs_and_listed_in_the_verdict() {
        let (me, other) = uids();
        let root = tempfile::tempdir().unwrap();
        let [shm, tmp, queues] = ["shm", "tmp", "mqueue"].map(|d| root.path().join(d));
        for dir in [&shm, &tmp, &queues] {
            std::fs::create_dir(dir).unwrap();
        }
        let make = || {
            std::fs::write(shm.join("seg"), b"x").unwrap();
            std::fs::create_dir_all(tmp.join("mine/deep")).unwrap();
            std::fs::write(queues.join("q"), b"").unwrap();
        };
        make();
        let theirs = tmp.join("theirs");
        std::fs::write(&theirs, b"x").unwrap();
        let theirs_given = give(&theirs, other);
        let dirs = vec![(shm.clone(), Place::Shm), (tmp.clone(), Place::Tmp)];
        let places = Places { dirs: dirs.clone(), mqueue: Some(Ok(queues.clone())) };

        // Something of the uid still runs: listed, not removed, and said not checked.
        let mut v = Verdict::default();
        let found = files_of_uid(&places, me, &mut v.unchecked);
        remove_files(found, me, Some("1 process(es) of the uid still run"), &mut v);
        assert_eq!(
            v.to_string(),
            "teardown clean in 0.0 ms [not checked: files of its uid: 1 process(es) of the uid still run]"
        );
        assert!(shm.join("seg").exists() && tmp.join("mine").exists() && queues.join("q").exists());

        let mut v = Verdict::default();
        let found = files_of_uid(&places, me, &mut v.unchecked);
        remove_files(found, me, None, &mut v);
        let theirs_too = if theirs_given { String::new() } else { format!("; file {} (removed)", theirs.display()) };
        assert_eq!(
            v.to_string(),
            format!(
                "teardown leftover in 0.0 ms: POSIX shared memory {} (removed); directory {} (left alone: a \
                 directory: not removed, it may hold what the plugin keeps){theirs_too}; POSIX message queue {} \
                 (removed)",
                shm.join("seg").display(),
                tmp.join("mine").display(),
                queues.join("q").display()
            )
        );
        assert!(!shm.join("seg").exists() && !queues.join("q").exists());
        assert!(tmp.join("mine").exists(), "a directory may be a data directory: never removed");
        assert_eq!(theirs.exists(), theirs_given, "another uid's file is left alone");

        // Where no mqueue file system is mounted, the queues are not called clean.
        make();
        let places = Places { dirs: dirs.clone(), mqueue: Some(Err("/dev/mqueue is not mounted".into())) };
        let mut v = Verdict::default();
        let found = files_of_uid(&places, me, &mut v.unchecked);
        remove_files(found, me, None, &mut v);
        assert_eq!(v.found.len(), 2, "{v}");
        assert!(
            v.to_string().ends_with(" [not checked: POSIX message queues of its uid: /dev/mqueue is not mounted]"),
            "{v}"
        );
        assert!(queues.join("q").exists());

        // A plugin whose filter lets no mq_open through made none: nothing to say of them.
        make();
        let places = Places { dirs, mqueue: None };
        let mut v = Verdict::default();
        let found = files_of_uid(&places, me, &mut v.unchecked);
        remove_files(found, me, None, &mut v);
        assert!(v.unchecked.is_empty(), "{v}");
        assert_eq!(v.found.len(), 2, "{v}");

        // The plugin's data directory at the top of /tmp is its own, and kept.
        make();
        let data = tmp.join("mine/deep");
        let found = not_holding(files_of_uid(&places, me, &mut Vec::new()), Some(&data));
        assert!(found.iter().all(|e| e.path != tmp.join("mine")), "the data directory's holder is kept");
        assert_eq!(found.len(), 1, "the rest is still found");
    }
}
