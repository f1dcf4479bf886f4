//! Where a plugin's `data_dir` may be. The supervisor creates it, gives it to the
//! plugin's uid and makes it 0700 before every start, so a path that holds anything of
//! the host's would hand that to the plugin: `""` (the config's own directory), `/`,
//! `/etc`, the state directory. It must be a directory of its own, below a top-level one,
//! holding none of the supervisor's files or any plugin's binary.

use std::path::{Component, Path, PathBuf};

use super::load::{Problems, Seg};
use super::{Config, PluginConfig};

/// Checks plugin `i`'s `data_dir`, if it has one; problems name the key.
pub(super) fn check(config: &Config, plugin: &PluginConfig, i: usize, p: &mut Problems<'_>) {
    let Some(raw) = &plugin.data_dir else { return };
    let at = [Seg::Key("plugin"), Seg::Index(i), Seg::Key("data_dir")];
    if raw.as_os_str().is_empty() {
        p.at(&at, "must not be empty (it would be the config file's own directory)");
        return;
    }
    if raw.as_os_str().as_encoded_bytes().contains(&0) {
        p.at(&at, "paths cannot contain NUL characters");
        return;
    }
    let dir = config.resolve(raw);
    if let Some(problem) = problem(&dir, &guarded(config)) {
        p.at(&at, format!("{}: {problem}; the plugin's uid would own it", dir.display()));
    }
}

/// What `dir` may not be or hold, and where each is.
fn guarded(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let s = &config.supervisor;
    let mut out = vec![
        ("the policies directory", config.resolve(&s.policies_dir)),
        ("the state directory", config.resolve(&s.state_dir)),
        ("the runtime directory", config.resolve(&s.runtime_dir)),
    ];
    if let Some(file) = &config.source {
        out.push(("the config file", file.clone()));
    }
    out.extend(config.plugins.iter().map(|pl| ("a plugin's binary", config.resolve(&pl.binary))));
    out
}

/// Why `dir` cannot be a data directory, if it cannot: checked as written and, where the
/// paths exist, with their symbolic links followed.
fn problem(dir: &Path, guarded: &[(&'static str, PathBuf)]) -> Option<String> {
    let lexical = normal(dir);
    if lexical.components().filter(|c| matches!(c, Component::Normal(_))).count() < 2 {
        return Some("it is / or a top-level directory".into());
    }
    let real = std::fs::canonicalize(dir).ok();
    if let Some(real) = &real
        && real.components().filter(|c| matches!(c, Component::Normal(_))).count() < 2
    {
        return Some(format!("it leads to {}, / or a top-level directory", real.display()));
    }
    for (what, path) in guarded {
        let candidates = [Some(normal(path)), std::fs::canonicalize(path).ok()];
        for mine in [Some(&lexical), real.as_ref()].into_iter().flatten() {
            if let Some(theirs) = candidates.iter().flatten().find(|theirs| theirs.starts_with(mine)) {
                return Some(format!("it holds {what} ({})", theirs.display()));
            }
        }
    }
    None
}

/// `path` with `.` dropped and `..` taken back, without asking the file system.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::load;

    /// The problem `data_dir = "{dir}"` gives in a config at /etc/ps/supervisor.toml.
    fn refused(dir: &str) -> String {
        let text = format!(
            "[supervisor]\nstate_dir = \"/var/lib/ps\"\n[supervisor.sandbox]\nallow_unsandboxed = true\n\
             [[plugin]]\nname = \"a\"\nbinary = \"/usr/local/bin/a\"\ntier = \"none\"\ndata_dir = \"{dir}\"\n"
        );
        // Only what is said of data_dir: the binary does not exist here.
        match load::parse(&text, Path::new("/etc/ps/supervisor.toml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string().lines().filter(|l| l.contains("data_dir")).collect(),
        }
    }

    #[test]
    fn a_data_dir_holding_the_host_s_files_is_refused_naming_what_it_holds() {
        let cases = [
            ("", "plugin[0].data_dir: must not be empty (it would be the config file's own directory)"),
            (".", "/etc/ps/.: it holds the config file (/etc/ps/supervisor.toml)"),
            ("/", "/: it is / or a top-level directory; the plugin's uid would own it"),
            ("/etc", "/etc: it is / or a top-level directory"),
            ("/tmp/../etc", "/tmp/../etc: it is / or a top-level directory"),
            ("/var/lib", "/var/lib: it holds the state directory (/var/lib/ps)"),
            ("/usr/local", "/usr/local: it holds a plugin's binary (/usr/local/bin/a)"),
            ("/run/plugin-supervisor", "it holds the runtime directory (/run/plugin-supervisor)"),
        ];
        for (dir, expected) in cases {
            let err = refused(dir);
            assert!(err.contains(expected), "data_dir = {dir:?}: {err}");
        }
        assert!(refused("/etc/ps/supervisor.toml.d").is_empty(), "a sibling of the config file is its own");
        assert!(refused("/var/lib/ps-data/a").is_empty(), "{}", refused("/var/lib/ps-data/a"));
        assert!(refused("data/a").is_empty(), "relative to the config file: {}", refused("data/a"));
    }

    #[test]
    fn a_data_dir_that_is_a_link_to_a_guarded_place_is_refused_where_it_leads() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("data");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = refused(&link.display().to_string());
        assert!(err.contains("it leads to /etc, / or a top-level directory"), "{err}");
    }
}
