//! Writes the seed corpus in `fuzz/corpus/<target>/`: small valid inputs the
//! fuzzer mutates from. Deterministic, so the committed seeds can be remade:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use plugin_supervisor::contract::load_contract;
use plugin_supervisor::integrity::keys::KeyId;
use plugin_supervisor::integrity::{DEFAULT_MAX_FILE_SIZE, PublicKey, Sha256Digest, SignatureFile, Subject, elf};
use prost::Message;

const KEY: &str = "ed25519:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

fn main() -> Result<(), String> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    let repo = fuzz.parent().ok_or("fuzz/ has no parent")?;
    config(&corpus.join("config"), repo)?;
    sigfile(&corpus.join("sigfile"))?;
    public_key(&corpus.join("public_key"))?;
    elf(&corpus.join("elf"))?;
    descriptors(&corpus.join("descriptors"), repo)?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(name);
    fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn config(dir: &Path, repo: &Path) -> Result<(), String> {
    let example = repo.join("supervisor/examples/supervisor.toml");
    let shipped = fs::read(&example).map_err(|e| format!("{}: {e}", example.display()))?;
    write(dir, "example.toml", &shipped)?;
    let pinned = format!(
        "[supervisor]\nruntime_dir = \"/run/ps\"\ncontrol_socket_mode = \"0600\"\ntrusted_keys = [\"{KEY}\"]\n\
         require_signatures = true\n\n[supervisor.defaults]\nhandshake_timeout = \"5s\"\ncall_timeout = \"1m 30s\"\n\
         restart = \"on-failure\"\n\n[supervisor.defaults.backoff]\ninitial = \"100ms\"\nmax = \"30s\"\n\
         multiplier = 2.0\njitter = 0.2\n\n[[plugin]]\nname = \"echo\"\nbinary = \"bin/echo\"\nargs = [\"--flag\"]\n\
         env = [\"RUST_LOG\"]\nreplicas = 2\nsha256 = \"{}\"\nversion = \">=1.2, <2\"\ncontract = [\"echo.proto\"]\n\
         contract_includes = [\"proto\"]\nrequire_signature = false\n\n[plugin.config]\ngreeting = \"hi\"\nn = 3\n\
         nested = {{ list = [1, 2.5, true, 1979-05-27T07:32:00Z] }}\n",
        Sha256Digest::of_bytes(b"echo")
    );
    write(dir, "pinned.toml", pinned.as_bytes())?;
    write(
        dir,
        "problems.toml",
        b"[[plugin]]\nname = \"../x\"\nbinary = \"\"\nreplicas = 0\nsha256 = \"zz\"\nversion = \"~\"\n",
    )
}

fn sigfile(dir: &Path) -> Result<(), String> {
    let sig = SignatureFile {
        name: "echo".to_owned(),
        version: "1.2.0".to_owned(),
        sha256: Sha256Digest::of_bytes(b"echo"),
        key_id: KeyId([0x89, 0x48, 0x5a, 0x78, 0x60, 0x29, 0xb4, 0xd5]),
        signature: [0x5a; 64],
    };
    SignatureFile::parse(&sig.render()).map_err(|e| format!("the valid seed does not parse: {e}"))?;
    write(dir, "valid.sig", sig.render().as_bytes())?;
    write(dir, "format2.sig", b"format = 2\nalgorithm = \"ed25519\"\n")
}

fn public_key(dir: &Path) -> Result<(), String> {
    PublicKey::parse(KEY).map_err(|e| format!("the seed key does not parse: {e}"))?;
    write(dir, "key", KEY.as_bytes())?;
    write(dir, "key_line", format!("  {KEY}\n").as_bytes())?;
    write(dir, "key_id", b"89485a786029b4d5")
}

const BASE: u64 = 0x40_0000;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

fn elf(dir: &Path) -> Result<(), String> {
    let exit0: &[u8] = &[0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
    write(dir, "static_x86_64", &elf64(62, 2, exit0, None))?;
    write(dir, "static_pie_x86_64", &elf64(62, 3, exit0, Some(Dynamic::default())))?;
    let dynamic = Dynamic {
        interp: Some("/lib64/ld-linux-x86-64.so.2"),
        needed: vec!["libc.so.6", "libplugin.so"],
        runpath: Some("$ORIGIN/../lib:/opt/lib"),
    };
    write(dir, "dynamic_x86_64", &elf64(62, 3, exit0, Some(dynamic)))?;
    write(dir, "static_aarch64", &elf64(183, 2, exit0, None))?;
    write(dir, "script", b"#!/bin/sh\nexit 0\n")?;
    check_elf_seeds(dir)
}

/// The images must be what they claim, or the fuzzer starts from noise.
fn check_elf_seeds(dir: &Path) -> Result<(), String> {
    let subject = Subject::new("seed", dir);
    let read = |name: &str| fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let info = elf::inspect(&subject, read("dynamic_x86_64")?.as_slice(), DEFAULT_MAX_FILE_SIZE)
        .map_err(|e| format!("dynamic_x86_64: {e}"))?;
    let wanted = (Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2")), 2, true);
    if (info.interpreter.clone(), info.needed.len(), info.runpath.is_some()) != wanted {
        return Err(format!("dynamic_x86_64 parsed as {info:?}"));
    }
    for name in ["static_x86_64", "static_pie_x86_64"] {
        elf::inspect(&subject, read(name)?.as_slice(), DEFAULT_MAX_FILE_SIZE).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

#[derive(Default)]
struct Dynamic {
    interp: Option<&'static str>,
    needed: Vec<&'static str>,
    runpath: Option<&'static str>,
}

/// A small ELF64 little-endian image: one PT_LOAD over the whole file, and
/// optionally PT_INTERP and PT_DYNAMIC with DT_NEEDED / DT_RUNPATH entries.
fn elf64(machine: u16, e_type: u16, code: &[u8], dynamic: Option<Dynamic>) -> Vec<u8> {
    let dynamic_present = dynamic.is_some();
    let dynamic = dynamic.unwrap_or_default();
    let phnum: u16 = 1 + u16::from(dynamic.interp.is_some()) + u16::from(dynamic_present);
    let mut tail = code.to_vec();
    let head = 64 + 56 * u64::from(phnum);
    let interp = dynamic.interp.map(|path| {
        let at = head + tail.len() as u64;
        tail.extend_from_slice(path.as_bytes());
        tail.push(0);
        (at, path.len() as u64 + 1)
    });
    let strtab = head + tail.len() as u64;
    tail.push(0);
    let mut entries: Vec<(u64, u64)> = Vec::new();
    for name in dynamic.needed.iter().copied().chain(dynamic.runpath) {
        let offset = head + tail.len() as u64 - strtab;
        tail.extend_from_slice(name.as_bytes());
        tail.push(0);
        let tag = if Some(name) == dynamic.runpath { 29 } else { 1 };
        entries.push((tag, offset));
    }
    let strsz = head + tail.len() as u64 - strtab;
    while !tail.len().is_multiple_of(8) {
        tail.push(0);
    }
    let dyn_at = head + tail.len() as u64;
    if dynamic_present {
        entries.extend([(5, BASE + strtab), (10, strsz), (0, 0)]);
        for (tag, value) in &entries {
            tail.extend_from_slice(&tag.to_le_bytes());
            tail.extend_from_slice(&value.to_le_bytes());
        }
    }
    let total = head + tail.len() as u64;

    let mut out = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    out.extend_from_slice(&e_type.to_le_bytes());
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(BASE + head).to_le_bytes()); // entry: the code
    out.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, phnum, 64, 0, 0] {
        out.extend_from_slice(&half.to_le_bytes());
    }
    let mut phdr = |p_type: u32, flags: u32, offset: u64, size: u64| {
        out.extend_from_slice(&p_type.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        for field in [offset, BASE + offset, BASE + offset, size, size, 0x1000] {
            out.extend_from_slice(&field.to_le_bytes());
        }
    };
    phdr(PT_LOAD, 5, 0, total);
    if let Some((at, len)) = interp {
        phdr(PT_INTERP, 4, at, len);
    }
    if dynamic_present {
        phdr(PT_DYNAMIC, 4, dyn_at, total - dyn_at);
    }
    out.extend_from_slice(&tail);
    out
}

/// Each contract case's old and new sets, as the target reads them: two
/// little-endian bytes giving the old set's length, then both sets.
fn descriptors(dir: &Path, repo: &Path) -> Result<(), String> {
    let cases = repo.join("supervisor/tests/contract-cases");
    let mut names: Vec<PathBuf> = fs::read_dir(&cases)
        .map_err(|e| format!("{}: {e}", cases.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    names.sort();
    for case in names {
        let side = |name: &str| {
            let file = case.join(format!("{name}.proto"));
            let path = if file.is_file() { file } else { case.join(name) };
            load_contract(&path).map(|set| set.encode_to_vec()).map_err(|e| e.to_string())
        };
        let (old, new) = (side("old")?, side("new")?);
        let split = u16::try_from(old.len()).map_err(|_| format!("{}: old set over 64 KiB", case.display()))?;
        let mut seed = split.to_le_bytes().to_vec();
        seed.extend_from_slice(&old);
        seed.extend_from_slice(&new);
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        write(dir, &name, &seed)?;
    }
    Ok(())
}
