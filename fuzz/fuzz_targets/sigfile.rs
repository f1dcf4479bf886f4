//! A plugin signature file (`<binary>.sig`) from arbitrary bytes; whatever
//! parses must render and parse back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_supervisor::integrity::sigfile::fuzz_one(data));
