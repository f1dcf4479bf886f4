//! A trusted public key (`ed25519:<hex>`) and a key id from arbitrary bytes;
//! a parsed key must print back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_supervisor::integrity::keys::fuzz_one(data));
