//! Colour only on a terminal: `status` and `list` colour an instance's state
//! in a real terminal (a tmux pane), not with `NO_COLOR` set, never when
//! piped; and what they print on a terminal is, colour codes aside, byte for
//! byte what they print into a pipe.

use std::process::Command;
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::tmux::{Tmux, quote};
use plugin_integration::{Daemon, bins};

const UP: Duration = Duration::from_secs(30);
const SHOWN: Duration = Duration::from_secs(20);
const GREEN: &str = "\x1b[32m";

fn ctl_line(d: &Daemon, args: &str) -> String {
    format!(
        "{} --socket {} {args}",
        quote(&bins::supervisorctl().display().to_string()),
        quote(&d.control().display().to_string())
    )
}

/// What `args` prints on a terminal (util-linux's `script` gives it a pty), as bytes.
fn on_a_tty(d: &Daemon, args: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", &format!("env -u NO_COLOR {}", ctl_line(d, args)), "/dev/null"])
        .output()
        .expect("run script");
    String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n")
}

fn piped(d: &Daemon, args: &[&str]) -> String {
    let out = d.ctl(args);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `text` without SGR codes.
fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once('m').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

#[test]
fn states_are_coloured_on_a_terminal_only() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);

    let line = format!("env -u NO_COLOR {}; env -u NO_COLOR {}", ctl_line(&d, "status"), ctl_line(&d, "list"));
    let pane = Tmux::run(&line, 200, 20);
    assert_eq!(pane.wait_done(SHOWN), "[done exit 0, terminal same]");
    let screen = pane.screen_with_colours();
    let row = screen.lines().find(|l| l.starts_with("echo ")).unwrap_or_else(|| panic!("{screen:?}"));
    assert!(row.contains(&format!("{GREEN}running")), "status: {row:?}");
    assert!(screen.contains(&format!("echo ({GREEN}running")), "list: {screen:?}");
    drop(pane);

    let pane = Tmux::run(&format!("NO_COLOR=1 {}", ctl_line(&d, "status")), 200, 20);
    pane.wait_done(SHOWN);
    let screen = pane.screen_with_colours();
    assert!(screen.contains("running") && !screen.contains('\x1b'), "NO_COLOR: {screen:?}");

    for args in [&["status"][..], &["list"]] {
        let text = piped(&d, args);
        assert!(text.contains("running") && !text.contains('\x1b'), "{args:?} piped: {text:?}");
    }
}

#[test]
fn colour_aside_a_terminal_gets_the_same_bytes_as_a_pipe() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    let tty = on_a_tty(&d, "list");
    assert!(tty.contains(GREEN), "{tty:?}");
    assert_eq!(strip(&tty), piped(&d, &["list"]));
    // status shows the uptime in seconds: taken again when a second passed between the two.
    let mut last = (String::new(), String::new());
    for _ in 0..3 {
        let tty = on_a_tty(&d, "status");
        let pipe = piped(&d, &["status"]);
        assert!(tty.contains(GREEN), "{tty:?}");
        last = (strip(&tty), pipe);
        if last.0 == last.1 {
            break;
        }
    }
    assert_eq!(last.0, last.1);
}
