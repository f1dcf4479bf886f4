//! Where a plugin's `data_dir` may be. The supervisor creates it, gives it to the
//! plugin's uid and makes it 0700 before every start, so a path that holds anything of
//! the host's would hand that to the plugin: `""` (the config's own directory), `/`,
//! `/etc`, the state directory. It must be a directory of its own, below a top-level one,
//! holding none of the supervisor's files or any plugin's binary or pinned contract, and
//! not inside the supervisor's own directories. Nor may it be, hold or lie inside another
//! plugin's: whichever started last would own the other's files.

use std::collections::BTreeMap;
use std::ops::Bound;
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
    /// The data directories of the plugins checked so far (each as written and where its
    /// links lead), with the index of the first plugin to have each.
    claimed: BTreeMap<PathBuf, usize>,
}

impl Guarded {
    pub(super) fn of(config: &Config, reach: Reach) -> Self {
        let s = &config.supervisor;
        let forms = |path: PathBuf| forms(&path, reach);
        if config.plugins.iter().all(|pl| pl.data_dir.is_none()) {
            return Self { dirs: Vec::new(), files: Vec::new(), reach, claimed: BTreeMap::new() };
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
        Self { dirs, files, reach, claimed: BTreeMap::new() }
    }

    /// Checks plugin `i`'s `data_dir`, if it has one, against the host's places and the
    /// data directories of the plugins checked before it; problems name the key. Called
    /// for each plugin in turn.
    pub(super) fn check(&mut self, config: &Config, plugin: &PluginConfig, i: usize, p: &mut Problems<'_>) {
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
            // Not claimed: it is to be moved anyway, and every data directory below it
            // would be said to be inside it.
            return;
        }
        let mine = forms(&dir, self.reach);
        if let Some((k, how, theirs)) = self.overlap(&mine) {
            let other = &config.plugins[k].name;
            p.at(
                &at,
                format!(
                    "{}: plugin {:?}'s data_dir {how} plugin {other:?}'s ({}, plugin[{k}].data_dir): each start gives a plugin's data_dir to its own uid, so one would take the other's files",
                    dir.display(),
                    plugin.name,
                    theirs.display()
                ),
            );
        }
        for form in mine {
            self.claimed.entry(form).or_insert(i);
        }
    }

    /// The plugin whose data directory one of `mine` (the forms of one) is, lies inside
    /// or holds, with how and the form of theirs it meets.
    fn overlap(&self, mine: &[PathBuf]) -> Option<(usize, &'static str, PathBuf)> {
        for me in mine {
            // Nearest first: itself, then the directories above it.
            for above in me.ancestors() {
                if let Some(&k) = self.claimed.get(above) {
                    let how = if above == me.as_path() { "would be" } else { "would be inside" };
                    return Some((k, how, above.to_path_buf()));
                }
            }
            // Paths order by their components, so the ones below `me` follow it at once.
            let below = self.claimed.range::<Path, _>((Bound::Excluded(me.as_path()), Bound::Unbounded)).next();
            if let Some((theirs, &k)) = below.filter(|(theirs, _)| theirs.starts_with(me)) {
                return Some((k, "would hold", theirs.clone()));
            }
        }
        None
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
        // Its owner and mode are set at each start without following a link there (the
        // start refuses one), as a link planted there would hand its target to the plugin.
        let as_opened: PathBuf = dir.components().collect();
        if self.reach == Reach::Files && std::fs::symlink_metadata(&as_opened).is_ok_and(|m| m.file_type().is_symlink())
        {
            let to = real.as_ref().map_or_else(String::new, |r| format!(" to {}", r.display()));
            return Some(format!("it is a symbolic link{to}; name the directory itself"));
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
        // The start opens it without following a link only at its last part: through
        // `sub/..`, a `sub` the plugin turned into a link would be followed, and the
        // directory above where it leads given to the plugin.
        if dir.components().any(|c| c == Component::ParentDir) {
            return Some(format!("it goes up with \"..\"; name the directory itself ({})", lexical.display()));
        }
        None
    }
}

/// `path` as written (lexically normalised) and, where validation may read the file
/// system and it exists, where its links lead.
fn forms(path: &Path, reach: Reach) -> Vec<PathBuf> {
    let lexical = normal(path);
    let real = match reach {
        Reach::Files => std::fs::canonicalize(path).ok().filter(|r| *r != lexical),
        Reach::TextOnly => None,
    };
    std::iter::once(lexical).chain(real).collect()
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
        assert_eq!(
            refused("/srv/p/data/sub/.."),
            "/etc/ps/supervisor.toml:9: plugin[0].data_dir: /srv/p/data/sub/..: it goes up with \"..\"; \
             name the directory itself (/srv/p/data); the plugin's uid would own it"
        );
    }

    /// The (key, message) of each problem of plugins with these data directories (the
    /// first one runs three replicas), or none when the config is taken.
    fn shared(dirs: &[&str]) -> Vec<(String, String)> {
        let mut text = "[supervisor.sandbox]\nallow_unsandboxed = true\n".to_owned();
        for (i, dir) in dirs.iter().enumerate() {
            let replicas = if i == 0 { 3 } else { 1 };
            text.push_str(&format!(
                "[[plugin]]\nname = \"p{i}\"\nbinary = \"/bin/true\"\ntier = \"none\"\nreplicas = {replicas}\ndata_dir = {dir:?}\n"
            ));
        }
        match load::parse(&text, Path::new("/etc/ps/supervisor.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| (p.key.clone(), p.message.clone())).collect(),
        }
    }

    const TAKEN: &str = "each start gives a plugin's data_dir to its own uid, so one would take the other's files";

    /// Each start chowns the data directory to the starting plugin's uid: two plugins
    /// sharing one (or one inside the other's) took each other's files.
    #[test]
    fn a_data_dir_that_is_holds_or_lies_inside_another_plugin_s_is_refused_naming_both() {
        assert_eq!(
            shared(&["/srv/d", "/srv/d/", "/srv/d/./c"]),
            [
                (
                    "plugin[1].data_dir".to_owned(),
                    format!(
                        "/srv/d/: plugin \"p1\"'s data_dir would be plugin \"p0\"'s (/srv/d, plugin[0].data_dir): {TAKEN}"
                    )
                ),
                (
                    "plugin[2].data_dir".to_owned(),
                    format!(
                        "/srv/d/./c: plugin \"p2\"'s data_dir would be inside plugin \"p0\"'s (/srv/d, plugin[0].data_dir): {TAKEN}"
                    )
                ),
            ]
        );
        assert_eq!(
            shared(&["/srv/d/a", "/srv/e", "/srv/d"]),
            [(
                "plugin[2].data_dir".to_owned(),
                format!(
                    "/srv/d: plugin \"p2\"'s data_dir would hold plugin \"p0\"'s (/srv/d/a, plugin[0].data_dir): {TAKEN}"
                )
            )]
        );
        // Neighbours, a name that only begins like another's, and one plugin's replicas
        // sharing its own.
        assert_eq!(shared(&["/srv/d", "/srv/d-2", "/srv/e/d", "/srv/dd/x"]), []);
    }

    #[test]
    fn a_data_dir_leading_to_another_plugin_s_through_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real_path = std::fs::canonicalize(real.join("sub")).unwrap();
        let (real, link) = (real.join("sub").display().to_string(), link.join("sub").display().to_string());
        assert_eq!(
            shared(&[&real, &link]),
            [(
                "plugin[1].data_dir".to_owned(),
                format!(
                    "{link}: plugin \"p1\"'s data_dir would be plugin \"p0\"'s ({}, plugin[0].data_dir): {TAKEN}",
                    real_path.display()
                )
            )]
        );
    }

    #[test]
    fn a_data_dir_that_is_a_link_is_refused_however_written() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("data");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        for written in ["", "/", "/."] {
            let err = refused(&format!("{}{written}", link.display()));
            assert!(
                err.contains(&format!("it is a symbolic link to {}; name the directory itself", real.display())),
                "{written:?}: {err}"
            );
        }
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
