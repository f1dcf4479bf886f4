//! ELF inspection and the host checks over an arbitrary image: either may
//! refuse, neither may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_supervisor::integrity::elf::fuzz_one(data));
