//! The control socket admits only whom it should: it is created with the
//! configured mode, and the peer's uid is checked even when the mode is open.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::{Daemon, bins};

const NOBODY: u32 = 65534;

fn ctl_as_nobody(d: &Daemon) -> std::process::Output {
    ctl_as_nobody_with(d, &["status"])
}

fn ctl_as_nobody_with(d: &Daemon, args: &[&str]) -> std::process::Output {
    // The scratch directory must be traversable for the unprivileged user.
    for p in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap()
}

#[test]
fn the_control_socket_is_private_by_default() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    let mode = std::fs::metadata(d.control()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = ctl_as_nobody(&d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains(&format!("uid {NOBODY} may not open the socket")), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
}

#[test]
fn an_open_socket_still_refuses_a_uid_that_is_not_allowed() {
    let cfg = config_with("control_socket_mode = \"0666\"", &plugin("echo", &bins::example("echo"), ""));
    let d = Daemon::start(&cfg);
    let out = ctl_as_nobody(&d);
    // Told why, and what admits it, rather than "connection reset".
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "uid {NOBODY} was let in, or not told: {err}");
    assert_eq!(
        err.trim(),
        format!(
            "supervisorctl: permission denied: uid {NOBODY} may not use this supervisor's control socket; \
             add it to control_allowed_uids in the [supervisor] section of its config (root and the \
             supervisor's own uid are always admitted) (PermissionDenied)"
        )
    );
    assert!(out.stdout.is_empty());
    // `call` too: the refusal is the supervisor's, not a plugin's answer (64 + code).
    for args in [&["call", "echo", "echo.v1.Echo/Echo"][..], &["call", "echo", "echo.v1.Echo/Echo", "--timeout", "1s"]]
    {
        let out = ctl_as_nobody_with(&d, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.contains(&format!("permission denied: uid {NOBODY}")), "{args:?}: {err}");
    }
    let events = String::from_utf8_lossy(&d.ctl(&["events"]).stdout).to_string();
    assert!(events.contains(&format!("refused a control connection from uid {NOBODY}")), "{events}");
}

#[test]
fn a_uid_in_control_allowed_uids_is_admitted() {
    let extra = format!("control_socket_mode = \"0666\"\ncontrol_allowed_uids = [{NOBODY}]");
    let d = Daemon::start(&config_with(&extra, &plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", std::time::Duration::from_secs(30));
    let out = ctl_as_nobody(&d);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo-0"));
}
