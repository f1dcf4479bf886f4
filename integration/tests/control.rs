//! The control socket admits only whom it should: it is created with the
//! configured mode, and the peer's uid is checked even when the mode is open.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::{Daemon, bins};

const NOBODY: u32 = 65534;

fn ctl_as_nobody(d: &Daemon) -> std::process::Output {
    // The scratch directory must be traversable for the unprivileged user.
    for p in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .arg("status")
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
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
}

#[test]
fn an_open_socket_still_refuses_a_uid_that_is_not_allowed() {
    let cfg = config_with("control_socket_mode = \"0666\"", &plugin("echo", &bins::example("echo"), ""));
    let d = Daemon::start(&cfg);
    let out = ctl_as_nobody(&d);
    assert!(!out.status.success(), "uid {NOBODY} was let in");
    let events = String::from_utf8_lossy(&d.ctl(&["events"]).stdout).to_string();
    assert!(events.contains(&format!("refused a control connection from uid {NOBODY}")), "{events}");
}
