//! Routing by plugin and who may call, over the real `gateway.sock`: one
//! binary configured under two names, both serving one service, each
//! reached by `x-plugin` and the call naming neither refused; and callers
//! run under other uids and groups, those outside a plugin's `callers`
//! told exactly what a call to an unknown service is told.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::pb::zoo::SyscallRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);

/// Which process answered a `Syscall getpid` sent with `x-plugin: plugin`
/// (none: no header); the status when the call failed.
async fn pid_behind(gateway: &Path, plugin: Option<&str>) -> Result<i64, tonic::Status> {
    let mut zoo = ZooClient::new(connect(gateway).await.unwrap());
    let mut req = tonic::Request::new(SyscallRequest { name: "getpid".into(), ..Default::default() });
    if let Some(p) = plugin {
        req.metadata_mut().insert("x-plugin", p.parse().unwrap());
    }
    zoo.syscall(req).await.map(|r| r.into_inner().result)
}

#[tokio::test]
async fn one_binary_under_two_names_serves_both_each_reached_by_x_plugin() {
    let zoo = bins::zoo();
    let d = Daemon::start(&config(&format!(
        "{}{}",
        plugin("zoo-a", &zoo, "declared_name = \"zoo\""),
        plugin("zoo-b", &zoo, "declared_name = \"zoo\"")
    )));
    let a = d.wait_state("zoo-a-0", "running", UP)["pid"].as_i64().unwrap();
    let b = d.wait_state("zoo-b-0", "running", UP)["pid"].as_i64().unwrap();
    assert_ne!(a, b);

    assert_eq!(pid_behind(&d.gateway(), Some("zoo-a")).await.unwrap(), a);
    assert_eq!(pid_behind(&d.gateway(), Some("zoo-b")).await.unwrap(), b);

    let ambiguous = pid_behind(&d.gateway(), None).await.unwrap_err();
    assert_eq!(ambiguous.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        ambiguous.message(),
        "service zoo.v1.Zoo is served by several plugins (zoo-a, zoo-b): name one in the x-plugin header"
    );
    let elsewhere = pid_behind(&d.gateway(), Some("zoo")).await.unwrap_err();
    assert_eq!((elsewhere.code(), elsewhere.message()), (tonic::Code::Unimplemented, "unknown service zoo.v1.Zoo"));

    // The operator's `supervisorctl call` goes by the plugin's own channel.
    let out = d.ctl(&["call", "zoo-b", "zoo.v1.Zoo/Syscall", "--data", r#"{"name":"getpid"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let result = json["result"].as_i64().or_else(|| json["result"].as_str().and_then(|r| r.parse().ok()));
    assert_eq!(result, Some(b), "{json}");
}

#[tokio::test]
async fn a_plugin_declaring_a_service_its_entry_does_not_list_is_refused_and_takes_no_calls() {
    let zoo = bins::zoo();
    // zoo-b, listed for another service, would have made the unnamed call ambiguous.
    let d = Daemon::start(&config(&format!(
        "{}{}",
        plugin("zoo-a", &zoo, "declared_name = \"zoo\"\nservices = [\"zoo.v1.Zoo\"]"),
        plugin("zoo-b", &zoo, "declared_name = \"zoo\"\nservices = [\"billing.v1.Billing\"]")
    )));
    let a = d.wait_state("zoo-a-0", "running", UP)["pid"].as_i64().unwrap();
    let b = d.wait_state("zoo-b-0", "failed", UP);
    assert_eq!(
        b["reason"].as_str().unwrap(),
        "refused: plugin declares service \"zoo.v1.Zoo\", which its entry's services do not list (they are: \
         billing.v1.Billing)",
        "{b}"
    );
    assert_eq!(pid_behind(&d.gateway(), None).await.unwrap(), a, "the unnamed call reaches the one plugin serving it");
}

/// A call to echo.v1.Echo naming no plugin: Ok, or the status.
async fn echo_unnamed(gateway: &Path) -> Result<(), tonic::Status> {
    use plugin_integration::pb::echo::{EchoRequest, echo_client::EchoClient};
    let mut echo = EchoClient::new(connect(gateway).await.unwrap());
    echo.echo(EchoRequest { message: "hi".into() }).await.map(drop)
}

#[tokio::test]
async fn a_plugin_is_routed_by_the_services_of_the_revision_taking_calls() {
    let (zoo, echo) = (bins::zoo(), bins::example("echo"));
    let e_before = plugin("e", &echo, "declared_name = \"echo\"");
    let e_after = plugin("e", &zoo, "declared_name = \"zoo\"");
    let d = Daemon::start(&config(&format!(
        "{}{e_before}{}",
        plugin("a", &zoo, "declared_name = \"zoo\""),
        plugin("e2", &echo, "declared_name = \"echo\"")
    )));
    let a = d.wait_state("a-0", "running", UP)["pid"].as_i64().unwrap();
    d.wait_state("e-0", "running", UP);
    d.wait_state("e2-0", "running", UP);
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace(&e_before, &e_after)).unwrap();

    // e's new revision serves zoo.v1.Zoo but not echo.v1.Echo, which breaks its contract:
    // refused, it serves nothing, and a stays zoo.v1.Zoo's only plugin.
    let out = d.ctl(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(pid_behind(&d.gateway(), None).await.unwrap(), a, "a refused revision serves nothing");
    let ambiguous = echo_unnamed(&d.gateway()).await.unwrap_err();
    assert!(ambiguous.message().contains("(e, e2)"), "{ambiguous:?}");

    // Allowed, it switches: e serves zoo.v1.Zoo beside a, and echo.v1.Echo is e2's alone.
    let out = d.ctl(&["update", "--allow-breaking"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ambiguous = pid_behind(&d.gateway(), None).await.unwrap_err();
    assert_eq!(
        (ambiguous.code(), ambiguous.message()),
        (
            tonic::Code::FailedPrecondition,
            "service zoo.v1.Zoo is served by several plugins (a, e): name one in the x-plugin header"
        )
    );
    echo_unnamed(&d.gateway()).await.expect("echo.v1.Echo is e2's alone once e dropped it");
}

#[test]
fn an_entry_named_otherwise_is_refused_unless_its_binary_declares_what_it_says() {
    let d = Daemon::start(&config(&format!(
        "{}{}",
        plugin("zoo-c", &bins::zoo(), ""),
        plugin("zoo-d", &bins::example("echo"), "declared_name = \"zoo\"")
    )));
    for (id, cause) in [
        ("zoo-c-0", "plugin answered the handshake as \"zoo\", but the config names it \"zoo-c\""),
        ("zoo-d-0", "plugin answered the handshake as \"echo\", but the config says its binary declares \"zoo\""),
    ] {
        let v = d.wait_state(id, "failed", UP);
        let reason = v["reason"].as_str().unwrap();
        assert!(reason.starts_with("refused: ") && reason.contains(cause), "{id}: {reason}");
    }
}

/// Callers' uids and groups: outside the default `uid_range` (61184–65519), so
/// no plugin of any test is given them.
const ALLOWED_UID: u32 = 70001;
const STRANGER_UID: u32 = 70002;
const MEMBER_UID: u32 = 70003;
const ALLOWED_GROUP: u32 = 70010;

/// What `echo_caller` prints when run as `uid` with primary group `gid` and
/// supplementary `groups`: `OK hi`, or the code and message.
fn call_as(d: &Daemon, uid: u32, gid: u32, groups: &[u32], plugin: Option<&str>) -> String {
    call_from(d, None, uid, gid, groups, plugin)
}

/// The `cgroup.procs` of the cgroup `pid` is in: its pids hierarchy's where the host
/// has one (v1), else its v2 cgroup.
fn cgroup_procs_of(pid: i64) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = |prefix: &str| text.lines().find_map(|l| l.split_once(prefix).map(|(_, path)| path.to_owned()));
    let (mount, path) = match line(":pids:") {
        Some(path) => ("/sys/fs/cgroup/pids", path),
        None => ("/sys/fs/cgroup", line("0::").unwrap()),
    };
    Path::new(mount).join(path.trim_start_matches('/')).join("cgroup.procs")
}

/// [`call_as`], from inside the cgroup whose `cgroup.procs` is `procs` when given.
fn call_from(d: &Daemon, procs: Option<&Path>, uid: u32, gid: u32, groups: &[u32], plugin: Option<&str>) -> String {
    let mut cmd = Command::new(bins::echo_caller());
    cmd.arg(d.gateway()).args(plugin);
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let procs = procs.map(|p| std::fs::OpenOptions::new().write(true).open(p).unwrap());
    let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: write, setgroups, setgid and setuid are async-signal-safe system calls;
    // they read only `groups` and the descriptor, which outlive the spawn. std's own
    // uid/gid setting would run after this closure could set the groups, so all are
    // done here, in order (the move into the cgroup first, while still root).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run echo_caller");
    assert!(out.status.success(), "echo_caller as {uid}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_caller_outside_callers_is_told_the_service_does_not_exist() {
    let callers = format!("callers = [\"uid:{ALLOWED_UID}\", \"gid:{ALLOWED_GROUP}\", \"plugin:zoo\"]");
    let d = Daemon::start(&config_with(
        "gateway_socket_mode = \"0666\"\n[supervisor.sandbox]\nuid_range = [61184, 65400]\n",
        &format!(
            "{}{}",
            plugin("guarded", &bins::example("echo"), &format!("declared_name = \"echo\"\n{callers}")),
            plugin("zoo", &bins::zoo(), "")
        ),
    ));
    // Other users reach the socket through the test's scratch directories.
    for dir in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    d.wait_state("guarded-0", "running", UP);
    let zoo_pid = d.wait_state("zoo-0", "running", UP)["pid"].as_i64().unwrap();
    let zoo_uid: u32 = plugin_integration::procfs::status_field(i32::try_from(zoo_pid).unwrap(), "Uid")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    assert_eq!(call_as(&d, ALLOWED_UID, ALLOWED_UID, &[], None), "OK hi");
    assert_eq!(call_as(&d, ALLOWED_UID, ALLOWED_UID, &[], Some("guarded")), "OK hi");
    // The group, as a supplementary one and as the primary one.
    assert_eq!(call_as(&d, MEMBER_UID, MEMBER_UID, &[7, ALLOWED_GROUP], None), "OK hi");
    assert_eq!(call_as(&d, MEMBER_UID, ALLOWED_GROUP, &[], None), "OK hi");

    // Denied: exactly what a service no plugin serves gets, naming nothing else.
    let unknown = "Unimplemented unknown service echo.v1.Echo";
    assert_eq!(call_as(&d, STRANGER_UID, STRANGER_UID, &[7], None), unknown);
    assert_eq!(call_as(&d, STRANGER_UID, STRANGER_UID, &[7], Some("guarded")), unknown);
    assert_eq!(call_as(&d, STRANGER_UID, STRANGER_UID, &[7], Some("zoo")), unknown);
    // zoo's uid is not enough for `plugin:zoo`: a host process given the same number (a
    // systemd DynamicUser service, in the same range) is not inside zoo's cgroup.
    assert_eq!(call_as(&d, zoo_uid, zoo_uid, &[], None), unknown);
    // Inside zoo's cgroup with zoo's uid, it is one of zoo's processes.
    let zoo_cgroup = cgroup_procs_of(zoo_pid);
    assert_eq!(call_from(&d, Some(&zoo_cgroup), zoo_uid, zoo_uid, &[], None), "OK hi");
    // Inside it with another uid, it is not.
    assert_eq!(call_from(&d, Some(&zoo_cgroup), STRANGER_UID, STRANGER_UID, &[], None), unknown);
    // Root is no exception: it is not listed. (Its client here is this test.)
    let mut echo = plugin_integration::pb::echo::echo_client::EchoClient::new(connect(&d.gateway()).await.unwrap());
    let root = echo.echo(plugin_integration::pb::echo::EchoRequest { message: "hi".into() }).await.unwrap_err();
    assert_eq!(format!("{:?} {}", root.code(), root.message()), unknown);
    // The unlisted may still call what is open to everyone.
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let req = SyscallRequest { name: "getpid".into(), ..Default::default() };
    assert!(zoo.syscall(req).await.is_ok());

    // The operator's `supervisorctl call` is not limited by `callers`.
    let out = d.ctl(&["call", "guarded", "echo.v1.Echo/Echo", "--data", r#"{"message":"op"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["message"], "op");

    // `update` applies a callers change in place: the next call is judged by it.
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace(&format!("uid:{ALLOWED_UID}"), &format!("uid:{STRANGER_UID}"))).unwrap();
    let out = d.ctl(&["update"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "guarded: applied in place: callers");
    assert_eq!(call_as(&d, STRANGER_UID, STRANGER_UID, &[7], None), "OK hi");
    assert_eq!(call_as(&d, ALLOWED_UID, ALLOWED_UID, &[], None), unknown);
}
