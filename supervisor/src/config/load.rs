//! Reading a config file and checking it whole: every problem is reported
//! with the file, line and key, and a config with any problem is rejected.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::Config;

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when the place is known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `plugin[1].replicas`.
    pub key: String,
    pub message: String,
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The daemon reads its config again by path on every reload, and a FIFO or a
    /// device read once would hang or never end: only a regular file is a config.
    #[error("{}: cannot read config: it is a {kind}, not a regular file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// `problems` are the first [`MAX_PROBLEMS`] found; `more` counts the others.
    #[error("{}", render(file, problems, *more))]
    Invalid { file: PathBuf, problems: Vec<Problem>, more: usize },
}

/// The most problems a report lists: past them only their number is said, so that a
/// config of a million mistakes costs no more to refuse (nor to read the refusal of) than
/// one of a hundred.
pub const MAX_PROBLEMS: usize = 100;

impl ConfigError {
    /// The problems listed (at most [`MAX_PROBLEMS`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } | ConfigError::NotRegularFile { .. } => &[],
        }
    }
}

fn render(file: &Path, problems: &[Problem], more: usize) -> String {
    let mut lines = Vec::with_capacity(problems.len() + 1);
    for p in problems {
        lines.push(p.to_string_in(file));
    }
    match more {
        0 => {}
        1 => lines.push(format!("{}: and 1 more problem", file.display())),
        n => lines.push(format!("{}: and {n} more problems", file.display())),
    }
    lines.join("\n")
}

impl Problem {
    fn to_string_in(&self, file: &Path) -> String {
        match self.line {
            Some(line) => format!("{}:{line}: {}: {}", file.display(), self.key, self.message),
            None => format!("{}: {}: {}", file.display(), self.key, self.message),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Finds where keys are in the source text, for problems found after parsing.
pub(crate) struct Locator<'a> {
    text: &'a str,
    doc: Option<toml::Spanned<DeTable<'a>>>,
    /// The offset each line starts at: a line is found by a binary search rather than
    /// by counting from the top for every problem.
    line_starts: Vec<usize>,
}

/// A step in a key path: a table key or an array index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { text, doc: DeTable::parse(text).ok(), line_starts }
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        if !self.text.is_char_boundary(offset) {
            return 1;
        }
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The span of the last key in `path` (or of the array element).
    fn span(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut table: &DeTable<'_> = doc.get_ref();
        let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
        let mut span = None;
        for seg in path {
            match *seg {
                Seg::Key(k) => {
                    if let Some(v) = value {
                        table = v.get_ref().as_table()?;
                    }
                    let (key, v) = table.iter().find(|(key, _)| key.get_ref() == k)?;
                    span = Some(key.span());
                    value = Some(v);
                }
                Seg::Index(i) => {
                    let v = value?.get_ref().as_array()?.get(i)?;
                    span = Some(v.span());
                    value = Some(v);
                }
            }
        }
        span
    }

    /// How many `[[plugin]]` entries the text has (None when it does not parse).
    fn plugin_count(&self) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let (_, v) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == "plugin")?;
        v.get_ref().as_array().map(|a| a.len())
    }

    pub(crate) fn line(&self, path: &[Seg<'_>]) -> Option<usize> {
        self.span(path).map(|s| self.line_of(s.start))
    }
}

fn key_string(path: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Collects problems found while checking a parsed config: the first
/// [`MAX_PROBLEMS`] of them, and how many others.
pub(crate) struct Problems<'a> {
    loc: &'a Locator<'a>,
    list: Vec<Problem>,
    /// The key and message of each problem listed: the line follows from the key.
    listed: HashSet<(String, String)>,
    /// A hash of each problem past the list, to count them once each without keeping
    /// them (a 4 MiB config may hold a million); two that collide are counted as one.
    unlisted: HashSet<u64>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(loc: &'a Locator<'a>) -> Self {
        Self { loc, list: Vec::new(), listed: HashSet::new(), unlisted: HashSet::new() }
    }

    /// Records a problem at `path`; when the key itself is absent from the
    /// file (a default), the nearest enclosing key gives the line.
    pub(crate) fn at(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        // A shared setting (a default every plugin takes) is one problem, however many take it.
        let said = (key_string(path), message.into());
        if self.listed.contains(&said) {
            return;
        }
        if self.list.len() >= MAX_PROBLEMS {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            self.unlisted.insert(BuildHasherDefault::<DefaultHasher>::default().hash_one(&said));
            return;
        }
        let line = (1..=path.len()).rev().find_map(|n| self.loc.line(&path[..n]));
        self.list.push(Problem { line, key: said.0.clone(), message: said.1.clone() });
        self.listed.insert(said);
    }

    /// How many problems were found, listed or not.
    pub(crate) fn count(&self) -> usize {
        self.list.len() + self.unlisted.len()
    }

    /// The config at `file` refused for the problems found.
    pub(crate) fn into_error(self, file: &Path) -> ConfigError {
        ConfigError::Invalid { file: file.to_path_buf(), problems: self.list, more: self.unlisted.len() }
    }
}

/// The largest config read: a config of a thousand plugins is well under
/// 1 MiB, while parsing holds many times the text in memory (a 35 MB config
/// of 700,000 entries took 2 GB and 23 s before it was refused).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// The most `[[plugin]]` entries a config may have (each may run [`MAX_REPLICAS`]).
pub const MAX_PLUGINS: usize = 1024;
/// The most instances one plugin may run: as many as a daemon is sized for (1,000
/// instances within its memory and idle CPU budget, `bench --only scale`), so one plugin
/// scaled out may use the whole of it.
pub const MAX_REPLICAS: u32 = 1024;

/// Reads and checks the config at `path`. A file above
/// [`MAX_CONFIG_BYTES`] is refused before it is read whole.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Read { path: path.to_path_buf(), source };
    // Without waiting: opening a FIFO to read waits for a writer.
    let (file, meta) = crate::integrity::open_regular(path).map_err(|e| match e {
        crate::integrity::NotOpened::Kind(kind) => ConfigError::NotRegularFile { path: path.to_path_buf(), kind },
        crate::integrity::NotOpened::Io(e) => io(e),
    })?;
    let size = meta.len();
    if size > MAX_CONFIG_BYTES as u64 {
        return Err(too_large(path, size));
    }
    // The size can change after the check (or a device reports none).
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    // The size first: the cut may fall inside a character.
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_large(path, bytes.len() as u64));
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(not_text(path, e.as_bytes(), e.utf8_error().valid_up_to())),
    }
}

/// A config that is not UTF-8, with the place of its first byte that is not.
fn not_text(path: &Path, bytes: &[u8], at: usize) -> ConfigError {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
    let byte = bytes.get(at).map_or(String::new(), |b| format!(" (byte 0x{b:02x})"));
    ConfigError::Invalid {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: Some(line),
            key: "(text)".into(),
            message: format!("not UTF-8 text at column {column}{byte}: TOML is UTF-8"),
        }],
        more: 0,
    }
}

fn too_large(path: &Path, size: u64) -> ConfigError {
    let shown = if size > MAX_CONFIG_BYTES as u64 + 1 { format!("{size} bytes") } else { "larger".to_owned() };
    ConfigError::Invalid {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            key: "(size)".into(),
            message: format!("the config is {shown}; at most {} MiB is read", MAX_CONFIG_BYTES >> 20),
        }],
        more: 0,
    }
}

/// How far validation reaches beyond the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Everything, including the binaries and contract files the config names.
    Files,
    /// The text alone: no binary is looked at and no contract is compiled, so
    /// arbitrary input cannot make validation read the file system.
    TextOnly,
}

/// Parses and checks config text; `path` names it in errors and anchors
/// relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, Reach::Files)
}

/// Fuzz entry: arbitrary bytes through the whole TOML → [`Config`] path
/// (syntax, types, units, every check that needs no file) and the rendering
/// of every problem found. Whatever the input, no panic.
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_with(&text, Path::new("/fuzz/supervisor.toml"), Reach::TextOnly) {
        Ok(config) => {
            let _ = config.specs();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

pub(crate) fn parse_with(text: &str, path: &Path, reach: Reach) -> Result<Config, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(too_large(path, text.len() as u64));
    }
    let loc = Locator::new(text);
    let invalid = |problems| ConfigError::Invalid { file: path.to_path_buf(), problems, more: 0 };
    // Before the typed pass and the checks, which cost far more per entry.
    if let Some(n) = loc.plugin_count()
        && n > MAX_PLUGINS
    {
        let mut problems = Problems::new(&loc);
        problems.at(
            &[Seg::Key("plugin"), Seg::Index(MAX_PLUGINS)],
            format!("{n} plugins; a config may have at most {MAX_PLUGINS}"),
        );
        return Err(problems.into_error(path));
    }
    let de = match toml::de::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            let line = e.span().map(|s| loc.line_of(s.start));
            // When the error points at a key (a duplicate, say), name it.
            let key = e
                .span()
                .and_then(|s| text.get(s))
                .filter(|k| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                })
                .unwrap_or("(syntax)");
            return Err(invalid(vec![Problem { line, key: key.to_owned(), message: e.message().trim().to_owned() }]));
        }
    };
    let mut config: Config = match serde_path_to_error::deserialize(de) {
        Ok(c) => c,
        Err(e) => {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|s| loc.line_of(s.start));
            return Err(invalid(vec![Problem { line, key, message: inner.message().trim().to_owned() }]));
        }
    };
    config.source = Some(absolute(path));
    config.set_origin(absolute(path), text);
    let mut problems = Problems::new(&loc);
    let (specs, tiers) = super::validate::check(&config, &mut problems, reach);
    if problems.count() > 0 {
        return Err(problems.into_error(path));
    }
    config.set_checked(specs, tiers);
    Ok(config)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Counts how often each item occurs, for duplicate checks.
pub(crate) fn counts<'a>(items: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// Parses a config from a string, for embedders and tests.
impl std::str::FromStr for Config {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s, Path::new("<inline config>"))
    }
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load(path)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::{Reach, fuzz_one, parse_with};

    const VALID: &str = "[supervisor]\ntrusted_keys = [\"ed25519:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c\"]\n\n\
        [supervisor.defaults]\ncall_timeout = \"5s\"\n\n[[plugin]]\nname = \"echo\"\nbinary = \"/nonexistent/echo\"\n\
        sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nversion = \">=1.2, <2\"\n\
        contract = [\"/dev/zero\"]\nrequire_signature = true\n[plugin.config]\nn = 3\n";

    #[test]
    fn only_a_regular_file_is_read_as_a_config_and_the_others_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _listening) = crate::test_files::not_regular(dir.path());
        for (path, kind) in paths {
            let owned = path.clone();
            match crate::test_files::within_10s(&path, move || super::load(&owned)) {
                Err(e @ super::ConfigError::NotRegularFile { .. }) => assert_eq!(
                    e.to_string(),
                    format!("{}: cannot read config: it is a {kind}, not a regular file", path.display())
                ),
                other => panic!("{path:?}: expected NotRegularFile, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_config_that_is_not_utf8_names_the_line_and_column_of_its_first_stray_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.toml");
        std::fs::write(&path, b"[supervisor]\n# caf\xe9\n").unwrap();
        let err = super::load(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{}:2: (text): not UTF-8 text at column 6 (byte 0xe9): TOML is UTF-8", path.display()));
    }

    #[test]
    fn text_only_validation_touches_no_file() {
        // Neither the missing binary nor the device as a contract is looked at.
        let config = parse_with(VALID, Path::new("/fuzz/supervisor.toml"), Reach::TextOnly).unwrap();
        let spec = &config.specs()[0];
        assert!(spec.integrity.require_signature);
        assert!(spec.contract.is_none());
        // The full check does look, and says so.
        let err = parse_with(VALID, Path::new("/fuzz/supervisor.toml"), Reach::Files).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/echo"), "{err}");
    }

    /// Each problem was looked for in the whole list and its line counted from the top:
    /// 80,000 bad `env` entries took 21 s to refuse.
    #[test]
    fn a_config_of_many_problems_is_refused_at_once_listing_the_first_hundred() {
        let entries = vec!["\"=\""; 200_000].join(", ");
        let text = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\n\
             tier = \"none\"\nenv = [{entries}]\n"
        );
        let started = std::time::Instant::now();
        let err = super::parse(&text, Path::new("/etc/ps/test.toml")).unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.problems().len(), super::MAX_PROBLEMS);
        assert_eq!(
            err.problems()[99],
            super::Problem {
                line: Some(7),
                key: "plugin[0].env[99]".into(),
                message: "\"=\" is not an environment variable name".into()
            }
        );
        let said = err.to_string();
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 101);
        assert_eq!(lines[0], "/etc/ps/test.toml:7: plugin[0].env[0]: \"=\" is not an environment variable name");
        assert_eq!(lines[100], "/etc/ps/test.toml: and 199900 more problems");
        // Loose, for a loaded machine's debug build: the quadratic way took over 300 s.
        assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    }

    #[test]
    fn a_problem_found_again_past_the_list_is_not_counted_again() {
        let loc = super::Locator::new("a = 1\nb = 2\n");
        let mut p = super::Problems::new(&loc);
        for message in ["bad", "bad", "worse"] {
            for i in 0..super::MAX_PROBLEMS + 3 {
                p.at(&[super::Seg::Key("b"), super::Seg::Index(i)], message);
            }
        }
        let err = p.into_error(Path::new("/t.toml"));
        assert_eq!(err.problems().len(), super::MAX_PROBLEMS);
        assert_eq!(err.problems()[0].line, Some(2));
        let said = err.to_string();
        assert_eq!(said.lines().last(), Some("/t.toml: and 106 more problems"), "{said}");
        assert_eq!(said.lines().count(), 101);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
            fuzz_one(&data);
        }

        #[test]
        fn mutated_configs_never_panic(edits in prop::collection::vec((0usize..1024, any::<u8>()), 1..8)) {
            let mut data = VALID.as_bytes().to_vec();
            for (at, byte) in edits {
                let i = at % data.len();
                data[i] = byte;
            }
            fuzz_one(&data);
        }
    }
}
