//! The Debian package and the systemd unit it installs: `scripts/package-deb.sh`
//! packages the binaries this build made (byte for byte, no second build) with the
//! tiers, the default config, the unit, completions and man pages at Debian's paths;
//! the unit passes `systemd-analyze verify`; the default config and the README's
//! service snippets load with `check-config`. The service itself runs under systemd
//! in the VM lane (`integration/vm/systemd.sh`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plugin_integration::bins;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// The version the built daemon reports (what the package is named after).
fn version() -> String {
    let v = stdout(Command::new(bins::supervisor()).arg("--version"));
    v.split_whitespace().nth(1).unwrap().to_owned()
}

/// The package, built from this profile's binaries as CI does
/// (`scripts/package-deb.sh --no-build`), and its files unpacked beside it; all of it
/// in a temporary directory removed when the test ends, passed or not.
struct Package {
    dir: tempfile::TempDir,
    deb: PathBuf,
    root: PathBuf,
}

impl Package {
    fn build() -> Self {
        let profile_dir = bins::profile_dir();
        let profile = profile_dir.file_name().unwrap().to_str().unwrap().to_owned();
        let dir = tempfile::tempdir_in(profile_dir.parent().unwrap()).unwrap();
        let out = dir.path().join("debian");
        let printed = stdout(
            Command::new(repo().join("scripts/package-deb.sh"))
                .args(["--profile", &profile, "--no-build", "--out-dir"])
                .arg(&out)
                .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap()),
        );
        let arch = stdout(Command::new("dpkg").arg("--print-architecture")).trim().to_owned();
        let deb = out.join(format!("plugin-supervisor_{}-1_{arch}.deb", version()));
        assert_eq!(printed.trim(), deb.display().to_string(), "the script prints the package it wrote");
        assert!(deb.is_file(), "{} was not written", deb.display());
        let root = dir.path().join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        Self { dir, deb, root }
    }

    fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path
    }
}

fn field<'a>(info: &'a str, name: &str) -> &'a str {
    let prefix = format!(" {name}: ");
    info.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {name} in:\n{info}"))
}

#[test]
fn the_package_installs_the_service_at_debian_paths() {
    let package = Package::build();
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&package.deb));
    // `-rwxr-xr-x root/root 61820912 2026-12-03 18:51 ./usr/bin/plugin-supervisor`
    let entries: BTreeSet<(String, String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[5].trim_start_matches('.').trim_end_matches('/').to_owned(), f[0].to_owned(), f[1].to_owned())
        })
        .collect();
    let mode_of = |path: &str| entries.iter().find(|e| e.0 == path).map(|e| e.1.clone());
    for (path, mode) in [
        ("/usr/bin/plugin-supervisor", "-rwxr-xr-x"),
        ("/usr/bin/supervisorctl", "-rwxr-xr-x"),
        ("/etc/plugin-supervisor/config.toml", "-rw-r--r--"),
        ("/lib/systemd/system/plugin-supervisor.service", "-rw-r--r--"),
        ("/var/lib/plugin-supervisor", "drwxr-x---"),
        ("/usr/share/bash-completion/completions/supervisorctl", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/plugin-supervisor", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_supervisorctl", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_plugin-supervisor", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/supervisorctl.fish", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/plugin-supervisor.fish", "-rw-r--r--"),
        ("/usr/share/man/man1/supervisorctl.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/supervisorctl-status.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/plugin-supervisor.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/plugin-supervisor-check-config.1.gz", "-rw-r--r--"),
        ("/usr/share/doc/plugin-supervisor/copyright", "-rw-r--r--"),
    ] {
        assert_eq!(mode_of(path).as_deref(), Some(mode), "{path} in:\n{listing}");
    }
    assert!(entries.iter().all(|e| e.2 == "root/root"), "every file is root's:\n{listing}");
    // Every tier file of the repository, at the default policies_dir.
    for tier in std::fs::read_dir(repo().join("policies")).unwrap() {
        let name = tier.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".toml") || name.ends_with(".json") {
            let path = format!("/etc/plugin-supervisor/policies/{name}");
            assert_eq!(mode_of(&path).as_deref(), Some("-rw-r--r--"), "{path} in:\n{listing}");
        }
    }
    // The binaries are this build's, unchanged: the package needs no build of its own.
    for (bin, built) in [("plugin-supervisor", bins::supervisor()), ("supervisorctl", bins::supervisorctl())] {
        let packaged = std::fs::read(package.root.join("usr/bin").join(bin)).unwrap();
        assert!(packaged == std::fs::read(&built).unwrap(), "{bin} differs from {}", built.display());
    }
    // Completions and man pages are what the binaries print.
    let bash = stdout(Command::new(bins::supervisorctl()).args(["completions", "bash"]));
    let packaged =
        std::fs::read_to_string(package.root.join("usr/share/bash-completion/completions/supervisorctl")).unwrap();
    assert_eq!(packaged, bash);
    let page = package.root.join("usr/share/man/man1/supervisorctl-update.1.gz");
    let text = stdout(Command::new("zcat").arg(&page));
    assert!(text.contains(".TH supervisorctl-update"), "{}: {text}", page.display());
}

#[test]
fn the_control_fields_conffiles_and_maintainer_scripts() {
    let package = Package::build();
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&package.deb));
    assert_eq!(field(&info, "Package"), "plugin-supervisor");
    assert_eq!(field(&info, "Version"), format!("{}-1", version()));
    let depends = field(&info, "Depends");
    assert!(depends.contains("libc6 (>= "), "Depends from the binaries' libraries: {depends}");
    let control = package.scratch("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&package.deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    let conffiles: BTreeSet<&str> = conffiles.lines().collect();
    assert!(conffiles.contains("/etc/plugin-supervisor/config.toml"), "{conffiles:?}");
    assert!(conffiles.contains("/etc/plugin-supervisor/policies/L2.seccomp.json"), "{conffiles:?}");
    assert!(conffiles.iter().all(|c| c.starts_with("/etc/")), "only /etc files are conffiles: {conffiles:?}");
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        run(Command::new("sh").arg("-n").arg(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        // Outside systemd (a container image, a chroot) the scripts do nothing of systemd's.
        assert!(text.contains("[ -d /run/systemd/system ]"), "{script}: {text}");
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemctl daemon-reload"), "{postinst}");
    // The default config it installs is deploy/config.toml (the_default_config_is_valid).
    let packaged = std::fs::read(package.root.join("etc/plugin-supervisor/config.toml")).unwrap();
    assert!(packaged == std::fs::read(repo().join("deploy/config.toml")).unwrap());
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    // verify with --root resolves the unit's commands and dependencies inside the root:
    // the package's files, and the host's targets the unit is ordered against.
    let package = Package::build();
    let root = package.root.clone();
    let units = root.join("lib/systemd/system");
    for target in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let target = target.unwrap().path();
        if target.extension().is_some_and(|e| e == "target") && target.is_file() {
            std::fs::copy(&target, units.join(target.file_name().unwrap())).unwrap();
        }
    }
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg("plugin-supervisor.service"));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "systemd-analyze verify warns:\n{warnings}");

    // A misspelt option is reported the same way: the check above can fail.
    let unit = units.join("plugin-supervisor.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, text.replace("KillMode=mixed", "KillMode=mixd")).unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg("plugin-supervisor.service"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mixd"), "{out:?}");
}

/// The unit's settings the service relies on (README: "Running as a systemd service").
#[test]
fn the_unit_says_what_the_daemon_needs() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/plugin-supervisor.service")).unwrap();
    let settings: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#') && l.contains('=')).collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStartPre=/usr/bin/plugin-supervisor check-config /etc/plugin-supervisor/config.toml",
        "ExecStart=/usr/bin/plugin-supervisor --config /etc/plugin-supervisor/config.toml",
        "ExecReload=/usr/bin/supervisorctl update",
        "Delegate=yes",
        "KillMode=mixed",
        "Restart=on-failure",
        "RuntimeDirectory=plugin-supervisor",
        "StateDirectory=plugin-supervisor",
        "NoNewPrivileges=yes",
    ] {
        assert!(settings.contains(&want), "{want} missing from the unit");
    }
    // Each hardening option left out is named in a comment with its reason.
    for left_out in [
        "ProtectControlGroups",
        "ProtectKernelTunables",
        "PrivateUsers",
        "RestrictNamespaces",
        "PrivateDevices",
        "SystemCallFilter",
        "MemoryDenyWriteExecute",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with('#') && l.contains(left_out)),
            "{left_out}: neither used nor said why not"
        );
        assert!(!settings.iter().any(|s| s.starts_with(left_out)), "{left_out} is set");
    }
    // The stop timeout leaves the daemon time to drain at the default stop_timeout.
    let stop: u64 = settings.iter().find_map(|s| s.strip_prefix("TimeoutStopSec=")).unwrap().parse().unwrap();
    let config = std::fs::read_to_string(repo().join("deploy/config.toml")).unwrap();
    assert!(config.contains("stop_timeout = \"5s\"") && stop >= 30, "TimeoutStopSec={stop}");
}

fn check_config(path: &Path) -> String {
    let out = Command::new(bins::supervisor()).arg("check-config").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_default_config_is_valid() {
    let printed = check_config(&repo().join("deploy/config.toml"));
    assert!(printed.ends_with(": ok (0 plugins: )\n"), "{printed}");
}

/// The README's service section adds a plugin to the packaged config: that text,
/// appended as the section says, loads (against the repository's tiers).
#[test]
fn the_readme_service_snippet_loads() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("\n## Running as a systemd service\n").nth(1).expect("the README has the section");
    let section = section.split("\n## ").next().unwrap();
    let snippet = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml snippet in the service section");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let config = std::fs::read_to_string(repo().join("deploy/config.toml")).unwrap().replace(
        "\"/etc/plugin-supervisor/policies\"",
        &format!("{:?}", repo().join("policies").display().to_string()),
    );
    let plugin_path = "/usr/local/lib/plugins/echo";
    assert!(snippet.contains(plugin_path), "the snippet runs {plugin_path}: {snippet}");
    let snippet = snippet.replace(plugin_path, &bins::example("echo").display().to_string());
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("{config}\n{snippet}")).unwrap();
    let printed = check_config(&path);
    assert!(printed.ends_with(": ok (1 plugins: echo)\n"), "{printed}");
}
