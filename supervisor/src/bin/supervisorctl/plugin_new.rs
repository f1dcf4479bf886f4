//! `supervisorctl plugin new NAME`: writes a plugin crate that builds and
//! passes its own test: a `.proto` of its own service, `build.rs`, the plugin
//! (src/lib.rs, src/main.rs), a test under the SDK's harness, and `plugin.toml`,
//! its entry for the supervisor's config. It depends on the SDK of a checkout:
//! by default the one this binary was built from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use plugin_supervisor::config::name_problem;

use crate::local::Failure;
use crate::stdout::outln;

#[derive(Args)]
pub struct NewArgs {
    /// The plugin's name, also its crate's, binary's and proto package's:
    /// letters, digits, '-' and '_', starting with a letter.
    pub name: String,
    /// Where to write the crate (default: ./NAME); it must be absent or empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The plugin-sdk directory of a plugin-supervisor checkout, to depend on
    /// (default: that of the checkout this supervisorctl was built from).
    #[arg(long, value_name = "PATH")]
    pub sdk_path: Option<PathBuf>,
}

/// The crate's files: (path, template). `{{name}}` is the plugin's name,
/// `{{crate}}` its Rust and proto identifier; the path values are TOML strings.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("plugin_new/Cargo.toml.tmpl")),
    ("build.rs", include_str!("plugin_new/build.rs.tmpl")),
    ("proto/{{crate}}.proto", include_str!("plugin_new/service.proto.tmpl")),
    ("src/lib.rs", include_str!("plugin_new/lib.rs.tmpl")),
    ("src/main.rs", include_str!("plugin_new/main.rs.tmpl")),
    ("tests/plugin.rs", include_str!("plugin_new/test.rs.tmpl")),
    ("plugin.toml", include_str!("plugin_new/plugin.toml.tmpl")),
    (".gitignore", include_str!("plugin_new/gitignore.tmpl")),
];

/// Names a crate cannot have: Rust's keywords (the crate is named in code) and
/// the crates Rust and cargo reserve.
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "union",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    // Rust's own crates, and what cargo forbids a binary to be called.
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
    // The crate's own dependencies.
    "plugin_sdk",
    "plugin_proto",
    "prost",
    "tonic",
    "tonic_prost",
    "tokio",
];

/// Why `name` cannot name the crate, beside being a plugin name.
fn crate_name_problem(name: &str) -> Option<String> {
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Some(format!(
            "plugin name {name:?} cannot name a crate: use letters, digits, '-' and '_', starting with a letter"
        ));
    }
    let ident = name.replace('-', "_");
    RESERVED.contains(&ident.as_str()).then(|| {
        format!("plugin name {name:?} cannot name a crate: {ident:?} is reserved by Rust or taken by a dependency")
    })
}

/// The SDK checkout this binary was built from.
fn built_from() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk")
}

/// The package name in `dir/Cargo.toml`, if it has one.
fn package_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let manifest: toml::Table = text.parse().ok()?;
    manifest.get("package")?.get("name")?.as_str().map(str::to_owned)
}

/// The SDK's directory and plugin-proto's beside it, absolute.
fn sdk_dirs(given: Option<&Path>) -> Result<(PathBuf, PathBuf), Failure> {
    let sdk = match given {
        Some(path) => path.to_owned(),
        None => {
            let default = built_from();
            if !default.is_dir() {
                return Err(Failure::input(format!(
                    "the checkout this supervisorctl was built from is gone (no {}): pass --sdk-path PATH, the \
                     plugin-sdk directory of a plugin-supervisor checkout",
                    default.display()
                )));
            }
            default
        }
    };
    if package_name(&sdk).as_deref() != Some("plugin-sdk") {
        return Err(Failure::input(format!(
            "--sdk-path {}: no plugin-sdk crate there (its Cargo.toml must name the package plugin-sdk)",
            sdk.display()
        )));
    }
    let sdk = std::fs::canonicalize(&sdk).map_err(|e| Failure::input(format!("--sdk-path {}: {e}", sdk.display())))?;
    let proto = sdk.parent().map(|checkout| checkout.join("proto")).unwrap_or_default();
    if package_name(&proto).as_deref() != Some("plugin-proto") {
        return Err(Failure::input(format!(
            "--sdk-path {}: no plugin-proto crate beside it at {} (the SDK's build helper)",
            sdk.display(),
            proto.display()
        )));
    }
    Ok((sdk, proto))
}

/// Refuses a directory that has anything in it; creates it otherwise.
fn prepare(dir: &Path) -> Result<PathBuf, Failure> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Failure::input(format!(
                    "{} is not empty: name a new or empty directory with --dir",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        Err(e) => return Err(Failure::input(format!("{}: {e}", dir.display()))),
    }
    std::fs::canonicalize(dir).map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))
}

/// A path as a TOML string, quoted and escaped.
fn toml_path(path: &Path) -> Result<String, Failure> {
    let text = path.to_str().ok_or_else(|| Failure::input(format!("{} is not UTF-8", path.display())))?;
    Ok(toml::Value::String(text.to_owned()).to_string())
}

pub fn run(args: &NewArgs) -> Result<ExitCode, Failure> {
    let name = &args.name;
    if let Some(problem) = name_problem(name).or_else(|| crate_name_problem(name)) {
        return Err(Failure::input(problem));
    }
    let (sdk, proto) = sdk_dirs(args.sdk_path.as_deref())?;
    let dir = prepare(&args.dir.clone().unwrap_or_else(|| PathBuf::from(name)))?;
    let ident = name.replace('-', "_");
    let vars = [
        ("{{name}}", name.clone()),
        ("{{crate}}", ident),
        ("{{sdk_path}}", toml_path(&sdk)?),
        ("{{proto_path}}", toml_path(&proto)?),
        ("{{binary}}", toml_path(&dir.join("target/release").join(name))?),
    ];
    let fill = |template: &str| vars.iter().fold(template.to_owned(), |text, (key, value)| text.replace(key, value));
    for (path, template) in FILES {
        let path = dir.join(fill(path));
        let write = || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, fill(template))
        };
        write().map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))?;
    }
    outln!(
        "wrote the plugin crate {name} to {}: `cargo test` there builds it and runs its test; plugin.toml is its \
         entry for the supervisor's config",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_name_a_crate_are_refused_naming_why() {
        for (name, why) in [
            ("9lives", "starting with a letter"),
            ("a.b", "use letters, digits, '-' and '_'"),
            ("fn", "\"fn\" is reserved"),
            ("plugin-sdk", "\"plugin_sdk\" is reserved"),
            ("test", "\"test\" is reserved"),
        ] {
            let problem = crate_name_problem(name).unwrap_or_default();
            assert!(problem.contains(why), "{name}: {problem:?}");
        }
        for name in ["greeter", "token-check", "a_b2"] {
            assert_eq!(crate_name_problem(name), None, "{name}");
        }
    }

    #[test]
    fn every_placeholder_of_every_template_is_filled() {
        let known = ["{{name}}", "{{crate}}", "{{sdk_path}}", "{{proto_path}}", "{{binary}}"];
        for (path, template) in FILES {
            let rest = known.iter().fold(format!("{path}\n{template}"), |t, k| t.replace(k, ""));
            assert!(!rest.contains("{{"), "{path}: a placeholder `run` does not fill");
        }
    }
}
