//! glob(3)-style expansion of ld.so.conf `include` patterns.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// One glob may not expand to more files than this.
const MAX_GLOB_MATCHES: usize = 4096;

/// Expands `*`, `?` and `[...]` in any component, sorted like glob(3) in the C locale.
/// Hidden entries match only a pattern that starts with a dot, as in glob(3).
pub fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from("/")];
    for component in pattern.components() {
        let part = match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => {
                current.iter_mut().for_each(|p| p.push(".."));
                continue;
            }
            Component::Normal(part) => part.to_string_lossy().into_owned(),
        };
        if !has_wildcard(&part) {
            current.iter_mut().for_each(|p| p.push(&part));
            continue;
        }
        let mut next = Vec::new();
        for dir in &current {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if glob_match(&part, &name) && next.len() < MAX_GLOB_MATCHES {
                    next.push(dir.join(&name));
                }
            }
        }
        current = next;
    }
    current.retain(|p| p.exists());
    current.sort();
    current
}

fn has_wildcard(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// fnmatch(3) without flags, for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Where to resume after the last '*': (pattern index after it, name index it absorbed up to).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match (p.get(pi), n.get(ni)) {
            (Some('*'), _) => {
                star = Some((pi + 1, ni));
                pi += 1;
                continue;
            }
            (Some('?'), Some(_)) => Some(pi + 1),
            (Some('['), Some(c)) => class_match(&p, pi, *c),
            (Some(pc), Some(c)) if pc == c => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((after_star, absorbed))) => {
                pi = after_star;
                ni = absorbed + 1;
                star = Some((after_star, absorbed + 1));
            }
            (None, None) => return false,
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Matches `c` against the bracket expression starting at `p[open]`; returns the index after
/// the closing bracket on a match. An unclosed `[` matches itself literally, as in fnmatch.
fn class_match(p: &[char], open: usize, c: char) -> Option<usize> {
    let mut i = open + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&cur) = p.get(i) else {
            return (c == '[').then_some(open + 1);
        };
        if cur == ']' && !first {
            return (matched != negate).then_some(i + 1);
        }
        first = false;
        match (p.get(i + 1), p.get(i + 2)) {
            (Some('-'), Some(&end)) if end != ']' => {
                matched |= cur <= c && c <= end;
                i += 3;
            }
            _ => {
                matched |= cur == c;
                i += 1;
            }
        }
    }
}
