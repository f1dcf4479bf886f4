//! The parsers refuse, never panic: random bytes and random mutations of valid inputs.

use proptest::prelude::*;

use super::support::{CODE_EXIT_0, small_system_binary, tiny_elf32, tiny_elf64};
use crate::integrity::keys::KeyId;
use crate::integrity::{Machine, Sha256Digest, SignatureFile, elf, glob, hex, keyfile, keys, ldconfig, sigfile};

fn valid_signature_text() -> String {
    SignatureFile {
        name: "echo".to_owned(),
        version: "1.2.0".to_owned(),
        sha256: Sha256Digest::of_bytes(b"echo"),
        key_id: KeyId([9; 8]),
        signature: [7; 64],
    }
    .render()
}

/// 512 by default; `PROPTEST_CASES` raises it for a longer local or CI run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

const VALID_KEY: &str = "ed25519:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

/// A few bytes overwritten at random offsets, the way a bit-rot or a doctored file looks.
fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut out = base.to_vec();
    for &(at, byte) in edits {
        if !out.is_empty() {
            let i = at % out.len();
            out[i] = byte;
        }
    }
    out
}

/// Mutations land in the first 4 KiB, where the headers, PT_INTERP and (in a small binary)
/// the dynamic string table live.
fn header_edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((0usize..4096, any::<u8>()), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn elf_inspection_never_panics_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        elf::fuzz_one(&data);
    }

    #[test]
    fn elf_inspection_never_panics_on_mutated_elf_headers(prefix in any::<bool>(), edits in header_edits()) {
        let mut data = b"\x7fELF\x02\x01\x01".to_vec();
        if prefix {
            data.extend_from_slice(&[0u8; 57]);
        }
        elf::fuzz_one(&mutate(&data, &edits));
        elf::fuzz_one(&mutate(&tiny_elf32(3), &edits));
        elf::fuzz_one(&mutate(&tiny_elf64(Machine::host().e_machine, 3, CODE_EXIT_0, true), &edits));
    }

    #[test]
    fn elf_inspection_never_panics_on_a_mutated_real_binary(edits in header_edits()) {
        elf::fuzz_one(&mutate(small_system_binary(), &edits));
    }

    #[test]
    fn signature_parsing_never_panics_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        sigfile::fuzz_one(&data);
    }

    #[test]
    fn signature_parsing_never_panics_on_mutated_files(edits in prop::collection::vec((0usize..1024, any::<u8>()), 1..8)) {
        sigfile::fuzz_one(&mutate(valid_signature_text().as_bytes(), &edits));
    }

    #[test]
    fn signature_parsing_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        sigfile::fuzz_one(text.as_bytes());
        let _ = SignatureFile::parse(&format!("format = 1\n{text}"));
    }

    #[test]
    fn public_key_parsing_never_panics(data in prop::collection::vec(any::<u8>(), 0..100), edits in prop::collection::vec((0usize..80, any::<u8>()), 1..4)) {
        keys::fuzz_one(&data);
        keys::fuzz_one(&mutate(VALID_KEY.as_bytes(), &edits));
    }

    #[test]
    fn secret_key_and_conf_parsing_never_panic(text in "\\PC{0,400}") {
        keyfile::fuzz_one(text.as_bytes());
        ldconfig::fuzz_one(text.as_bytes());
    }

    #[test]
    fn hex_round_trips(bytes in prop::array::uniform32(any::<u8>())) {
        let text = hex::encode(&bytes);
        prop_assert_eq!(hex::decode_array::<32>(&text), Ok(bytes));
        prop_assert_eq!(hex::decode_array::<32>(&text.to_uppercase()), Ok(bytes));
    }

    #[test]
    fn hex_decoding_never_panics(text in "\\PC{0,80}") {
        let _ = hex::decode_array::<32>(&text);
        let _ = text.parse::<Sha256Digest>();
    }

    #[test]
    fn glob_matching_never_panics(pattern in "[a-c*?\\[\\]!^-]{0,12}", name in "[a-c\\[\\]-]{0,12}") {
        let _ = glob::glob_match(&pattern, &name);
    }
}

#[test]
fn the_valid_key_used_for_mutations_is_valid() {
    assert!(crate::integrity::PublicKey::parse(VALID_KEY).is_ok());
}
