//! Where a plugin's `data_dir` may be. The supervisor creates it, gives it to the
//! plugin's uid and makes it 0700 before every start, so a path that holds anything of
//! the host's would hand that to the plugin: `""` (the config's own directory), `/`,
//! `/etc`, the state directory. It must be a directory of its own, below a top-level one,
//! holding none of the supervisor's files or any plugin's binary or pinned contract, and
//! not inside the supervisor's own directories.

use std::path::{Component, Path, PathBuf};

use super::load::{Problems, Reach, Seg};
use super::{Config, PluginConfig};

/// What no plugin's data directory may hold or (for the supervisor's directories) lie in,
/// each as written and, where validation may read the file system, where its links lead.
/// Found once per config: every plugin's data directory is checked against all of it.
pub(super) struct Guarded {
    /// Directories of the supervisor's own: a data directory may neither hold one nor lie
    /// inside one.
    dirs: Vec<(&'static str, Vec<PathBuf>)>,
    /// Files a data directory may not hold.
    files: Vec<(&'static str, Vec<PathBuf>)>,
    reach: Reach,
}

impl Guarded {
    pub(super) fn of(config: &Config, reach: Reach) -> Self {
        let s = &config.supervisor;
        let forms = |path: PathBuf| {
            let real = match reach {
                Reach::Files => std::fs::canonicalize(&path).ok(),
                Reach::TextOnly => None,
            };
            std::iter::once(normal(&path)).chain(real).collect::<Vec<_>>()
        };
        if config.plugins.iter().all(|pl| pl.data_dir.is_none()) {
            return Self { dirs: Vec::new(), files: Vec::new(), reach };
        }
        let mut dirs: Vec<_> = [
            ("the policies directory", &s.policies_dir),
            ("the state directory", &s.state_dir),
            ("the runtime directory", &s.runtime_dir),
        ]
        .into_iter()
        .map(|(what, dir)| (what, forms(config.resolve(dir))))
        .collect();
        let mut files: Vec<_> = config.source.iter().map(|f| ("the config file", forms(f.clone()))).collect();
        for pl in &config.plugins {
            files.push(("a plugin's binary", forms(config.resolve(&pl.binary))));
            for c in &pl.contract {
                files.push(("a plugin's pinned contract", forms(config.resolve(c))));
            }
            // Where a pinned contract's imports are found: a plugin writing there could
            // change what its pin says.
            for d in &pl.contract_includes {
                dirs.push(("a pinned contract's import directory", forms(config.resolve(d))));
            }
        }
        Self { dirs, files, reach }
    }

    /// Checks plugin `i`'s `data_dir`, if it has one; problems name the key.
    pub(super) fn check(&self, config: &Config, plugin: &PluginConfig, i: usize, p: &mut Problems<'_>) {
        let Some(raw) = &plugin.data_dir else { return };
        let at = [Seg::Key("plugin"), Seg::Index(i), Seg::Key("data_dir")];
        if let Some(problem) =
            super::validate::unusable_path(raw, "must not be empty (it would be the config file's own directory)")
        {
            p.at(&at, problem);
            return;
        }
        let dir = config.resolve(raw);
        if let Some(problem) = self.problem(&dir) {
            p.at(&at, format!("{}: {problem}; the plugin's uid would own it", dir.display()));
        }
    }

    /// Why `dir` cannot be a data directory, if it cannot.
    fn problem(&self, dir: &Path) -> Option<String> {
        let top_level = |d: &Path| d.components().filter(|c| matches!(c, Component::Normal(_))).count() < 2;
        let lexical = normal(dir);
        if top_level(&lexical) {
            return Some("it is / or a top-level directory".into());
        }
        let real = match self.reach {
            Reach::Files => std::fs::canonicalize(dir).ok(),
            Reach::TextOnly => None,
        };
        if let Some(real) = real.as_ref().filter(|r| top_level(r)) {
            return Some(format!("it leads to {}, / or a top-level directory", real.display()));
        }
        let mine: Vec<&PathBuf> = std::iter::once(&lexical).chain(&real).collect();
        // Directories every uid writes to: the teardown sweeps the plugin's uid's files at
        // their top, so one as its data directory would lose what it keeps at every stop
        // (a data directory inside one, such as /var/tmp/zoo, is its own and kept).
        for shared in SHARED_DIRS.map(Path::new) {
            if mine.iter().any(|me| shared.starts_with(me)) {
                return Some(format!("it is or holds {}, which every uid writes to", shared.display()));
            }
        }
        for (what, forms) in &self.dirs {
            for (theirs, me) in forms.iter().flat_map(|t| mine.iter().map(move |m| (t, m))) {
                if theirs.starts_with(me) {
                    return Some(format!("it holds {what} ({})", theirs.display()));
                }
                if me.starts_with(theirs) {
                    return Some(format!("it is inside {what} ({})", theirs.display()));
                }
            }
        }
        for (what, forms) in &self.files {
            for (theirs, me) in forms.iter().flat_map(|t| mine.iter().map(move |m| (t, m))) {
                if theirs.starts_with(me) {
                    return Some(format!("it holds {what} ({})", theirs.display()));
                }
            }
        }
        None
    }
}

/// The directories every uid may write to, which the teardown sweeps.
const SHARED_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"];

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
        let inside = refused("/var/lib/ps/a");
        assert!(inside.contains("it is inside the state directory (/var/lib/ps)"), "{inside}");
        assert!(refused("/var/lib/ps-data/a").is_empty(), "{}", refused("/var/lib/ps-data/a"));
        assert!(refused("data/a").is_empty(), "relative to the config file: {}", refused("data/a"));
        // Where every uid writes, the teardown sweeps the uid's files: one inside is its own.
        for shared in ["/var/tmp", "/dev/shm", "/var/tmp/x/.."] {
            let err = refused(shared);
            assert!(err.contains("which every uid writes to"), "data_dir = {shared:?}: {err}");
        }
        assert!(refused("/var/tmp/zoo").is_empty(), "{}", refused("/var/tmp/zoo"));
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
