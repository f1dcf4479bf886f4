//! A supervisor config from arbitrary text: syntax, types, units and every
//! check that needs no file, and the rendering of each problem found.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_supervisor::config::fuzz_one(data));
