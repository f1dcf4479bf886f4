//! Invalid configs are rejected whole, naming the file, line and key, by
//! `check-config` and by the daemon itself (which then starts nothing).

use std::process::Command;

use plugin_integration::bins;

/// The shipped policies, appended so the line numbers stay as written.
fn with_policies(text: &str) -> String {
    if text.contains("[supervisor]") {
        return text.to_owned();
    }
    format!("{text}\n[supervisor]\npolicies_dir = {:?}\n", bins::repo().join("policies").display().to_string())
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, with_policies(text)).unwrap();
    let out = Command::new(bins::supervisor()).arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), err)
}

#[test]
fn each_kind_of_bad_config_names_file_line_and_key() {
    let echo = bins::example("echo").display().to_string();
    let cases = [
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nflavour = \"x\"\n"),
            "FILE:4: plugin[0].flavour: unknown field `flavour`",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nreplicas = \"two\"\n"),
            "FILE:4: plugin[0].replicas: invalid type: string \"two\"",
        ),
        (
            "[[plugin]]\nname = \"echo\"\nbinary = \"/no/such/echo\"\n".to_owned(),
            "FILE:3: plugin[0].binary: plugin \"echo\": binary /no/such/echo cannot be used",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n"),
            "FILE:5: plugin[1].name: duplicate plugin name \"echo\"",
        ),
        ("[supervisor]\nlog_lines = -1\n".to_owned(), "FILE:2: supervisor.log_lines: invalid value"),
        (
            "[supervisor.defaults]\ncall_timeout = \"later\"\n".to_owned(),
            "FILE:2: supervisor.defaults.call_timeout: invalid duration \"later\"",
        ),
        (format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nsha256 = \"abc\"\n"), "FILE:4: plugin[0].sha256"),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nversion = \"not a range\"\n"),
            "FILE:4: plugin[0].version: \"not a range\" is not a semver range",
        ),
        ("[[plugin\nname = 1\n".to_owned(), "FILE:1: (syntax)"),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\ntier = \"L9\"\n"),
            "FILE:4: plugin[0].tier: unknown tier \"L9\"",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\ntier = \"none\"\n"),
            "FILE:4: plugin[0].tier: plugin \"echo\": tier \"none\" runs it unsandboxed",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nuid = 0\n"),
            "FILE:4: plugin[0].uid: plugins never run as root",
        ),
        (
            format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n[plugin.quota]\nmemory_max = \"12X\"\n"),
            "FILE:5: plugin[0].quota.memory_max: invalid size \"12X\"",
        ),
    ];
    for (text, expected) in cases {
        let (ok, err) = check(&text);
        assert!(!ok, "accepted: {text}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
}

#[test]
fn a_good_config_passes_and_the_daemon_refuses_a_bad_one_without_starting_anything() {
    let echo = bins::example("echo").display().to_string();
    let (ok, err) = check(&format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\n"));
    assert!(ok, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, with_policies(&format!("[[plugin]]\nname = \"echo\"\nbinary = {echo:?}\nreplicas = 0\n")))
        .unwrap();
    let out = Command::new(bins::supervisor())
        .arg("--config")
        .arg(&path)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4: plugin[0].replicas: replicas must be between 1 and 64, not 0"), "{err}");
    assert!(!dir.path().join("run").exists(), "nothing was set up for a refused config");
}
