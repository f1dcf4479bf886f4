//! ld.so.conf is read as ldconfig reads it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::integrity::glob::{expand_glob, glob_match};
use crate::integrity::ldconfig::{ConfLine, parse, read_dirs};

#[test]
fn lines_are_directories_includes_or_ignored() {
    let text = "\
# comment
/usr/local/lib   # trailing comment
/opt/lib///
include conf.d/*.conf /etc/extra.conf
includex /not/an/include
hwcap 0 nosegneg
relative/dir

\t/usr/lib/extra\t
";
    assert_eq!(
        parse(text, Path::new("/etc")),
        [
            ConfLine::Dir(PathBuf::from("/usr/local/lib")),
            ConfLine::Dir(PathBuf::from("/opt/lib")),
            ConfLine::Include(PathBuf::from("/etc/conf.d/*.conf")),
            ConfLine::Include(PathBuf::from("/etc/extra.conf")),
            ConfLine::Dir(PathBuf::from("/usr/lib/extra")),
        ]
    );
}

#[test]
fn includes_expand_sorted_relative_to_the_including_file_and_loops_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    fs::create_dir(root.join("conf.d")).unwrap();
    fs::write(root.join("ld.so.conf"), "/first\ninclude conf.d/*.conf\n/last\n").unwrap();
    fs::write(root.join("conf.d/b.conf"), "/from-b\n/first\n").unwrap();
    fs::write(root.join("conf.d/a.conf"), "/from-a\ninclude ../ld.so.conf\n").unwrap();
    fs::write(root.join("conf.d/.hidden.conf"), "/hidden\n").unwrap();
    fs::write(root.join("conf.d/c.txt"), "/not-a-conf\n").unwrap();

    let dirs = read_dirs(&root.join("ld.so.conf"));
    let dirs: Vec<_> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
    assert_eq!(dirs, ["/first", "/from-a", "/from-b", "/last"]);
}

#[test]
fn a_missing_conf_file_names_no_directories() {
    assert!(read_dirs(Path::new("/nonexistent/ld.so.conf")).is_empty());
}

#[test]
fn globs_match_like_fnmatch() {
    let cases = [
        ("*.conf", "libc.conf", true),
        ("*.conf", "libc.conf.bak", false),
        ("lib?.conf", "libc.conf", true),
        ("lib?.conf", "lib.conf", false),
        ("[a-c]*", "b.conf", true),
        ("[!a-c]*", "b.conf", false),
        ("[!a-c]*", "x.conf", true),
        ("*a*b*", "xaxxbx", true),
        ("*a*b", "xaxxbx", false),
        ("[", "[", true),
        ("[]]", "]", true),
        ("**", "", true),
        ("", "x", false),
    ];
    for (pattern, name, expected) in cases {
        assert_eq!(glob_match(pattern, name), expected, "{pattern:?} vs {name:?}");
    }
}

#[test]
fn glob_expansion_works_in_directory_components_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    for sub in ["one", "two"] {
        fs::create_dir(root.join(sub)).unwrap();
        fs::write(root.join(sub).join("x.conf"), "").unwrap();
    }
    let found = expand_glob(&root.join("*/x.conf"));
    assert_eq!(found, [root.join("one/x.conf"), root.join("two/x.conf")]);
}
