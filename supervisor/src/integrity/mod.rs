//! Binary integrity: what runs is exactly what the operator approved.
//!
//! The supervisor opens a plugin binary once, hashes that open file, inspects its ELF
//! headers, optionally checks an ed25519 signature, and later executes the same descriptor
//! (`execveat(fd, "", AT_EMPTY_PATH)`). Everything here therefore works from an open
//! [`std::fs::File`] and never reopens the path; [`VerifiedBinary::open`] is the entry point.
//!
//! Where things live: `digest` (SHA-256 of an open file), `elf`/`elf_dynamic`/`elf_check`/
//! `elf_error`/`machine` (ELF inspection and the host check), `libraries`/`ldconfig`/`glob`/
//! `dst`/`loader_caps`/`loader_host`/`library_error` (the files ld.so will open, for
//! Landlock), `owners` (that no plugin's id can change them), `stamp` (whether a path
//! still names the file something was made from), `keys`/`keyfile` (public key strings,
//! key files, keygen), `message`/`sigfile`/`signature`/`signature_error` (what is
//! signed, the `.sig` file, sign and verify), `verified` (the entry point and its
//! policy). Each parser has a `fuzz_one(&[u8])` for cargo-fuzz.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod digest;
pub mod dst;
pub mod elf;
pub mod elf_check;
pub mod elf_dynamic;
pub mod elf_error;
pub mod glob;
pub mod hex;
pub mod image;
pub mod keyfile;
pub mod keys;
pub mod ldconfig;
pub mod libraries;
pub mod library_error;
pub mod loader_caps;
pub mod loader_host;
pub mod machine;
pub mod message;
pub mod owners;
pub mod sigfile;
pub mod signature;
pub mod signature_error;
pub mod source;
pub mod stamp;
pub mod subject;
pub mod verified;

#[cfg(test)]
pub(crate) mod tests;

pub use digest::Sha256Digest;
pub use elf::{DEFAULT_MAX_FILE_SIZE, ElfHeader, ElfInfo, Linkage, ObjectType};
pub use elf_check::{inspect_executable, inspect_executable_from};
pub use elf_error::ElfError;
pub use image::VerifiedImage;
pub use keyfile::{KeyError, SecretKey, generate_keypair, read_public_key_file};
pub use keys::{KeyId, KeyParseError, PublicKey};
pub use libraries::{LibraryError, LoadedObject, LoaderFiles, SearchConfig};
pub use machine::{ElfClass, Endianness, Machine};
pub use sigfile::{SigFileParseError, SignatureFile};
pub use signature::{SignError, VerifiedSignature, sign, sign_binary, verify, verify_beside};
pub use signature_error::SignatureError;
pub use subject::Subject;
pub use verified::{FileIdentity, IntegrityError, Policy, VerifiedBinary};
pub(crate) use verified::{NotOpened, open_regular, sha256_on_disk};
