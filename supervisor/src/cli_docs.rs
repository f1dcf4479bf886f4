//! Shell completions and man pages for the two binaries, generated from their
//! clap definitions (`clap_complete`, `clap_mangen`).
//!
//! Each binary prints its own from a subcommand (`supervisorctl completions
//! bash`, `plugin-supervisor man --dir DIR`), as rustup and systemctl do: the
//! definition the generator reads is the very one that parses the command
//! line, so the two cannot drift, and a package build (cargo-deb) runs the
//! built binary once per file instead of needing a build script or an xtask
//! that would have to share the definitions through the library.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Why a man page could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write the man pages into {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

/// The subcommands both binaries take, flattened into their own.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum DocsCommand {
    /// Prints the shell completion script (bash, zsh or fish), e.g.
    /// `source <(supervisorctl completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Prints the man page; with --dir, writes it and one page per
    /// subcommand (NAME-SUBCOMMAND.1) into DIR and lists the files.
    Man {
        /// The directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl DocsCommand {
    /// Runs the command for the binary whose definition is `cmd`, writing
    /// what it prints to `out`.
    pub fn run(self, mut cmd: clap::Command, out: &mut dyn Write) -> Result<(), DocsError> {
        match self {
            Self::Completions { shell } => {
                completions(&mut cmd, shell, out);
                Ok(())
            }
            Self::Man { dir: None } => man_page(cmd, out),
            Self::Man { dir: Some(dir) } => {
                for path in man_pages(cmd, &dir)? {
                    writeln!(out, "{}", path.display()).map_err(DocsError::Stdout)?;
                }
                Ok(())
            }
        }
    }
}

/// Writes `shell`'s completion script for `cmd` to `out`.
pub fn completions(cmd: &mut clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(clap_complete::Shell::from(shell), cmd, name, out);
}

/// The command as `clap_mangen::generate_to` prepares it: no `help` subcommand, and
/// each subcommand's display name `NAME-SUB` (its page's name) set.
fn prepared(cmd: clap::Command) -> clap::Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The man page of `cmd` alone (section 1), its subcommands listed by name.
pub fn man_page(cmd: clap::Command, out: &mut dyn Write) -> Result<(), DocsError> {
    render(&prepared(cmd), out).map_err(DocsError::Stdout)
}

/// Writes `NAME.1` and one `NAME-SUB.1` per subcommand (nested ones too) into
/// `dir`, creating it, and returns the files written, sorted.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    fn write_all(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), DocsError> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write_all(sub, dir, written)?;
        }
        let path = dir.join(clap_mangen::Man::new(cmd.clone()).get_filename());
        let write = || -> io::Result<()> {
            let mut file = io::BufWriter::new(std::fs::File::create(&path)?);
            render(cmd, &mut file)?;
            file.flush()
        };
        write().map_err(|source| DocsError::Write { path: path.clone(), source })?;
        written.push(path);
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|source| DocsError::CreateDir { path: dir.to_owned(), source })?;
    let mut written = Vec::new();
    write_all(&prepared(cmd), dir, &mut written)?;
    written.sort();
    Ok(written)
}

/// clap_mangen's page, except that the text after the options (`after_help`) becomes
/// the man sections its headings name ("Environment:" is ENVIRONMENT, "Exit status:"
/// EXIT STATUS), where clap_mangen would put it all under one "EXTRA".
fn render(cmd: &clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        out.write_all(after_help_sections(&after.to_string()).as_bytes())?;
    }
    if cmd.get_version().or_else(|| cmd.get_long_version()).is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Roff for `after_help`: each paragraph headed `Heading:` a section of that name, its
/// text kept as laid out (tables of variables or codes stay in columns).
fn after_help_sections(text: &str) -> String {
    let mut roff = String::new();
    for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let lines: Vec<&str> = paragraph.lines().collect();
        let (heading, body) = match lines[0].strip_suffix(':') {
            Some(h) if !h.starts_with(' ') => (h.to_uppercase(), &lines[1..]),
            _ => ("NOTES".to_owned(), &lines[..]),
        };
        roff.push_str(&format!(".SH {}\n.nf\n", escape(&heading)));
        for line in body {
            roff.push_str(&escape(line));
            roff.push('\n');
        }
        roff.push_str(".fi\n");
    }
    roff
}

/// Text safe on a roff line: backslashes and hyphens escaped, a leading `.` or `'`
/// not taken for a request.
fn escape(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') { format!("\\&{escaped}") } else { escaped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> clap::Command {
        clap::Command::new("demo")
            .about("A demo")
            .subcommand(clap::Command::new("status").about("Shows it"))
            .subcommand(clap::Command::new("start").about("Starts it"))
            .after_help("Exit status:\n  0  success\n\nEnvironment:\n  A  .x -y")
    }

    #[test]
    fn after_help_headings_become_man_sections_kept_as_laid_out() {
        let roff = after_help_sections("Environment:\n  A  .x -y\n.B\n\nfree text\n");
        assert_eq!(roff, ".SH ENVIRONMENT\n.nf\n  A  .x \\-y\n\\&.B\n.fi\n.SH NOTES\n.nf\nfree text\n.fi\n");
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in Shell::value_variants() {
            let mut out = Vec::new();
            completions(&mut demo(), *shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("status") && text.contains("start"), "{shell:?}: {text}");
        }
    }

    #[test]
    fn man_pages_go_one_per_command_into_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(demo(), &dir.path().join("man1")).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["demo-start.1", "demo-status.1", "demo.1"]);
        let top = std::fs::read_to_string(dir.path().join("man1/demo.1")).unwrap();
        assert!(top.contains(".SH EXIT STATUS\n.nf\n  0  success\n.fi\n"), "{top}");
        assert!(!top.contains("EXTRA"), "{top}");
        let mut printed = Vec::new();
        man_page(demo(), &mut printed).unwrap();
        assert_eq!(String::from_utf8(printed).unwrap(), top);
    }
}
