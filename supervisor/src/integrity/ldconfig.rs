//! The library directories named by `/etc/ld.so.conf` and its `include`s, read the way
//! ldconfig reads them: these are the directories behind `/etc/ld.so.cache`.
//!
//! Like ldconfig, unreadable or missing files are skipped rather than fatal: the loader then
//! simply does not know those directories, and neither should we.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::glob::{expand_glob, glob_match};

pub const DEFAULT_LD_SO_CONF: &str = "/etc/ld.so.conf";

/// A conf file over this size is not a conf file; refusing it bounds memory.
const MAX_CONF_SIZE: u64 = 1 << 20;
/// Include nesting deeper than this is a loop the visited-set missed or a hostile tree.
const MAX_DEPTH: usize = 16;

/// One meaningful line of an ld.so.conf file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfLine {
    /// An absolute directory, trailing slashes removed.
    Dir(PathBuf),
    /// An `include` pattern, made absolute against the including file's directory.
    Include(PathBuf),
}

/// Directories named by `conf` and everything it includes, in ldconfig's order, deduplicated.
pub fn read_dirs(conf: &Path) -> Vec<PathBuf> {
    let mut reader = Reader::default();
    reader.read_file(conf, 0);
    reader.dirs
}

/// Parses one file's text. `dir` is the including file's directory, for relative includes.
pub fn parse(text: &str, dir: &Path) -> Vec<ConfLine> {
    let mut out = Vec::new();
    for raw in text.lines() {
        // The format has no quoting, so '#' always starts a comment (as in ldconfig).
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = keyword_arg(line, "include") {
            for pattern in rest.split([' ', '\t']).filter(|p| !p.is_empty()) {
                out.push(ConfLine::Include(dir.join(pattern)));
            }
        } else if keyword_arg_ignore_case(line, "hwcap").is_some() {
            // Obsolete; ldconfig ignores it too.
        } else if line.starts_with('/') {
            out.push(ConfLine::Dir(strip_trailing_slashes(line)));
        }
        // ldconfig warns about relative directories and skips them.
    }
    out
}

/// Parses arbitrary bytes as a conf file; for fuzzing.
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in parse(&text, Path::new("/etc")) {
        let path = match &line {
            ConfLine::Dir(p) | ConfLine::Include(p) => p,
        };
        assert!(path.is_absolute(), "parse produced a relative path: {line:?}");
    }
    let _ = glob_match(&text, "ld.so.conf");
}

#[derive(Default)]
struct Reader {
    dirs: Vec<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
    seen_files: HashSet<PathBuf>,
}

impl Reader {
    fn read_file(&mut self, file: &Path, depth: usize) {
        // Canonical, so `conf.d/../ld.so.conf` is recognised as the file already read.
        let canonical = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if depth > MAX_DEPTH || !self.seen_files.insert(canonical) {
            return;
        }
        let Some(text) = read_small(file) else {
            return;
        };
        let dir = file.parent().unwrap_or(Path::new("/"));
        for line in parse(&text, dir) {
            match line {
                ConfLine::Dir(d) => {
                    if self.seen_dirs.insert(d.clone()) {
                        self.dirs.push(d);
                    }
                }
                ConfLine::Include(pattern) => {
                    for included in expand_glob(&pattern) {
                        self.read_file(&included, depth + 1);
                    }
                }
            }
        }
    }
}

fn read_small(file: &Path) -> Option<String> {
    let meta = fs::metadata(file).ok()?;
    if !meta.is_file() || meta.len() > MAX_CONF_SIZE {
        return None;
    }
    let bytes = fs::read(file).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `include ` followed by blanks (ldconfig requires the blank).
fn keyword_arg<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(keyword)?;
    rest.starts_with([' ', '\t']).then_some(rest)
}

fn keyword_arg_ignore_case<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let head = line.get(..keyword.len())?;
    let rest = line.get(keyword.len()..)?;
    (head.eq_ignore_ascii_case(keyword) && rest.starts_with([' ', '\t'])).then_some(rest)
}

fn strip_trailing_slashes(line: &str) -> PathBuf {
    let trimmed = line.trim_end_matches('/');
    PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed })
}
