//! `supervisorctl plugin new | keygen | sign | verify`: starting a plugin crate
//! (plugin_new.rs), signing plugin binaries in a release pipeline and checking
//! them the way the supervisor will. Runs locally; no supervisor is needed.
//!
//! Exit codes: 0 on success (for `verify`: the binary is valid), 1 when the
//! action failed or the binary was found invalid, 2 when an argument or input
//! file cannot be used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use plugin_supervisor::config::{Config, PluginSpec, name_problem};
use plugin_supervisor::integrity::{
    FileIdentity, Linkage, ObjectType, Policy, PublicKey, Sha256Digest, SignError, SignatureFile, VerifiedBinary,
    generate_keypair, read_public_key_file, sign_binary,
};

use crate::local::Failure;
use crate::stdout::outln;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Writes a new plugin crate that builds and passes its own test: its
    /// .proto, build.rs, src/, a test under the SDK's harness, and plugin.toml,
    /// its entry for the supervisor's config.
    New(crate::plugin_new::NewArgs),
    /// Creates an ed25519 key pair and prints the public key for `trusted_keys`.
    Keygen(KeygenArgs),
    /// Signs a plugin binary as NAME at VERSION, writing `<BINARY>.sig` beside it.
    Sign(SignArgs),
    /// Checks a binary as the supervisor would: ELF for this host, digest and
    /// signature by a trusted key. Exits 0 only when it is valid.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long, value_name = "PATH")]
    pub secret: PathBuf,
    /// Where to write the public key (one `ed25519:…` line).
    #[arg(long, value_name = "PATH")]
    pub public: PathBuf,
}

#[derive(Args)]
pub struct SignArgs {
    /// The plugin binary to sign.
    pub binary: PathBuf,
    /// The secret key file made by `plugin keygen`.
    #[arg(long, value_name = "SECRET")]
    pub key: PathBuf,
    /// The plugin's name, as in the config and its handshake.
    #[arg(long)]
    pub name: String,
    /// The version the plugin reports at handshake (semver).
    #[arg(long)]
    pub version: String,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The plugin binary; its signature is read from `<BINARY>.sig`.
    pub binary: PathBuf,
    /// The plugin name the signature must be for (default: the config entry
    /// for this binary, else the name in the signature file).
    #[arg(long)]
    pub name: Option<String>,
    /// The version the signature must be for.
    #[arg(long)]
    pub version: Option<String>,
    /// A trusted public key: `ed25519:<hex>` or a file holding one; repeatable.
    #[arg(long = "trusted-key", value_name = "KEY", conflicts_with = "config")]
    pub trusted_keys: Vec<String>,
    /// Take the trusted keys, and the entry's sha256 pin and version range,
    /// from this supervisor config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The SHA-256 the binary must have (64 hex digits).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Print the verdict as one JSON object (`"valid": false` and the reason
    /// when the binary is invalid).
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: PluginCommand) -> Result<ExitCode, Failure> {
    match command {
        PluginCommand::New(args) => crate::plugin_new::run(&args),
        PluginCommand::Keygen(args) => keygen(&args),
        PluginCommand::Sign(args) => sign(&args),
        PluginCommand::Verify(args) if args.json => verify(&args).inspect_err(|f| {
            if f.code == crate::exit::Exit::Failure {
                outln!(
                    "{}",
                    serde_json::json!({"valid": false, "binary": args.binary.display().to_string(), "reason": f.reason})
                );
            }
        }),
        PluginCommand::Verify(args) => verify(&args),
    }
}

fn keygen(args: &KeygenArgs) -> Result<ExitCode, Failure> {
    let public = generate_keypair(&args.secret, &args.public).map_err(|e| Failure::failed(e.to_string()))?;
    outln!("{public}");
    eprintln!(
        "wrote secret key {} (mode 0600, keep it private) and public key {} (id {}); \
         trust it with: trusted_keys = [\"{public}\"]",
        args.secret.display(),
        args.public.display(),
        public.key_id(),
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(args: &SignArgs) -> Result<ExitCode, Failure> {
    if let Some(problem) = name_problem(&args.name) {
        return Err(Failure::input(format!("--name: {problem}")));
    }
    // The supervisor compares the signed version with the one the plugin
    // declares at handshake, which must be semver: anything else can never match.
    semver::Version::parse(&args.version)
        .map_err(|e| Failure::input(format!("--version {:?} is not a semver version: {e}", args.version)))?;
    let (sig, path) = sign_binary(&args.binary, &args.key, &args.name, &args.version).map_err(|e| {
        let said = format!("cannot sign {}: {e}", args.binary.display());
        // What was given cannot be used (as `verify` says of a missing key); only
        // writing the signature is a failure of the command's own.
        match e {
            SignError::Write { .. } => Failure::failed(said),
            _ => Failure::input(said),
        }
    })?;
    outln!(
        "signed {} as plugin {:?} version {} (sha256 {}, key {}): wrote {}",
        args.binary.display(),
        sig.name,
        sig.version,
        sig.sha256,
        sig.key_id,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `verify` checks the binary against.
struct Expectations {
    keys: Vec<PublicKey>,
    name: Option<String>,
    sha256: Option<Sha256Digest>,
    version_req: Option<semver::VersionReq>,
}

fn verify(args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let mut expect = expectations(args)?;
    if let Some(hex) = &args.sha256 {
        let pin = hex.parse::<Sha256Digest>().map_err(|e| Failure::input(format!("--sha256: {e}")))?;
        if expect.sha256.is_some_and(|configured| configured != pin) {
            return Err(Failure::input("--sha256 differs from the config's sha256 pin for this plugin"));
        }
        expect.sha256 = Some(pin);
    }
    if expect.keys.is_empty() {
        return Err(Failure::input(
            "no trusted keys: pass --trusted-key KEY (an ed25519:… key or a file holding one), \
             or --config FILE whose [supervisor] trusted_keys lists them",
        ));
    }
    let name = match expect.name.take() {
        Some(name) => name,
        None => name_from_signature(&args.binary)?,
    };
    let policy = Policy {
        expected_sha256: expect.sha256,
        require_signature: true,
        trusted_keys: &expect.keys,
        expected_version: args.version.as_deref(),
        ..Policy::default()
    };
    let verified =
        VerifiedBinary::open(&name, &args.binary, &policy).map_err(|e| Failure::failed(format!("INVALID: {e}")))?;
    let Some(sig) = verified.signature() else {
        return Err(Failure::failed(format!("INVALID: plugin {name:?}: no signature was checked")));
    };
    if let Some(req) = &expect.version_req {
        let in_range = semver::Version::parse(&sig.version).is_ok_and(|v| req.matches(&v));
        if !in_range {
            return Err(Failure::failed(format!(
                "INVALID: plugin {name:?}: signed version {} is outside the configured range {req}",
                sig.version
            )));
        }
    }
    let elf = verified.elf();
    let linkage = match (elf.linkage(), &elf.interpreter) {
        (Linkage::Dynamic, Some(interp)) => format!("dynamically linked, interpreter {}", interp.display()),
        (Linkage::StaticPie, _) => "static PIE".to_owned(),
        _ => "statically linked".to_owned(),
    };
    let kind = match elf.object_type {
        ObjectType::Dynamic => "PIE executable".to_owned(),
        other => other.to_string(),
    };
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "valid": true,
                "binary": args.binary.display().to_string(),
                "name": sig.name,
                "version": sig.version,
                "sha256": verified.digest().to_string(),
                "key_id": sig.key_id.to_string(),
                "elf": {"machine": elf.machine.to_string(), "type": kind, "linkage": linkage},
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("valid: plugin {:?} version {}", sig.name, sig.version);
    outln!("  binary:    {}", args.binary.display());
    outln!("  sha256:    {}", verified.digest());
    outln!("  signed by: key {}", sig.key_id);
    outln!("  elf:       {} {kind}, {linkage}", elf.machine);
    Ok(ExitCode::SUCCESS)
}

/// Trusted keys and pins from `--trusted-key` or `--config`.
fn expectations(args: &VerifyArgs) -> Result<Expectations, Failure> {
    let mut expect = Expectations { keys: Vec::new(), name: args.name.clone(), sha256: None, version_req: None };
    for key in &args.trusted_keys {
        expect.keys.push(trusted_key(key)?);
    }
    let Some(path) = &args.config else {
        return Ok(expect);
    };
    let config = Config::load(path).map_err(|e| Failure::input(e.to_string()))?;
    for (i, key) in config.supervisor.trusted_keys.iter().enumerate() {
        let key = key
            .parse::<PublicKey>()
            .map_err(|e| Failure::input(format!("{}: supervisor.trusted_keys[{i}]: {e}", path.display())))?;
        expect.keys.push(key);
    }
    if let Some(spec) = config_entry(&config.specs(), args) {
        // A signature vouches for the name the binary declares, which an entry configuring
        // it under another name states in `declared_name`.
        expect.name = Some(spec.declared_name.clone());
        expect.sha256 = spec.integrity.sha256;
        expect.version_req = spec.version_req.clone();
    }
    Ok(expect)
}

/// The config entry for this binary: the one named by `--name`, else the one
/// whose binary is this very file.
/// (A binary that cannot be read matches nothing; opening it reports why.)
fn config_entry<'a>(specs: &'a [PluginSpec], args: &VerifyArgs) -> Option<&'a PluginSpec> {
    if let Some(name) = &args.name {
        return specs.iter().find(|s| &s.name == name);
    }
    let identity = |p: &Path| std::fs::metadata(p).ok().map(|m| FileIdentity::of(&m));
    let ours = identity(&args.binary)?;
    specs.iter().find(|s| identity(&s.binary) == Some(ours))
}

/// A key given on the command line: the key itself, or a public key file.
fn trusted_key(text: &str) -> Result<PublicKey, Failure> {
    if text.trim_start().starts_with(plugin_supervisor::integrity::keys::PUBLIC_KEY_PREFIX) {
        return text.parse::<PublicKey>().map_err(|e| Failure::input(format!("--trusted-key {text:?}: {e}")));
    }
    read_public_key_file(Path::new(text)).map_err(|e| Failure::input(format!("--trusted-key: {e}")))
}

/// Without `--name` or a config entry, the signature file says which plugin
/// it vouches for; the report prints that name so the caller sees it.
fn name_from_signature(binary: &Path) -> Result<String, Failure> {
    let placeholder = binary.file_name().map_or_else(|| binary.display().to_string(), |n| n.to_string_lossy().into());
    SignatureFile::load(&placeholder, &SignatureFile::path_for(binary))
        .map(|sig| sig.name)
        .map_err(|e| Failure::failed(format!("INVALID: {e}")))
}
