//! `supervisorctl plugin new`: the README's two commands ("Starting a plugin")
//! run as written, offline and with the workspace's build cache: the crate it
//! writes builds and passes its own test (under the SDK's harness, in process
//! and as its binary), and its `plugin.toml` loads with the supervisor's config
//! loader. A name that cannot name a crate, a directory in use and an SDK path
//! that is no SDK are usage errors (exit 2) that write nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use plugin_integration::bins;

/// A directory under the target's scratch space, removed before and after the
/// test (passed or not). Its path is fixed, so the crate written there keeps
/// its identity from run to run and cargo reuses what it built the last time.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> String {
    format!("{}\n{}\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The lines of the README's `sh` block under "### Starting a plugin".
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(bins::repo().join("README.md")).unwrap();
    let section = readme.split("\n### Starting a plugin\n").nth(1).expect("the README's \"Starting a plugin\"");
    let block = section.split("```sh\n").nth(1).expect("an sh block").split("\n```").next().unwrap();
    block.lines().map(str::to_owned).collect()
}

/// `--config` settings that give the crate's build the workspace's own dev
/// profile, its members' included, so the dependencies the workspace built
/// are reused instead of built again.
fn workspace_profile() -> Vec<String> {
    let manifest: toml::Table =
        std::fs::read_to_string(bins::repo().join("Cargo.toml")).unwrap().parse().expect("Cargo.toml");
    let dev = manifest["profile"]["dev"].as_table().expect("[profile.dev]").clone();
    let mut settings = Vec::new();
    flatten(&mut settings, "profile.dev", &toml::Value::Table(dev.clone()));
    // Path dependencies are the workspace's members there, and "*" covers them here.
    for member in ["plugin-sdk", "plugin-proto"] {
        if let Some(debug) = dev.get("debug") {
            settings.push(format!("profile.dev.package.\"{member}\".debug={debug}"));
        }
    }
    settings
}

fn flatten(out: &mut Vec<String>, prefix: &str, value: &toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                flatten(out, &format!("{prefix}.{}", toml::Value::String(key.clone())), value);
            }
        }
        leaf => out.push(format!("{prefix}={leaf}")),
    }
}

#[test]
fn the_crate_it_writes_passes_its_own_test_and_its_entry_loads() {
    let scratch = Scratch::new("plugin-new");
    let commands = readme_commands();
    assert_eq!(commands, ["supervisorctl plugin new greeter", "cd greeter && cargo test"]);

    let args: Vec<&str> = commands[0].split_whitespace().skip(1).collect();
    let out = Command::new(bins::supervisorctl()).args(&args).current_dir(&scratch.0).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dir = scratch.0.join("greeter");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with(&format!("wrote the plugin crate greeter to {}: ", dir.display())), "{said}");
    for file in
        ["Cargo.toml", "build.rs", "proto/greeter.proto", "src/lib.rs", "src/main.rs", "tests/plugin.rs", "plugin.toml"]
    {
        assert!(dir.join(file).is_file(), "{file} was not written");
    }

    // The versions the workspace locked, which its build cache holds.
    std::fs::copy(bins::repo().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target = bins::profile_dir().parent().unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cargo_test = Command::new(cargo);
    cargo_test.args(["test", "--offline"]);
    for setting in workspace_profile() {
        cargo_test.args(["--config", &setting]);
    }
    // The workspace builds h2 from vendor/ (vendor/README.md), so crates.io's may be
    // neither downloaded nor built here; the written crate builds with either.
    let h2 = bins::repo().join("vendor/h2");
    cargo_test.args(["--config", &format!("patch.crates-io.h2.path={:?}", h2.display().to_string())]);
    let started = Instant::now();
    let out = cargo_test
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();
    eprintln!("cargo test in the written crate took {:.1?}", started.elapsed());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for test in ["greets_in_process", "greets_as_the_built_binary"] {
        assert!(stdout.lines().any(|l| l == format!("test {test} ... ok")), "{test} did not pass:\n{stdout}");
    }
    let passed: u32 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(" passed").next()?.parse::<u32>().ok())
        .sum();
    assert_eq!(passed, 2, "{stdout}");

    // Where `cargo build --release` would put the binary, as plugin.toml says.
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(target.join("debug/greeter"), release.join("greeter")).unwrap();
    let snippet = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
    let policies = toml::Value::String(bins::repo().join("policies").display().to_string());
    let config = scratch.0.join("supervisor.toml");
    std::fs::write(&config, format!("[supervisor]\npolicies_dir = {policies}\n\n{snippet}")).unwrap();
    let loaded = plugin_supervisor::config::Config::load(&config).unwrap_or_else(|e| panic!("{e}"));
    let specs = loaded.specs();
    assert_eq!(specs.len(), 1);
    assert_eq!((specs[0].name.as_str(), specs[0].tier.as_str()), ("greeter", "L3"));
    assert_eq!(specs[0].binary, release.join("greeter"));
    assert_eq!(specs[0].config_json, r#"{"greeting":"Hello"}"#);
}

#[test]
fn bad_names_a_directory_in_use_and_no_sdk_are_usage_errors_that_write_nothing() {
    let scratch = Scratch::new("plugin-new-refusals");
    let new = |args: &[&str]| {
        Command::new(bins::supervisorctl()).args(["plugin", "new"]).args(args).current_dir(&scratch.0).output().unwrap()
    };
    for (name, why) in [
        ("", "plugin name must not be empty"),
        ("9lives", "starting with a letter"),
        ("a.b", "cannot name a crate: use letters, digits, '-' and '_'"),
        ("fn", "\"fn\" is reserved"),
        ("tonic", "\"tonic\" is reserved"),
        ("-x", "may use only letters"),
    ] {
        let out = new(&["--", name]);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("supervisorctl: ") && stderr.contains(why), "{name:?}: {stderr}");
    }
    std::fs::write(scratch.0.join("notes.txt"), "mine").unwrap();
    let out = new(&["greeter", "--dir", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"), "{}", text(&out));
    let out = new(&["greeter", "--sdk-path", "/usr"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--sdk-path /usr: no plugin-sdk crate there"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&scratch.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["notes.txt"], "a refused command wrote something");
}
