//! A real terminal for tests of what a command shows on one: a tmux server of
//! its own (its socket in a scratch directory, no user config), one pane
//! running a shell line, and what the pane shows, with or without its colour
//! codes. Dropping it ends the server and what runs in the pane.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Tmux {
    dir: tempfile::TempDir,
    pub session: String,
}

/// The line the pane's shell prints when the command is done: its exit status and
/// whether the terminal's settings (`stty -g`) are as they were before it.
pub const DONE: &str = "[done exit ";

impl Tmux {
    /// Runs `line` (a shell command line) in a `columns` x `rows` pane. When it ends
    /// the shell prints `[done exit N, terminal same]` (or `changed`) and waits, so
    /// what the command left on the screen stays to be read.
    pub fn run(line: &str, columns: u16, rows: u16) -> Self {
        let dir = tempfile::Builder::new().prefix("ps-tmux-").tempdir().expect("tempdir");
        let t = Self { dir, session: "test".into() };
        let script = format!(
            "before=$(stty -g); {line}; rc=$?; \
             if [ \"$(stty -g)\" = \"$before\" ]; then t=same; else t=changed; fi; \
             echo \"{DONE}$rc, terminal $t]\"; read _"
        );
        let (columns, rows) = (columns.to_string(), rows.to_string());
        let out =
            t.tmux(&["new-session", "-d", "-s", t.session.as_str(), "-x", &columns, "-y", &rows, "sh", "-c", &script]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .output()
            .expect("run tmux (scripts/test-all.sh installs it)")
    }

    /// What the pane shows, as text.
    pub fn screen(&self) -> String {
        self.capture(&[])
    }

    /// What the pane shows, with its colours as escape codes.
    pub fn screen_with_colours(&self) -> String {
        self.capture(&["-e"])
    }

    fn capture(&self, extra: &[&str]) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", self.session.as_str()];
        args.extend_from_slice(extra);
        let out = self.tmux(&args);
        assert!(out.status.success(), "tmux capture-pane: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format about the pane, e.g. `#{alternate_on}` (1 while the program
    /// shows the alternate screen) or `#{cursor_flag}` (1 while the cursor shows).
    pub fn format(&self, format: &str) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", self.session.as_str(), format]);
        assert!(out.status.success(), "tmux display-message: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Types `keys` into the pane, in tmux's key names (`q`, `C-c`).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session.as_str()];
        args.extend_from_slice(keys);
        let out = self.tmux(&args);
        assert!(out.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until the screen shows what `pred` looks for; returns that screen.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("the pane did not show {what} within {timeout:?}; it shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the command to end; returns the `[done exit N, terminal same]` line.
    pub fn wait_done(&self, timeout: Duration) -> String {
        let screen = self.wait_for("the command's end", timeout, |s| s.contains(DONE));
        screen.lines().find(|l| l.contains(DONE)).unwrap_or_default().trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Closing the pane hangs up on what runs in it.
        let _ = self.tmux(&["kill-server"]);
    }
}

/// `text` with each `'` escaped for a single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
