//! Shell completions and man pages of both binaries, as a package installs
//! them: the bash script loads and completes subcommands, the zsh and fish
//! scripts parse, the man pages render with `man -l` and name every
//! subcommand; `plugin-supervisor --help` names the environment it reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plugin_integration::bins;

fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{} {args:?}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn installed(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

fn both() -> [(PathBuf, &'static str); 2] {
    [(bins::supervisorctl(), "supervisorctl"), (bins::supervisor(), "plugin-supervisor")]
}

/// What the bash completion offers for the words typed so far.
fn bash_complete(bin: &Path, name: &str, words: &[&str]) -> Vec<String> {
    let script = format!(
        r#"source <("{bin}" completions bash) || exit 10
spec=$(complete -p {name}) || exit 11
func=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
"$func" {name} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        bin = bin.display(),
        words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        cword = words.len() - 1,
    );
    let out = sh("bash", &["-c", &script]);
    assert!(out.status.success(), "bash: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    for (bin, name) in both() {
        let script = format!("source <('{}' completions bash) && complete -p {name}", bin.display());
        let out = sh("bash", &["-c", &script]);
        let spec = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(spec.contains(" -F _") && spec.trim_end().ends_with(name), "{name}: {spec}");
    }
    let offered = bash_complete(&bins::supervisorctl(), "supervisorctl", &["supervisorctl", "sta"]);
    assert!(offered.contains(&"status".to_owned()) && offered.contains(&"start".to_owned()), "{offered:?}");
    assert!(offered.iter().all(|w| w.starts_with("sta")), "{offered:?}");
    let offered = bash_complete(&bins::supervisorctl(), "supervisorctl", &["supervisorctl", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(offered.contains(&shell.to_owned()), "{offered:?}");
    }
    assert!(!offered.contains(&"status".to_owned()), "{offered:?}");
    let offered = bash_complete(&bins::supervisor(), "plugin-supervisor", &["plugin-supervisor", "check"]);
    assert_eq!(offered, ["check-config"]);
}

#[test]
fn zsh_and_fish_completions_are_scripts_the_shells_parse() {
    for (bin, name) in both() {
        let zsh = run(&bin, &["completions", "zsh"]);
        assert!(zsh.starts_with(&format!("#compdef {name}")), "{name}: {zsh}");
        let fish = run(&bin, &["completions", "fish"]);
        assert!(fish.contains(&format!("complete -c {name}")), "{name}: {fish}");
        let dir = tempfile::tempdir().unwrap();
        for (shell, script, check) in [("zsh", &zsh, &["-n"][..]), ("fish", &fish, &["--no-execute"][..])] {
            // scripts/test-all.sh installs both shells; a bare developer machine may lack them.
            if !installed(shell) {
                eprintln!("{shell} is not installed: {name}'s {shell} script was not parsed");
                continue;
            }
            let file = dir.path().join(format!("{name}.{shell}"));
            std::fs::write(&file, script).unwrap();
            let out = sh(shell, &[check, &[file.to_str().unwrap()]].concat());
            assert!(out.status.success(), "{shell} {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The page as `man -l` renders it, in plain text.
fn man_l(page: &Path) -> String {
    let out = Command::new("man").arg("-l").arg(page).env("MANPAGER", "cat").env("MANWIDTH", "100").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l {}: {err}", page.display());
    assert!(!err.contains("warning"), "man -l {}: {err}", page.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_pages_render_with_every_subcommand() {
    for (bin, name) in both() {
        let dir = tempfile::tempdir().unwrap();
        let listed = run(&bin, &["man", "--dir", dir.path().to_str().unwrap()]);
        let top = dir.path().join(format!("{name}.1"));
        assert!(listed.lines().any(|l| Path::new(l) == top), "{name}: {listed}");
        // `man` with no --dir prints the same top page.
        assert_eq!(run(&bin, &["man"]), std::fs::read_to_string(&top).unwrap(), "{name}");
        let text = man_l(&top);
        let help = run(&bin, &["--help"]);
        for sub in subcommands(&help) {
            assert!(text.contains(&format!("{name}-{sub}(1)")), "{name}: no {sub} in:\n{text}");
            let page = dir.path().join(format!("{name}-{sub}.1"));
            assert!(listed.lines().any(|l| Path::new(l) == page), "{name}: {page:?} not in {listed}");
            assert!(man_l(&page).contains(&format!("{name}-{sub}")), "{name}-{sub}");
        }
        // What --help says after the options (its own headings: environment, exit
        // status) is on the page too.
        for heading in help.lines().filter(|l| l.ends_with(':') && !l.starts_with(' ')) {
            if !["Usage:", "Commands:", "Options:", "Arguments:"].contains(&heading) {
                // As a man section of its own: ENVIRONMENT, EXIT STATUS.
                let section = format!("\n{}\n", heading.trim_end_matches(':').to_uppercase());
                assert!(text.contains(&section), "{name}: no {section:?} section in:\n{text}");
            }
        }
    }
}

/// The subcommand names `--help` lists (its "Commands:" block), bar `help`.
fn subcommands(help: &str) -> Vec<String> {
    let Some((_, block)) = help.split_once("Commands:\n") else { return Vec::new() };
    block
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn daemon_help_names_the_environment_it_reads() {
    let page = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(page.path(), run(&bins::supervisor(), &["man"])).unwrap();
    let man = man_l(page.path());
    let (_, env) = man.split_once("\nENVIRONMENT\n").unwrap_or_else(|| panic!("no ENVIRONMENT section:\n{man}"));
    assert!(env.contains("PLUGIN_SUPERVISOR_LOG_FORMAT           text or json"), "{env}");
    let help = run(&bins::supervisor(), &["--help"]);
    let (_, env) = help.split_once("Environment:\n").unwrap_or_else(|| panic!("no Environment section:\n{help}"));
    for var in [
        "PLUGIN_SUPERVISOR_LOG ",
        "PLUGIN_SUPERVISOR_LOG_FORMAT ",
        "PLUGIN_SUPERVISOR_FORWARD_PLUGIN_LOGS ",
        "NOTIFY_SOCKET,",
        "WATCHDOG_USEC,",
        "WATCHDOG_PID ",
    ] {
        assert!(env.contains(var), "{var}missing from:\n{env}");
    }
}

/// The README's install lines, run as written with the system directories moved under a
/// temporary root: each writes a file that loads (bash) or renders (man).
#[test]
fn the_readmes_completion_and_man_page_lines_run_as_written() {
    let readme = std::fs::read_to_string(bins::repo().join("README.md")).unwrap();
    let at = readme.find("Both binaries print their shell completions").expect("the README's completions section");
    let block = &readme[at..];
    let block = &block[block.find("```sh\n").expect("a sh block") + 6..];
    let block = &block[..block.find("```").unwrap()];
    let root = tempfile::tempdir().unwrap();
    let dirs = [
        "/usr/share/bash-completion/completions",
        "/usr/share/zsh/vendor-completions",
        "/usr/share/fish/vendor_completions.d",
        "/usr/share/man/man1",
    ];
    let mut script = String::from("set -euo pipefail\n");
    for d in dirs {
        std::fs::create_dir_all(root.path().join(&d[1..])).unwrap();
    }
    let bin_dir = bins::supervisorctl().parent().unwrap().to_path_buf();
    script.push_str(&format!("export PATH={}:$PATH\n", bin_dir.display()));
    let mut lines = 0;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let mut line = line.to_owned();
        for d in dirs {
            line = line.replace(d, &root.path().join(&d[1..]).display().to_string());
        }
        script.push_str(&line);
        script.push('\n');
        lines += 1;
    }
    script.push_str("complete -p supervisorctl\n");
    assert!(lines >= 6, "{block}");
    let out = sh("bash", &["-c", &script]);
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    let at = |rel: &str| root.path().join(rel);
    for file in [
        "usr/share/bash-completion/completions/supervisorctl",
        "usr/share/bash-completion/completions/plugin-supervisor",
        "usr/share/zsh/vendor-completions/_supervisorctl",
        "usr/share/fish/vendor_completions.d/supervisorctl.fish",
        "usr/share/man/man1/supervisorctl.1",
        "usr/share/man/man1/supervisorctl-status.1",
        "usr/share/man/man1/plugin-supervisor.1",
    ] {
        let len = std::fs::metadata(at(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} was not written");
    }
}
