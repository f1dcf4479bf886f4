//! What runs is exactly what was approved, shown with the real daemon: a
//! pinned digest, the descriptor that was hashed being the one executed, the
//! ELF checks, signatures, version ranges and protocol versions. Every
//! refusal names its cause in `status`, and the other plugins keep serving.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::files::{
    copy_executable, copy_with_executable_stack, ctl_local, flip_byte, identity, patch, sha256, stderr, stdout,
    write_executable,
};
use plugin_integration::pb::zoo::Text;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};
use plugin_supervisor::integrity::FileIdentity;

const UP: Duration = Duration::from_secs(30);
/// `e_machine` sits at byte 18 of every ELF header; EM_AARCH64 is 183.
const E_MACHINE_OFFSET: usize = 18;
const EM_AARCH64: u16 = 183;

/// Waits for `id` to be refused and returns the reason, which must say so.
fn refusal(d: &Daemon, id: &str) -> String {
    let v = d.wait_state(id, "failed", UP);
    let reason = v["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("refused: "), "{id}: {v}");
    assert!(v["pid"].is_null(), "{id} has no process: {v}");
    reason
}

/// Whether the supervisor ever spawned a process for `plugin`.
fn was_spawned(d: &Daemon, plugin: &str) -> bool {
    stdout(&d.ctl(&["events", "--plugin", plugin])).contains(" spawned ")
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ps-integrity-").tempdir().expect("tempdir")
}

#[tokio::test]
async fn one_flipped_byte_refuses_the_pinned_plugin_with_both_digests_while_a_sibling_serves() {
    let dir = scratch();
    let echo = copy_executable(&bins::example("echo"), dir.path(), "echo");
    let approved = sha256(&echo);
    flip_byte(&echo);
    let found = sha256(&echo);
    assert_ne!(approved, found);

    let plugins =
        format!("{}{}", plugin("echo", &echo, &format!("sha256 = {approved:?}")), plugin("zoo", &bins::zoo(), ""));
    let d = Daemon::start(&config(&plugins));
    let zoo_pid = d.wait_state("zoo-0", "running", UP)["pid"].as_i64();
    let reason = refusal(&d, "echo-0");
    assert!(
        reason.contains(&format!(
            "plugin \"echo\": binary {} sha256 mismatch: expected {approved}, found {found}",
            echo.display()
        )),
        "{reason}"
    );
    assert!(!was_spawned(&d, "echo"), "a binary that fails its pin is never started");

    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(zoo.echo(Text { text: "still serving".into() }).await.unwrap().into_inner().text, "still serving");
    assert_eq!(d.instance("zoo-0")["pid"].as_i64(), zoo_pid, "the sibling was not disturbed");
    let again = d.ctl(&["start", "echo"]);
    assert!(!again.status.success(), "a retry is refused for the same cause");
    assert!(stdout(&again).contains("sha256 mismatch"), "{}", stdout(&again));
}

/// Holds every open of one inode until answered, through fanotify's
/// FAN_OPEN_PERM: the kernel asks this process before it lets an open of the
/// marked inode proceed. That makes "the supervisor has opened the binary to
/// check it" an observable, deterministic moment in a real daemon, with no
/// test hook in the supervisor. Dropping the gate closes the group, which
/// lets every open still held (or later made) proceed.
struct OpenGate {
    group: OwnedFd,
}

/// An open of the marked inode, waiting for the gate's answer.
struct HeldOpen {
    /// The process (thread group) opening it.
    pid: i32,
    /// The kernel's event mask: FAN_OPEN_PERM, plus FAN_OPEN_EXEC_PERM on
    /// kernels that report both in one event.
    mask: u64,
    /// A descriptor of the file being opened.
    file: OwnedFd,
}

impl OpenGate {
    fn watch(path: &Path) -> Self {
        // SAFETY: fanotify_init takes flags only and returns a new descriptor or -1.
        let raw = unsafe { libc::fanotify_init(libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC, libc::O_RDONLY as u32) };
        assert!(raw >= 0, "fanotify_init (needs CAP_SYS_ADMIN): {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let group = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in the path");
        // SAFETY: marks the inode `c_path` names; the string outlives the call.
        let rc = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_ADD,
                libc::FAN_OPEN_PERM,
                libc::AT_FDCWD,
                c_path.as_ptr(),
            )
        };
        assert_eq!(rc, 0, "fanotify_mark {}: {}", path.display(), std::io::Error::last_os_error());
        Self { group }
    }

    /// Waits for the next open of the marked inode and holds it.
    fn wait(&self, what: &str) -> HeldOpen {
        let deadline = Instant::now() + UP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the watched binary was not opened ({what}) within {UP:?}");
            let mut pfd = libc::pollfd { fd: self.group.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: polls one descriptor we own.
            if unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) } <= 0 {
                continue;
            }
            let mut event = std::mem::MaybeUninit::<libc::fanotify_event_metadata>::uninit();
            let size = std::mem::size_of::<libc::fanotify_event_metadata>();
            // SAFETY: reads at most one metadata record into memory sized for it.
            let n = unsafe { libc::read(self.group.as_raw_fd(), event.as_mut_ptr().cast(), size) };
            assert_eq!(n, size as isize, "fanotify read: {}", std::io::Error::last_os_error());
            // SAFETY: the kernel filled the whole record (checked just above).
            let event = unsafe { event.assume_init() };
            assert_eq!(event.vers, libc::FANOTIFY_METADATA_VERSION);
            assert!(event.mask & libc::FAN_OPEN_PERM != 0, "unexpected fanotify event {:#x}", event.mask);
            // SAFETY: the event carries a new descriptor of the file, now ours.
            let file = unsafe { OwnedFd::from_raw_fd(event.fd) };
            return HeldOpen { pid: event.pid, mask: event.mask, file };
        }
    }

    fn allow(&self, held: HeldOpen) {
        let response = libc::fanotify_response { fd: held.file.as_raw_fd(), response: libc::FAN_ALLOW };
        let size = std::mem::size_of_val(&response);
        // SAFETY: writes one response record from a local.
        let n = unsafe { libc::write(self.group.as_raw_fd(), (&raw const response).cast(), size) };
        assert_eq!(n, size as isize, "fanotify answer: {}", std::io::Error::last_os_error());
    }
}

/// The path is replaced the moment the supervisor has opened the binary to
/// check it. Everything after that (hash, pin, ELF check, exec) must use what
/// it opened: hashing the path again would hash the replacement (a pin
/// mismatch), and executing the path would run the replacement (which leaves
/// a marker and is no plugin). With verify-then-`execveat(fd)` the running
/// process is the very inode that was hashed.
/// Identities of the sealed images (`/memfd:<plugin>`) the process `pid` holds open.
fn held_images(pid: i32, plugin: &str) -> Vec<FileIdentity> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the daemon's fds").flatten() {
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with(&format!("/memfd:{plugin}")) {
            out.push(identity(&e.path()));
        }
    }
    out
}

#[test]
fn a_binary_swapped_between_check_and_exec_is_not_what_runs() {
    let dir = scratch();
    let echo = copy_executable(&bins::example("echo"), dir.path(), "echo");
    let approved = sha256(&echo);
    let hashed = identity(&echo);
    let marker = dir.path().join("the-replacement-ran");
    let replacement = dir.path().join("echo.new");
    write_executable(&replacement, format!("#!/bin/sh\ntouch '{}'\n", marker.display()).as_bytes());
    let replacement_digest = sha256(&replacement);

    let entry = format!("sha256 = {approved:?}\nautostart = false\nrestart = \"never\"");
    let d = Daemon::start(&config(&plugin("echo", &echo, &entry)));
    let gate = OpenGate::watch(&echo);
    let socket = d.control();
    let start = std::thread::spawn(move || {
        std::process::Command::new(bins::supervisorctl())
            .arg("--socket")
            .arg(socket)
            .args(["start", "echo"])
            .output()
            .expect("run supervisorctl start")
    });

    // The supervisor opens the binary for its check: swap the path now.
    let check = gate.wait("for the check");
    assert_eq!(check.pid, d.pid(), "the first open is the supervisor's own");
    assert_eq!(check.mask & libc::FAN_OPEN_EXEC_PERM, 0, "the check opens it to read, not to execute");
    std::fs::rename(&replacement, &echo).expect("swap the binary");
    assert_ne!(identity(&echo), hashed, "the path now names another file");
    gate.allow(check);
    drop(gate); // later opens (the exec) go through unwatched

    let started = start.join().expect("start thread");
    assert!(started.status.success(), "start: {}{}", stdout(&started), stderr(&started));
    let v = d.wait_state("echo-0", "running", UP);
    let pid = v["pid"].as_i64().expect("a running pid");
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    // What was opened was copied into a sealed image and hashed there; the
    // process runs that image: the very object the supervisor holds.
    let held = held_images(d.pid(), "echo");
    assert!(held.contains(&identity(&exe)), "the process runs the image the supervisor hashed: {held:?}");
    assert_ne!(identity(&exe), hashed, "a sealed copy, not the file itself (which could be rewritten)");
    assert_ne!(identity(&exe), identity(&echo), "not the file now at the path");
    assert_eq!(sha256(&exe), approved, "its bytes are the approved ones");
    assert_eq!(v["sha256"], approved, "status reports the digest of what runs");
    let exe_name = std::fs::read_link(&exe).expect("readlink /proc/<pid>/exe");
    assert!(exe_name.to_string_lossy().starts_with("/memfd:echo"), "runs the sealed image: {}", exe_name.display());
    assert!(!marker.exists(), "the replacement never ran");
    let call = d.ctl(&["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"approved"}"#]);
    assert!(stdout(&call).contains("approved"), "{}{}", stdout(&call), stderr(&call));

    // A restart runs the revision's image again, not the file now at the path.
    let restart = d.ctl(&["restart", "echo"]);
    assert!(restart.status.success(), "{}{}", stdout(&restart), stderr(&restart));
    assert_eq!(d.wait_state("echo-0", "running", UP)["sha256"], approved);
    // A reload takes the file, as a new revision, verified as any: refused.
    let reload = d.ctl(&["reload", "echo"]);
    assert!(!reload.status.success(), "{}", stdout(&reload));
    let said = format!("{}{}", stdout(&reload), stderr(&reload));
    assert!(said.contains(&format!("expected {approved}, found {replacement_digest}")), "{said}");
    assert_eq!(d.instance("echo-0")["sha256"], approved, "the approved revision serves on");
    assert!(!marker.exists(), "the replacement never ran");
}

#[tokio::test]
async fn a_script_a_truncated_elf_and_a_foreign_architecture_are_refused_before_they_start() {
    let dir = scratch();
    let script = dir.path().join("script");
    write_executable(&script, b"#!/bin/sh\nexit 0\n");
    let arm = copy_executable(&bins::example("echo"), dir.path(), "echo-aarch64");
    patch(&arm, E_MACHINE_OFFSET, &EM_AARCH64.to_le_bytes());
    let truncated = copy_executable(&bins::example("echo"), dir.path(), "echo-truncated");
    let head = std::fs::read(&truncated).expect("read copy")[..100].to_vec();
    std::fs::write(&truncated, head).expect("truncate copy");

    let plugins = [
        plugin("script", &script, ""),
        plugin("arm", &arm, ""),
        plugin("truncated", &truncated, ""),
        plugin("zoo", &bins::zoo(), ""),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));
    d.wait_state("zoo-0", "running", UP);
    let expect = [
        (
            "script",
            format!(
                "plugin \"script\": {} is a script starting with \"#!/bin/sh\", not an ELF executable",
                script.display()
            ),
        ),
        ("arm", format!("plugin \"arm\": built for aarch64, this host is {}", std::env::consts::ARCH)),
        ("truncated", format!("plugin \"truncated\": {} is a truncated ELF file", truncated.display())),
    ];
    for (name, cause) in expect {
        let reason = refusal(&d, &format!("{name}-0"));
        assert!(reason.contains(&cause), "{name}: {reason}");
        assert!(!was_spawned(&d, name), "{name} was inspected before it was started, and never started");
    }
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(zoo.echo(Text { text: "unaffected".into() }).await.unwrap().into_inner().text, "unaffected");
}

/// An executable stack is mapped by the kernel at exec, where no filter sees it: under a
/// tier that forbids memory both writable and executable the binary is refused at start,
/// naming it, and under one that allows it, it runs.
#[tokio::test]
async fn a_binary_with_an_executable_stack_is_refused_under_a_tier_forbidding_wx_memory() {
    let dir = scratch();
    let stacky = copy_with_executable_stack(&bins::example("echo"), dir.path(), "echo-exec-stack");
    let plugins = [
        plugin("hardened", &stacky, "tier = \"L2\"\ndeclared_name = \"echo\""),
        plugin("general", &stacky, "tier = \"L1\"\ndeclared_name = \"echo\""),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));
    d.wait_state("general-0", "running", UP);
    let reason = refusal(&d, "hardened-0");
    assert!(
        reason.contains(
            "tier L2 forbids memory both writable and executable, and the binary has an executable stack \
             (PT_GNU_STACK with PF_X)"
        ),
        "{reason}"
    );
    assert!(!was_spawned(&d, "hardened"), "refused before it was started");
}

/// `supervisorctl plugin keygen`; returns the public key line.
fn keygen(dir: &Path, stem: &str) -> (PathBuf, String) {
    let secret = dir.join(format!("{stem}.key"));
    let out = ctl_local(&[
        "plugin".as_ref(),
        "keygen".as_ref(),
        "--secret".as_ref(),
        secret.as_os_str(),
        "--public".as_ref(),
        dir.join(format!("{stem}.pub")).as_os_str(),
    ]);
    assert!(out.status.success(), "keygen: {}", stderr(&out));
    (secret, stdout(&out).trim().to_owned())
}

/// `supervisorctl plugin sign`.
fn sign(binary: &Path, key: &Path, name: &str, version: &str) {
    let out = ctl_local(&[
        "plugin".as_ref(),
        "sign".as_ref(),
        binary.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--name".as_ref(),
        name.as_ref(),
        "--version".as_ref(),
        version.as_ref(),
    ]);
    assert!(out.status.success(), "sign: {}", stderr(&out));
}

fn sig_path(binary: &Path) -> PathBuf {
    let mut p = binary.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

#[test]
fn signatures_when_required_admit_only_a_good_signature_for_the_declared_version() {
    let dir = scratch();
    let (key, public) = keygen(dir.path(), "release");
    let (other_key, _) = keygen(dir.path(), "stranger");
    let zoo_as = |name: &str| copy_executable(&bins::zoo(), dir.path(), name);

    let signed = zoo_as("signed");
    sign(&signed, &key, "signed", "1.0.0");
    let unsigned = zoo_as("unsigned");
    let untrusted = zoo_as("untrusted");
    sign(&untrusted, &other_key, "untrusted", "1.0.0");
    let forged = zoo_as("forged");
    sign(&forged, &key, "forged", "1.0.0");
    let text = std::fs::read_to_string(sig_path(&forged)).expect("read signature");
    let line = text.lines().find(|l| l.starts_with("signature = ")).expect("signature line").to_owned();
    let last = line.len() - 2; // the last hex digit, before the closing quote
    let flipped = if &line[last..last + 1] == "0" { "1" } else { "0" };
    std::fs::write(sig_path(&forged), text.replace(&line, &format!("{}{flipped}\"", &line[..last]))).unwrap();
    let stale = zoo_as("stale");
    sign(&stale, &key, "stale", "1.0.0");
    flip_byte(&stale);
    let misversioned = zoo_as("misversioned");
    sign(&misversioned, &key, "misversioned", "9.9.9");

    let zoo_named = |name: &str, binary: &Path, extra: &str| {
        plugin(name, binary, &format!("args = [\"--name\", {name:?}]\n{extra}"))
    };
    let plugins = [
        zoo_named("signed", &signed, ""),
        zoo_named("unsigned", &unsigned, ""),
        zoo_named("untrusted", &untrusted, ""),
        zoo_named("forged", &forged, ""),
        zoo_named("stale", &stale, ""),
        zoo_named("misversioned", &misversioned, ""),
        // The per-plugin setting overrides [supervisor] require_signatures.
        plugin("echo", &bins::example("echo"), "require_signature = false"),
    ]
    .concat();
    let cfg = config_with(&format!("trusted_keys = [{public:?}]\nrequire_signatures = true"), &plugins);
    let d = Daemon::start(&cfg);
    d.wait_state("signed-0", "running", UP);
    d.wait_state("echo-0", "running", UP);

    let key_id = |line: &str| {
        let key = plugin_supervisor::integrity::PublicKey::parse(line).expect("keygen printed a public key");
        key.key_id().to_string()
    };
    let stranger = std::fs::read_to_string(dir.path().join("stranger.pub")).expect("read stranger.pub");
    let expect = [
        ("unsigned", format!("signature file {} is missing", sig_path(&unsigned).display())),
        ("untrusted", format!("was made with key {}, which is not among the trusted keys", key_id(&stranger))),
        ("forged", format!("does not verify with trusted key {}", key_id(&public))),
        ("stale", format!("binary sha256 {} does not match the signed sha256", sha256(&stale))),
        ("misversioned", "plugin declares version 1.0.0 but its signature is for version 9.9.9".to_owned()),
    ];
    for (name, cause) in expect {
        let reason = refusal(&d, &format!("{name}-0"));
        assert!(reason.contains(&format!("plugin \"{name}\"")) || name == "misversioned", "{name}: {reason}");
        assert!(reason.contains(&cause), "{name}: {reason}");
    }
    // Only the one whose signature was checked against its handshake got that far.
    for name in ["unsigned", "untrusted", "forged", "stale"] {
        assert!(!was_spawned(&d, name), "{name} was refused before it started");
    }
    assert!(was_spawned(&d, "misversioned"), "the version is only known once the plugin declares it");
}

#[test]
fn a_version_outside_the_configured_range_and_an_unsupported_protocol_are_refused() {
    let zoo = bins::zoo();
    let echo_version = env!("CARGO_PKG_VERSION");
    let plugins = [
        plugin("echo", &bins::example("echo"), "version = \">=2.0.0\""),
        plugin("in-range", &zoo, "args = [\"--name\", \"in-range\", \"--version\", \"1.4.2\"]\nversion = \"^1.2\""),
        plugin("too-new", &zoo, "args = [\"--name\", \"too-new\", \"--version\", \"2.0.0\"]\nversion = \"^1.2\""),
        plugin("protocol-99", &zoo, "args = [\"--name\", \"protocol-99\", \"--protocol\", \"99\"]"),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));
    assert_eq!(d.wait_state("in-range-0", "running", UP)["version"], "1.4.2");
    let expect = [
        ("echo-0", format!("plugin version {echo_version} is outside the configured range >=2.0.0")),
        ("too-new-0", "plugin version 2.0.0 is outside the configured range ^1.2".to_owned()),
        ("protocol-99-0", "no common protocol version: the supervisor offers [1], plugin protocol-99".to_owned()),
        ("protocol-99-0", "speaks [99]".to_owned()),
    ];
    for (id, cause) in expect {
        let reason = refusal(&d, id);
        assert!(reason.contains(&cause), "{id}: {reason}");
    }
    let out = d.ctl(&["call", "too-new", "zoo.v1.Zoo/Echo", "--data", "{}"]);
    assert!(!out.status.success(), "no call reaches a refused plugin");
}

#[test]
fn plugin_keygen_sign_and_verify_round_trip_and_a_tampered_binary_fails() {
    use std::os::unix::fs::PermissionsExt;

    let dir = scratch();
    let (key, public) = keygen(dir.path(), "release");
    assert!(public.starts_with("ed25519:") && public.len() == 8 + 64, "{public}");
    let public_file = dir.path().join("release.pub");
    assert_eq!(std::fs::read_to_string(&public_file).unwrap().trim(), public);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = ctl_local(&[
        "plugin".as_ref(),
        "keygen".as_ref(),
        "--secret".as_ref(),
        key.as_os_str(),
        "--public".as_ref(),
        dir.path().join("other.pub").as_os_str(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists; refusing to overwrite a key"), "{}", stderr(&again));

    let echo = copy_executable(&bins::example("echo"), dir.path(), "echo");
    let out = ctl_local(&[
        "plugin".as_ref(),
        "sign".as_ref(),
        echo.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--name".as_ref(),
        "echo".as_ref(),
        "--version".as_ref(),
        "1.2.0".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("wrote {}", sig_path(&echo).display())), "{}", stdout(&out));
    let digest = sha256(&echo);

    let verify = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["plugin".into(), "verify".into(), echo.clone().into()];
        args.extend(extra.iter().map(Into::into));
        ctl_local(&args)
    };
    let public_path = public_file.to_str().unwrap();
    for keys in [["--trusted-key", public.as_str()], ["--trusted-key", public_path]] {
        let out = verify(&keys);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.starts_with("valid: plugin \"echo\" version 1.2.0"), "{text}");
        assert!(text.contains(&format!("sha256:    {digest}")), "{text}");
        assert!(text.contains(std::env::consts::ARCH), "{text}");
    }
    let ok = verify(&["--trusted-key", &public, "--name", "echo", "--version", "1.2.0", "--sha256", &digest]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    // With a config: its trusted keys, and the entry's pin and version range.
    let config_with = |extra: &str| {
        let path = dir.path().join("supervisor.toml");
        let text = format!(
            "[supervisor]\ntrusted_keys = [{public:?}]\npolicies_dir = {:?}\n{}",
            bins::repo().join("policies").display().to_string(),
            plugin("echo", &echo, extra)
        );
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let cfg = config_with(&format!("sha256 = {digest:?}\nversion = \"^1.2\""));
    assert_eq!(verify(&["--config", &cfg]).status.code(), Some(0));
    // The same binary configured under another name is held to the name it declares.
    let path = dir.path().join("alias.toml");
    let text = format!(
        "[supervisor]\ntrusted_keys = [{public:?}]\npolicies_dir = {:?}\n{}",
        bins::repo().join("policies").display().to_string(),
        plugin("alias", &echo, "declared_name = \"echo\"")
    );
    std::fs::write(&path, text).unwrap();
    let alias = path.to_str().unwrap();
    for args in [vec!["--config", alias], vec!["--config", alias, "--name", "alias"]] {
        let out = verify(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).starts_with("valid: plugin \"echo\" version 1.2.0"), "{}", stdout(&out));
    }
    let cfg = config_with("version = \">=2\"");
    let out = verify(&["--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("signed version 1.2.0 is outside the configured range >=2"), "{}", stderr(&out));

    let (_, stranger) = keygen(dir.path(), "stranger");
    let zeros = "0".repeat(64);
    let invalid = [
        (vec!["--trusted-key", stranger.as_str()], "which is not among the trusted keys"),
        (vec!["--trusted-key", &public, "--name", "other"], "is for plugin \"echo\", not \"other\""),
        (vec!["--trusted-key", &public, "--version", "1.3.0"], "is for version \"1.2.0\", not \"1.3.0\""),
        (vec!["--trusted-key", &public, "--sha256", &zeros], "sha256 mismatch: expected 0000"),
    ];
    for (args, cause) in invalid {
        let out = verify(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("supervisorctl: INVALID: ") && err.contains(cause), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let unusable = [
        (vec![], "no trusted keys"),
        (vec!["--trusted-key", "ed25519:zz"], "--trusted-key \"ed25519:zz\""),
        (vec!["--trusted-key", "/nonexistent/key.pub"], "/nonexistent/key.pub"),
    ];
    for (args, cause) in unusable {
        let out = verify(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(cause), "{args:?}: {}", stderr(&out));
    }

    // One flipped byte after signing: the signature no longer covers it.
    flip_byte(&echo);
    let out = verify(&["--trusted-key", &public]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("binary sha256 {} does not match the signed sha256 {digest}", sha256(&echo))),
        "{err}"
    );

    // No signature at all.
    std::fs::remove_file(sig_path(&echo)).unwrap();
    let out = verify(&["--trusted-key", &public, "--name", "echo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is missing"), "{}", stderr(&out));

    // Arguments the supervisor could never match are refused at signing.
    for (name, version, cause) in [("echo", "v1", "is not a semver version"), ("../echo", "1.0.0", "--name:")] {
        let out = ctl_local(&[
            "plugin".as_ref(),
            "sign".as_ref(),
            echo.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
            "--version".as_ref(),
            version.as_ref(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{name} {version}");
        assert!(stderr(&out).contains(cause), "{}", stderr(&out));
    }
    // A key that is not there is an input that cannot be used, as `verify` says of one.
    let missing = key.with_file_name("no-such.key");
    let out = ctl_local(&[
        "plugin".as_ref(),
        "sign".as_ref(),
        echo.as_os_str(),
        "--key".as_ref(),
        missing.as_os_str(),
        "--name".as_ref(),
        "echo".as_ref(),
        "--version".as_ref(),
        "1.0.0".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing.display().to_string()), "{}", stderr(&out));
    assert!(!sig_path(&echo).exists(), "a refused signing writes nothing");
}
