//! The real launcher: verifies a plugin's binary into a sealed image, fences each instance
//! (cgroup leaf with its quotas, uid, namespaces, Landlock, seccomp), forks it from the
//! spawner thread, and keeps what the supervisor holds of the process: its pidfd, its
//! seccomp listener, its output, the host service on its fd 4.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::{Cause, StartError};
use super::images::{Key, SharedImages};
use super::launcher::{BoxFuture, Fencing, Image, LaunchRequest, Launched, Launcher, OthersNow, Process};
use super::proof::{self, Owner};
use crate::config::units::ByteSize;
use crate::config::{Config, PluginSpec, QuotaConfig};
use crate::integrity::{Policy, SearchConfig, VerifiedBinary, VerifiedImage};
use crate::observe::capture;
use crate::observe::events::{EventBus, EventKind};
use crate::observe::teardown::Verdict;
use crate::onboard::record::Recorder;
use crate::sandbox::cgroup;
use crate::sandbox::confine::{ConfineError, ImageGrants, Sandbox, SandboxError};
use crate::sandbox::leftovers::held::Held;
use crate::sandbox::leftovers::retry::Retries;
use crate::sandbox::pidfd::{self, ExitStatus};
use crate::sandbox::spawn::{SpawnPlan, Spawner};
use crate::sandbox::tier::{ARCH_KILL_REPORT, Verdict as SeccompVerdict, ViolationAction, learning_program};

/// A plugin's verified binary and what Landlock grants it: the payload of the [`Image`]s
/// this launcher makes.
#[derive(Debug)]
pub struct PluginImage {
    pub image: VerifiedImage,
    pub grants: ImageGrants,
}

/// What `spec`'s binary must satisfy: its entry's pin, signature and declared name.
fn policy(spec: &PluginSpec) -> Policy<'_> {
    Policy {
        expected_sha256: spec.integrity.sha256,
        require_signature: spec.integrity.require_signature,
        trusted_keys: &spec.integrity.trusted_keys,
        signed_name: Some(&spec.declared_name),
        ..Policy::default()
    }
}

/// Verifies `spec`'s binary as every start does: copied into a sealed image, checked
/// against the entry's pin, signature and declared name, an ELF this host runs, its
/// libraries found. Blocking (it reads and hashes the whole binary).
pub fn verify(spec: &PluginSpec) -> Result<PluginImage, Cause> {
    let image = VerifiedImage::load(&spec.name, &spec.binary, &policy(spec)).map_err(|e| Cause::Image(Box::new(e)))?;
    // The loader's files are granted under Landlock; a library that cannot be found is
    // reported now rather than as a crash at start.
    let loader = libraries(spec, image.binary())?;
    Ok(PluginImage { image, grants: ImageGrants::of(loader) })
}

/// Resolves `image`'s loader files again where one of them changed since (see
/// [`ImageGrants::stale`]), as a start does, on the blocking pool (it reads the libraries'
/// headers).
async fn refresh_grants(spec: &PluginSpec, image: Arc<PluginImage>) -> Result<(), Cause> {
    let resolve = {
        let (spec, image) = (spec.clone(), image.clone());
        move || {
            tracing::info!(plugin = %spec.name, "a library changed since the image was verified: resolving its loader files again");
            libraries(&spec, image.image.binary())
        }
    };
    match image.grants.refresh(resolve).await {
        Ok(resolved) => resolved,
        Err(e) if e.is_panic() => Err(Cause::VerifierPanicked(e.to_string())),
        // The blocking pool is shut down with the runtime: the supervisor is stopping.
        Err(_) => Err(Cause::Cancelled("the supervisor stopped while the libraries were resolved again")),
    }
}

fn libraries(spec: &PluginSpec, binary: &VerifiedBinary) -> Result<crate::integrity::LoaderFiles, Cause> {
    binary
        .loader_files(&SearchConfig::host())
        .map_err(|e| Cause::Libraries { plugin: spec.name.clone(), source: Box::new(e) })
}

/// A binary that a start would refuse: the first plugin (by its place in the config)
/// that runs it under these checks, why, and the other plugins sharing it.
#[derive(Debug)]
pub struct Unrunnable {
    pub index: usize,
    pub cause: Cause,
    pub also: Vec<String>,
}

/// The checks of [`verify`] for every plugin of `specs`, once per binary and checks
/// (1,000 plugins of one binary check it once, as the daemon does), read from the file
/// itself: `check-config` needs no sealed copy, which would hold each binary in memory.
/// A check that panics is reported as the daemon reports it, not let abort the rest; the
/// process's panic hook is silenced meanwhile, so this is for a command's own process
/// (`check-config`), not for the daemon.
pub fn unrunnable(specs: &[PluginSpec]) -> Vec<Unrunnable> {
    let check = |spec: &PluginSpec| {
        std::panic::catch_unwind(|| {
            let binary =
                VerifiedBinary::open(&spec.name, &spec.binary, &policy(spec)).map_err(|e| Cause::Image(Box::new(e)))?;
            libraries(spec, &binary).map(drop)
        })
        .unwrap_or_else(|panic| {
            let said = plugin_proto::panics::message(panic.as_ref()).unwrap_or("(no message)");
            Err(Cause::VerifierPanicked(said.to_owned()))
        })
    };
    // A panic is said once, in the report's line, not also by the default hook.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut seen: HashMap<Key, Option<usize>> = HashMap::new();
    let mut found: Vec<Unrunnable> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        match seen.entry(Key::of(spec)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if let Some(at) = *e.get() {
                    found[at].also.push(spec.name.clone());
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => match check(spec) {
                Ok(()) => {
                    e.insert(None);
                }
                Err(cause) => {
                    e.insert(Some(found.len()));
                    found.push(Unrunnable { index, cause, also: Vec::new() });
                }
            },
        }
    }
    std::panic::set_hook(hook);
    found
}

/// Plugins as real, sandboxed child processes.
#[derive(Debug)]
pub struct SandboxLauncher {
    sandbox: Sandbox,
    spawner: Spawner,
    /// Leftovers of teardowns, tried again in the background.
    retries: Arc<Retries>,
    /// The subtree's name when the daemon moved itself into it: then a process in the
    /// daemon's own cgroup was forked by this supervisor.
    own_subtree: Option<String>,
    /// Images verified for any plugin, shared by those of one binary and checks.
    images: SharedImages,
    /// Set by the onboarding check only: every instance runs under the learning filter
    /// instead of its tier's, and its calls are recorded here.
    learning: Option<Arc<Recorder>>,
}

impl SandboxLauncher {
    /// Starts the spawner thread and builds the sandbox (the cgroup subtree, after cleaning
    /// what a dead supervisor left), off the async thread: the cleaning may wait.
    pub async fn start(config: &Config) -> Result<Self, SandboxError> {
        Self::start_with(config, None).await
    }

    /// [`SandboxLauncher::start`], with every instance under the onboarding check's
    /// learning filter when `learning` is given.
    pub(crate) async fn start_with(config: &Config, learning: Option<Arc<Recorder>>) -> Result<Self, SandboxError> {
        let spawner = Spawner::start().map_err(SandboxError::Spawner)?;
        let c = &config.supervisor.cgroup;
        let own_subtree = c.move_self.then(|| c.name.clone());
        let config = config.clone();
        let sandbox = tokio::task::spawn_blocking(move || Sandbox::new(&config)).await.map_err(|e| {
            SandboxError::Spawner(std::io::Error::other(format!("building the sandbox panicked: {e}")))
        })??;
        Ok(Self { sandbox, spawner, retries: Retries::start(), own_subtree, images: SharedImages::default(), learning })
    }
}

fn refused(spec: &PluginSpec, instance: &str, cause: impl Into<Cause>) -> StartError {
    StartError::Refused { plugin: spec.name.clone(), instance: instance.to_owned(), cause: cause.into() }
}

fn failed(spec: &PluginSpec, instance: &str, cause: impl Into<Cause>) -> StartError {
    StartError::Failed { plugin: spec.name.clone(), instance: instance.to_owned(), cause: cause.into() }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Cause {
    move |source| Cause::Io { what, source }
}

impl Launcher for SandboxLauncher {
    fn image(
        &self,
        spec: Arc<PluginSpec>,
        cached: Option<Arc<Image>>,
    ) -> BoxFuture<'_, Result<Arc<Image>, StartError>> {
        Box::pin(async move {
            if let Some(img) = cached
                && img.payload.downcast_ref::<PluginImage>().is_some_and(|p| p.image.is_current())
            {
                return Ok(img);
            }
            let slot = self.images.slot(Key::of(&spec));
            let mut shared = slot.lock().await;
            if let Some(img) = shared.upgrade()
                && img.payload.downcast_ref::<PluginImage>().is_some_and(|p| p.image.is_current())
            {
                return Ok(img);
            }
            let name = spec.name.clone();
            let loaded = tokio::task::spawn_blocking(move || verify(&spec)).await;
            let whose = |cause| StartError::Refused { plugin: name.clone(), instance: String::new(), cause };
            let loaded = match loaded {
                Ok(Ok(loaded)) => loaded,
                Ok(Err(cause)) => return Err(whose(cause)),
                Err(e) => {
                    let cause = Cause::VerifierPanicked(e.to_string());
                    return Err(StartError::Failed { plugin: name, instance: String::new(), cause });
                }
            };
            let binary = loaded.image.binary();
            let held = loaded.image.exec_file().ok().and_then(|f| Held::of("sealed image", &f));
            let image = Arc::new(Image {
                held,
                sha256: binary.digest().to_hex(),
                signed_version: binary.signature().map(|s| s.version.clone()),
                writable_exec: binary.elf().writable_and_executable,
                payload: Arc::new(loaded),
            });
            *shared = Arc::downgrade(&image);
            Ok(image)
        })
    }

    fn save_image(&self, image: &Image, to: &std::path::Path) -> std::io::Result<bool> {
        use std::io::Write;
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let Some(loaded) = image.payload.downcast_ref::<PluginImage>() else { return Ok(false) };
        // The sealed copy is read by offset: its descriptor's file position is shared with
        // every spawn's duplicate.
        let sealed = loaded.image.exec_file()?;
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o700).open(to)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            let n = sealed.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        out.sync_all()?;
        Ok(true)
    }

    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, StartError>> {
        Box::pin(async move {
            let spec = &req.spec;
            let id = req.instance.as_str();
            let Ok(image) = req.image.payload.clone().downcast::<PluginImage>() else {
                return Err(failed(spec, id, Cause::Confine("the image was not made by this launcher".into())));
            };
            // Memory both writable and executable that the kernel maps at exec (an RWX
            // segment, an executable stack) is made by no call the tier's filter could
            // refuse: under a tier that forbids such memory, the binary is refused.
            if self.learning.is_none()
                && let Some(what) = image.image.binary().elf().writable_and_executable
                && self.sandbox.tier(&spec.tier).is_some_and(|t| t.forbids_writable_exec())
            {
                return Err(refused(spec, id, Cause::WritableExec { tier: spec.tier.clone(), what }));
            }
            if image.grants.stale() {
                match refresh_grants(spec, image.clone()).await {
                    Ok(()) => {}
                    // A library a plugin could change stays so until an operator acts;
                    // anything else (a file missing halfway through an upgrade) may pass
                    // at the next try.
                    Err(cause)
                        if matches!(&cause, Cause::Libraries { source, .. }
                            if matches!(**source, crate::integrity::LibraryError::Writable { .. })) =>
                    {
                        return Err(refused(spec, id, cause));
                    }
                    Err(cause) => return Err(failed(spec, id, cause)),
                }
            }
            // The start takes its leaf's path over: a retry of the last one's removal must
            // not touch it any more.
            self.retries.forget(&spec.name, id);
            let mut confined = self.sandbox.confine(spec, id, &req.quota, &image.grants).map_err(|e| match e {
                ConfineError::Refused(r) => refused(spec, id, Cause::Confine(r)),
                ConfineError::Failed(r) => failed(spec, id, Cause::Confine(r)),
            })?;
            if self.learning.is_some() {
                // The tier's other fences stay: only what seccomp does changes.
                confined.child.seccomp =
                    Some(learning_program(crate::sandbox::spawn::STATUS_FD).instructions().to_vec());
                confined.child.no_new_privs = true;
            }
            let cgroup = confined.cgroup.map(Arc::new);
            // Until the launch is done, its end (an error, or the start cancelled while the
            // spawner works) takes the leaf away with it.
            let mut unlaunched = Unlaunched {
                cgroup: cgroup.clone(),
                retries: self.retries.clone(),
                plugin: spec.name.clone(),
                instance: id.to_owned(),
                events: req.events.clone(),
            };
            let fences = Fences {
                cgroup: cgroup.clone(),
                violation: Arc::default(),
                seccomp: confined.seccomp.is_some(),
                quota: req.quota.clone(),
            };
            let mut notes = confined.notes;
            if cgroup.is_none() {
                // Nothing to kill them by: neither a stop nor the dead man's switch finds
                // them.
                notes.push(
                    "no cgroup: processes it forks are not tracked, and outlive a stop or a killed supervisor".into(),
                );
            }
            let fencing = Fencing { tier: spec.tier.clone(), quota: req.quota.clone(), notes, cgroup: cgroup.clone() };
            let binary: OwnedFd =
                image.image.exec_file().map_err(|e| failed(spec, id, io("duplicating the binary image")(e)))?.into();
            let (instance_io, child_fds) =
                crate::sandbox::instance_io().map_err(|e| failed(spec, id, io("creating sockets")(e)))?;
            // What the supervisor keeps of the instance, so the teardown can prove it let go.
            let held: Vec<Held> = [
                Held::of("plugin socket", &instance_io.plugin),
                Held::of("host socket", &instance_io.host),
                Held::of("stdout pipe", &instance_io.stdout),
                Held::of("stderr pipe", &instance_io.stderr),
            ]
            .into_iter()
            .flatten()
            .collect();
            // Which socket fd 4 is, so the plugin's SDK knows it from one of the plugin's own
            // that took the number after the plugin closed it.
            let host_socket = child_fds.get(4).and_then(|fd| nix::sys::stat::fstat(fd).ok()).map(|st| st.st_ino);
            let (argv, env) = crate::sandbox::argv_env(spec, id, host_socket);
            let plan =
                SpawnPlan { plugin: spec.name.clone(), binary, argv, env, fds: child_fds, sandbox: confined.child };
            let spawned = self.spawner.spawn(plan).await.map_err(|e| refused(spec, id, e))?;
            let pid = spawned.pid;
            // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and unchanged
            // for its whole life.
            let registered = unsafe { AsyncFd::register_with_interest(spawned.pidfd, tokio::io::Interest::READABLE) };
            let pidfd = Arc::new(registered.map_err(|e| failed(spec, id, io("watching the process")(e.into())))?);
            let (exit_tx, exit) = watch::channel(None);
            let reaper = tokio::spawn({
                let pidfd = pidfd.clone();
                async move {
                    let status = pidfd::wait(&pidfd).await.unwrap_or(ExitStatus::Exited(-1));
                    let _ = exit_tx.send(Some(status));
                }
            });
            // From here on, dropping `process` (any error below, or a cancelled start)
            // kills the instance.
            let owner = Owner {
                plugin: spec.name.clone(),
                instance: id.to_owned(),
                uid: spec.ids.0,
                uid_shared: spec.uid_shared,
                events: req.events.clone(),
                retries: self.retries.clone(),
                own_subtree: self.own_subtree.clone(),
                queues_possible: self.learning.is_some()
                    || self
                        .sandbox
                        .tier(&spec.tier)
                        .is_none_or(|t| t.policy.rules().iter().any(|r| r.nr == libc::SYS_mq_open as i32)),
                data_dir: spec.data_dir.clone(),
            };
            let mut process =
                SandboxProcess { pid, pidfd, exit, tasks: vec![reaper], fences, held, owner, torn_down: false };
            match (spawned.seccomp_listener, &self.learning, confined.seccomp) {
                (Some(listener), Some(recorder), _) => {
                    let recorder = recorder.clone();
                    process.tasks.push(tokio::spawn(crate::sandbox::notify::serve_learning(listener, move |call| {
                        recorder.record(call)
                    })));
                }
                (Some(listener), None, Some(action)) => {
                    process.tasks.push(tokio::spawn(watch_seccomp(
                        listener,
                        action,
                        process.fences.clone(),
                        process.pidfd.clone(),
                        spec.name.clone(),
                        id.to_owned(),
                        req.events.clone(),
                    )));
                }
                _ => {}
            }
            for (fd, stream) in [(instance_io.stdout, "stdout"), (instance_io.stderr, "stderr")] {
                let task = capture::spawn(fd, stream, id.to_owned(), req.logs.clone())
                    .map_err(|e| failed(spec, id, Cause::Io { what: "capturing the output", source: e }))?;
                process.tasks.push(task);
            }
            let host = to_tokio(instance_io.host).map_err(|e| failed(spec, id, io("host socket")(e)))?;
            process.tasks.push(tokio::spawn(super::host::serve(
                host,
                id.to_owned(),
                req.logs.clone(),
                req.calls_out.clone(),
            )));
            let conn = to_tokio(instance_io.plugin).map_err(|e| failed(spec, id, io("plugin socket")(e)))?;
            // Launched: the leaf is the process's teardown's to remove.
            unlaunched.cgroup = None;
            Ok(Launched { process: Box::new(process), conn, fencing })
        })
    }

    fn tier_quota(&self, tier: &str) -> Option<crate::sandbox::tier::Quota> {
        self.sandbox.tier(tier).map(|t| t.quota.clone())
    }

    fn forget_plugin<'a>(&'a self, plugin: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.sandbox.forget_plugin(plugin))
    }

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            // What was left is said where it was found, in the log.
            let _ = self.sandbox.teardown().await;
            self.retries.close();
        })
    }

    fn teardown_blocking(&self, limit: Duration) {
        let _ = self.sandbox.teardown_blocking(limit);
        self.retries.close();
    }
}

fn to_tokio(s: std::os::unix::net::UnixStream) -> std::io::Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

/// The leaf of a launch not yet done. Dropped with it unfinished (an error; the start
/// cancelled while the spawner works, whose orphaned process the spawner kills), it is
/// killed and removed, or left to the retries while what was in it is still exiting:
/// otherwise an empty leaf stayed for every start cancelled mid-launch (an `update`'s new
/// revision retired while its instance restarted).
struct Unlaunched {
    cgroup: Option<Arc<cgroup::Instance>>,
    retries: Arc<Retries>,
    plugin: String,
    instance: String,
    events: Arc<EventBus>,
}

impl Drop for Unlaunched {
    fn drop(&mut self) {
        let Some(cg) = self.cgroup.take() else { return };
        let _ = cg.kill();
        if !matches!(cg.try_remove(), Ok(cgroup::Removal::Removed))
            && let Err(e) = self.retries.push(&self.plugin, &self.instance, cg, self.events.clone())
        {
            tracing::warn!(plugin = %self.plugin, instance = %self.instance, reason = %e, "an unlaunched instance's cgroup is left behind");
        }
    }
}

/// What fences a running instance, and what they reported.
#[derive(Clone, Debug, Default)]
struct Fences {
    cgroup: Option<Arc<cgroup::Instance>>,
    /// Set by the seccomp listener when a forbidden call killed the instance.
    violation: Arc<Mutex<Option<String>>>,
    /// A seccomp filter is installed (so SIGSYS means the arch check).
    seccomp: bool,
    quota: QuotaConfig,
}

impl Fences {
    /// Kills every process of the instance: the whole cgroup when there is one (a
    /// double-forked escapee included), else the main process.
    fn kill(&self, pidfd: &OwnedFd) {
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.kill()
        {
            tracing::warn!(error = %e, "cgroup kill failed; signalling the main process");
        }
        let _ = pidfd::send_signal(pidfd, libc::SIGKILL);
    }
}

/// A forked, sandboxed plugin process.
struct SandboxProcess {
    pid: i32,
    pidfd: Arc<AsyncFd<OwnedFd>>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The reaper, the seccomp listener, the output readers, the host service.
    tasks: Vec<JoinHandle<()>>,
    fences: Fences,
    /// The descriptors held for it whose closing the teardown checks.
    held: Vec<Held>,
    owner: Owner,
    /// Handed to its teardown, which kills and lists what is left itself.
    torn_down: bool,
}

impl Process for SandboxProcess {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    fn kill(&self) {
        self.fences.kill(self.pidfd.get_ref());
    }

    fn terminate(&self) {
        let _ = pidfd::send_signal(self.pidfd.get_ref(), libc::SIGTERM);
    }

    fn signaller(&self) -> crate::instance::signal::Signaller {
        // Weak: the teardown proves the pidfd released; a signal finds it gone then.
        let pidfd = Arc::downgrade(&self.pidfd);
        let (main, cgroup) = (self.pid, self.fences.cgroup.clone());
        crate::instance::signal::Signaller::new(move |sig| {
            let gone = || std::io::Error::from_raw_os_error(libc::ESRCH);
            let fd = pidfd.upgrade().ok_or_else(gone)?;
            if !pidfd::signal_if_alive(fd.get_ref(), sig)? {
                return Err(gone());
            }
            Ok(1 + cgroup.as_deref().map_or(0, |cg| signal_the_rest(cg, main, sig)))
        })
    }

    fn reason(&self, status: ExitStatus) -> String {
        if let Ok(Some(v)) = self.fences.violation.lock().map(|v| v.clone()) {
            return v;
        }
        let killed = matches!(status, ExitStatus::Signaled { signal: libc::SIGKILL, .. });
        if killed
            && let Some(cg) = &self.fences.cgroup
            && cg.stats().ok().and_then(|s| s.oom_kills).is_some_and(|n| n > 0)
        {
            return format!("killed: out of memory (limit {})", oom_limit(cg, &self.fences.quota));
        }
        if self.fences.seccomp && matches!(status, ExitStatus::Signaled { signal: libc::SIGSYS, .. }) {
            return ARCH_KILL_REPORT.to_owned();
        }
        status.to_string()
    }

    fn kill_main(&self) {
        let _ = pidfd::send_signal(self.pidfd.get_ref(), libc::SIGKILL);
    }

    /// Kills whatever else is left in the cgroup and removes it, waiting (bounded) for the
    /// stragglers to exit; lets go of what was held for it; then proves it: see
    /// [`proof::teardown`].
    fn clean_up(mut self: Box<Self>, others: OthersNow) -> BoxFuture<'static, Verdict> {
        let parts = proof::Parts {
            cgroup: self.fences.cgroup.clone(),
            tasks: std::mem::take(&mut self.tasks),
            held: std::mem::take(&mut self.held),
            pidfd: self.pidfd.clone(),
            owner: self.owner.clone(),
        };
        // Dropped here (its process has ended): what is left of it is the parts'.
        self.torn_down = true;
        drop(self);
        Box::pin(proof::teardown(parts, others))
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        // Whoever drops a process without stopping it (a cancelled task, a shutdown) must
        // not leave it behind.
        if self.torn_down {
            return;
        }
        if self.exit.borrow().is_none() {
            self.kill();
        } else if let Some(cg) = &self.fences.cgroup {
            let _ = cg.kill();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The memory limit in force when the OOM killer struck: read from the cgroup, since a
/// live `quota` change may have moved it since the spawn; the spawn-time quota only when
/// the cgroup cannot tell.
/// Sends `sig` to every process in the instance's cgroup but `main`: how many got it.
/// Each is opened as a pidfd first and then checked to be in the cgroup, so a pid reused
/// between the read of `cgroup.procs` and the signal is never signalled; one that exits
/// meanwhile is skipped. The cgroup's own word on who is in it bounds what the operator
/// reaches: nothing outside the instance.
fn signal_the_rest(cg: &cgroup::Instance, main: i32, sig: i32) -> usize {
    let Ok(procs) = cg.procs() else { return 0 };
    procs
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid != main)
        .filter(|&pid| {
            let Ok(fd) = pidfd::open(pid) else { return false };
            let inside = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| cg.holds(&c));
            inside && pidfd::signal_if_alive(&fd, sig).unwrap_or(false)
        })
        .count()
}

fn oom_limit(cg: &cgroup::Instance, at_spawn: &QuotaConfig) -> String {
    match cg.limits() {
        Ok(l) => l.memory_max.map_or_else(|| "none".to_owned(), |b| ByteSize(b).to_string()),
        Err(_) => at_spawn.memory_max.map_or_else(|| "unknown".to_owned(), |m| m.to_string()),
    }
}

/// Serves the instance's seccomp listener: a forbidden call either ends the instance (its
/// state then names the call) or fails with the tier's errno (an event names it).
async fn watch_seccomp(
    listener: OwnedFd,
    action: ViolationAction,
    fences: Fences,
    pidfd: Arc<AsyncFd<OwnedFd>>,
    plugin: String,
    instance: String,
    events: Arc<EventBus>,
) {
    let mut denials = crate::sandbox::denials::Denials::default();
    crate::sandbox::notify::serve(listener, action, |v| {
        let report = v.to_string();
        let syscall = v.syscall.to_string();
        if let SeccompVerdict::Kill = v.verdict {
            if let Ok(mut slot) = fences.violation.lock() {
                slot.get_or_insert_with(|| report.clone());
            }
            fences.kill(pidfd.get_ref());
            events.emit(&plugin, &instance, EventKind::Seccomp, report, &[("syscall", syscall)]);
            return None;
        }
        // Denied with an errno, a call may come again at once, and again: counted each
        // time, said once a second per syscall, answered at a bounded pace.
        let now = tokio::time::Instant::now();
        events.count(&plugin, EventKind::Seccomp);
        if let Some((name, held)) = denials.say(&syscall, now) {
            let said = match held {
                0 => report,
                n if name == syscall => format!("{report} ({n} more denied since it was last said)"),
                n => format!("{report} ({n} more denied of {name} since it was last said)"),
            };
            events.keep(&plugin, &instance, EventKind::Seccomp, said, &[("syscall", syscall.clone())]);
        }
        denials.pace(now)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::cgroup::test_hosts::{create, hybrid};
    use crate::sandbox::cgroup::{Limits, SubtreeConfig};

    /// A revision keeps its image for life, but its libraries are read from disk at every
    /// start: an upgrade renaming over a library one that needs another (a new DT_NEEDED)
    /// left that one ungranted, and every start after it failed under Landlock until the
    /// binary itself changed.
    #[tokio::test]
    async fn a_library_upgraded_under_a_verified_image_is_resolved_again_at_the_next_start() {
        use crate::integrity::LibraryError;
        use crate::integrity::tests::support::{dynamic_elf64, host_interpreter, write_exe};
        let interpreter = host_interpreter();
        let dir = tempfile::tempdir().unwrap();
        let lib = std::fs::canonicalize(dir.path()).unwrap().join("lib");
        std::fs::create_dir(&lib).unwrap();
        let outer = lib.join("libouter.so");
        std::fs::write(&outer, dynamic_elf64(&interpreter, "libc.so.6", "/nonexistent")).unwrap();
        let exe = write_exe(dir.path(), "app", &dynamic_elf64(&interpreter, "libouter.so", lib.to_str().unwrap()));
        let text = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"app\"\nbinary = {exe:?}\ntier = \"none\"\n"
        );
        let spec = crate::config::parse(&text, std::path::Path::new("/etc/t.toml")).unwrap().specs().remove(0);
        // Each look below comes a moment after the files changed, as a start after an
        // upgrade does: what changed within the clock's tick of a look is not trusted.
        crate::test_files::settle_stamps();
        let image = Arc::new(verify(&spec).unwrap_or_else(|e| panic!("{e}")));
        // A library no one needed at verification, and that the upgrade needs.
        let gcc = crate::integrity::loader_host::default_dirs()
            .into_iter()
            .map(|d| d.join("libgcc_s.so.1"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .expect("libgcc_s.so.1 in the default directories");
        assert!(image.grants.loader().contains(&outer) && !image.grants.loader().contains(&gcc));
        assert!(!image.grants.stale(), "nothing changed yet");

        let new = lib.join("libouter.so.new");
        std::fs::write(&new, dynamic_elf64(&interpreter, "libgcc_s.so.1", "/nonexistent")).unwrap();
        std::fs::rename(&new, &outer).unwrap();
        assert!(image.grants.stale(), "a new library under the name");
        crate::test_files::settle_stamps();
        refresh_grants(&spec, image.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(image.grants.loader().contains(&gcc), "the upgrade's new need is granted: {:?}", image.grants.loader());
        assert!(!image.grants.stale());

        // A symlink repointed to another version, the old one still there.
        let v2 = lib.join("libouter.so.2");
        std::fs::write(&v2, dynamic_elf64(&interpreter, "libc.so.6", "/nonexistent")).unwrap();
        let moved = lib.join("libouter.so.1");
        std::fs::rename(&outer, &moved).unwrap();
        std::os::unix::fs::symlink("libouter.so.1", &outer).unwrap();
        crate::test_files::settle_stamps();
        refresh_grants(&spec, image.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(image.grants.loader().contains(&moved), "{:?}", image.grants.loader());
        assert!(!image.grants.stale(), "the same file under a link");
        std::fs::remove_file(&outer).unwrap();
        std::os::unix::fs::symlink("libouter.so.2", &outer).unwrap();
        assert!(image.grants.stale(), "the link now names another file");
        refresh_grants(&spec, image.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            image.grants.loader().contains(&v2) && !image.grants.loader().contains(&gcc),
            "{:?}",
            image.grants.loader()
        );
        std::fs::remove_file(&outer).unwrap();
        std::fs::rename(&v2, &outer).unwrap();
        crate::test_files::settle_stamps();
        refresh_grants(&spec, image.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!image.grants.stale());

        // Given to a plugin's uid since: refused at the next start, naming it. (Giving a
        // file away needs root: the unprivileged run of these tests stops here.)
        if !nix::unistd::geteuid().is_root() {
            eprintln!("the owner change needs root; the root run checks it");
            return;
        }
        std::os::unix::fs::chown(&outer, Some(61_997), None).unwrap();
        assert!(image.grants.stale(), "a change of owner");
        let err = refresh_grants(&spec, image.clone()).await.expect_err("a library a plugin could rewrite");
        match &err {
            Cause::Libraries { source, .. } => {
                assert!(matches!(**source, LibraryError::Writable { .. }), "{source}");
            }
            other => panic!("refused for another reason: {other}"),
        }
        assert!(err.to_string().contains("can be changed by its owner, uid 61997"), "{err}");
    }

    #[test]
    fn the_oom_reason_names_the_limit_in_force_not_the_one_at_spawn() {
        let (fs, layout) = hybrid();
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        let at_spawn = QuotaConfig { memory_max: Some(ByteSize(64 << 20)), ..Default::default() };
        let cg = tree.create_instance("p", "p-0", &Limits { memory_max: Some(64 << 20), ..Limits::default() }).unwrap();
        assert_eq!(oom_limit(&cg, &at_spawn), "64M");
        // A live quota change lowered it.
        cg.set_limits(&Limits { memory_max: Some(6 << 20), ..Limits::default() }).unwrap();
        assert_eq!(oom_limit(&cg, &at_spawn), "6M");
    }

    #[test]
    fn a_launch_ended_before_it_was_done_kills_and_removes_its_leaf_or_leaves_it_to_the_retries() {
        let (fs, layout) = hybrid();
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        let events = Arc::new(EventBus::new(16, Arc::new(crate::observe::metrics::Metrics::default())));
        let retries = Arc::new(Retries::default());
        let leaf = |instance: &str| {
            let cg = Arc::new(tree.create_instance("p", instance, &Limits::default()).unwrap());
            let dirs: Vec<String> = cg.cgroups().dirs().map(|(_, d)| d.display().to_string()).collect();
            (cg, dirs)
        };
        let unlaunched = |cgroup: Option<Arc<cgroup::Instance>>, instance: &str| Unlaunched {
            cgroup,
            retries: retries.clone(),
            plugin: "p".into(),
            instance: instance.into(),
            events: events.clone(),
        };

        // A process the spawner left in it: killed, and the leaf gone.
        let (cg, dirs) = leaf("p-0");
        fs.spawn(500, &dirs.iter().map(String::as_str).collect::<Vec<_>>());
        drop(unlaunched(Some(cg), "p-0"));
        assert!(!fs.is_alive(500), "the process in an unlaunched leaf outlived it");
        assert!(dirs.iter().all(|d| !fs.is_cgroup(d)), "an unlaunched leaf stayed: {dirs:?}");
        assert!(retries.is_empty());

        // A leaf that cannot go yet (its removal fails): kept for the retries, not lost.
        let (cg, dirs) = leaf("p-1");
        fs.fail_on(&dirs[0], libc::EBUSY);
        drop(unlaunched(Some(cg), "p-1"));
        assert_eq!(retries.len(), 1, "the leaf was neither removed nor kept for a retry");
        assert!(fs.is_cgroup(&dirs[0]));

        // No leaf (a tier without one): nothing to do.
        drop(unlaunched(None, "p-2"));
        assert_eq!(retries.len(), 1);
    }

    #[tokio::test]
    async fn after_its_teardown_a_supervisor_retries_no_leaf_another_now_has() {
        let (fs, layout) = hybrid();
        let layout = Arc::new(layout);
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let events = Arc::new(EventBus::new(16, Arc::new(crate::observe::metrics::Metrics::default())));
        let dirs_of = |cg: &cgroup::Instance| -> Vec<String> {
            cg.cgroups().dirs().map(|(_, d)| d.display().to_string()).collect()
        };

        // Supervisor A: p-0's leaf was still busy at its instance's teardown.
        let tree = create(&fs, layout.clone(), &cfg).unwrap();
        let busy = Arc::new(tree.create_instance("p", "p-0", &Limits::default()).unwrap());
        let a_dirs = dirs_of(&busy);
        fs.spawn(500, &a_dirs.iter().map(String::as_str).collect::<Vec<_>>());
        let retries = Arc::new(Retries::default());
        assert_eq!(retries.push("p", "p-0", busy, events.clone()), Ok(()));
        let a = SandboxLauncher {
            sandbox: Sandbox::over(tree),
            spawner: Spawner::start().unwrap(),
            retries: retries.clone(),
            own_subtree: None,
            images: SharedImages::default(),
            learning: None,
        };
        a.teardown().await;
        assert!(!fs.is_alive(500) && a_dirs.iter().all(|d| !fs.is_cgroup(d)), "A's teardown left its leaf");

        // Supervisor B, on the same config, while A is still held by its host.
        let b_tree = create(&fs, layout, &cfg).unwrap();
        let b_leaf = b_tree.create_instance("p", "p-0", &Limits::default()).unwrap();
        let b_dirs = dirs_of(&b_leaf);
        assert_eq!(a_dirs, b_dirs, "the test means B's leaf to be where A's was");
        fs.spawn(600, &b_dirs.iter().map(String::as_str).collect::<Vec<_>>());

        retries.round();
        assert!(fs.is_alive(600), "A's retries killed B's instance");
        assert!(b_dirs.iter().all(|d| fs.is_cgroup(d)), "A's retries removed B's leaf");
        assert_eq!(fs.procs_of(&b_dirs[0]), [600]);
        assert_eq!(retries.len(), 0);
        let late = Arc::new(b_tree.create_instance("p", "p-1", &Limits::default()).unwrap());
        assert_eq!(retries.push("p", "p-1", late, events), Err(crate::sandbox::leftovers::retry::NotKept::Closed));
    }
}
