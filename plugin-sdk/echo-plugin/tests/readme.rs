//! The README's "Writing a plugin" is this crate: each code block is one of
//! its files, byte for byte, and the `Cargo.toml` block lists exactly its
//! dependencies, build dependencies and the dev-dependencies its harness test
//! needs (paths aside, which are the reader's). The crate builds and its tests
//! run with the workspace, so the README's code compiles and passes. (The `sh`
//! block, `supervisorctl plugin new`, is run by integration/tests/plugin_new.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced code blocks of the README's "## Writing a plugin" section, as
/// (language, body with its final newline).
fn readme_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(crate_dir().join("../../README.md")).expect("README.md");
    let start = readme.find("\n## Writing a plugin\n").expect("a \"Writing a plugin\" section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 2)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else { continue };
        let mut body = String::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            body.push_str(line);
            body.push('\n');
        }
        blocks.push((lang.to_owned(), body));
    }
    blocks
}

fn block(lang: &str, first_line: &str) -> String {
    let found: Vec<String> = readme_blocks()
        .into_iter()
        .filter(|(l, body)| l == lang && body.starts_with(first_line))
        .map(|(_, body)| body)
        .collect();
    assert_eq!(found.len(), 1, "exactly one ```{lang} block starting {first_line:?} in \"Writing a plugin\"");
    found.into_iter().next().unwrap_or_default()
}

fn file(path: &str) -> String {
    std::fs::read_to_string(crate_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_section_is_the_crate_and_nothing_else() {
    let langs: Vec<String> = readme_blocks().into_iter().map(|(lang, _)| lang).collect();
    assert_eq!(langs, ["toml", "protobuf", "rust", "rust", "rust", "rust", "sh"]);
}

#[test]
fn the_readmes_sources_are_the_crates_files_byte_for_byte() {
    for (lang, path) in [
        ("protobuf", "proto/echo.proto"),
        ("rust", "build.rs"),
        ("rust", "src/lib.rs"),
        ("rust", "src/main.rs"),
        ("rust", "tests/echo.rs"),
    ] {
        let text = file(path);
        let first_line = text.lines().next().unwrap_or_default();
        assert!(first_line.contains(path), "{path} must name itself on its first line: {first_line:?}");
        assert_eq!(
            block(lang, first_line),
            text,
            "README.md's {path} differs from {}",
            crate_dir().join(path).display()
        );
    }
}

/// Dev-dependencies of this crate's own tests (of the README, and of a start refused with
/// a fd 3 no supervisor gives), which a plugin does not need.
const README_TEST_ONLY: &[&str] = &["toml", "libc"];

/// A dependency as the README states it: the path's last component stands
/// for the path (the README writes `…/plugin-sdk`, the crate `..`).
fn normalised(deps: &toml::Table, base: Option<&Path>) -> Vec<(String, toml::Value)> {
    let mut out: Vec<(String, toml::Value)> = deps
        .iter()
        .filter(|(name, _)| !README_TEST_ONLY.contains(&name.as_str()))
        .map(|(name, spec)| {
            let mut spec = spec.clone();
            if let Some(path) = spec.get("path").and_then(toml::Value::as_str).map(str::to_owned) {
                let dir = match base {
                    Some(base) => {
                        std::fs::canonicalize(base.join(&path)).unwrap_or_else(|e| panic!("{name}: {path}: {e}"))
                    }
                    None => PathBuf::from(path.as_str()),
                };
                let last = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
                spec.as_table_mut().unwrap().insert("path".into(), toml::Value::String(last));
            }
            (name.clone(), spec)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_readmes_cargo_toml_lists_exactly_the_crates_dependencies() {
    let shown: toml::Table = block("toml", "# Cargo.toml").parse().expect("the README's Cargo.toml block is TOML");
    let real: toml::Table = file("Cargo.toml").parse().unwrap();
    let keys: Vec<&str> = shown.keys().map(String::as_str).collect();
    assert_eq!(keys, ["build-dependencies", "dependencies", "dev-dependencies"], "the README shows these tables only");
    for table in ["dependencies", "build-dependencies", "dev-dependencies"] {
        let table_of = |t: &toml::Table| t.get(table).and_then(toml::Value::as_table).cloned().unwrap_or_default();
        assert_eq!(
            normalised(&table_of(&shown), None),
            normalised(&table_of(&real), Some(&crate_dir())),
            "[{table}] in README.md and {}",
            crate_dir().join("Cargo.toml").display()
        );
    }
}

#[test]
fn the_built_plugin_says_what_it_is_when_started_by_hand() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-plugin")).env_clear().output().expect("run echo-plugin");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("echo is a plugin for plugin-supervisor"), "{stderr}");
}
