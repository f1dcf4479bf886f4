//! Two encoded FileDescriptorSets (the first two bytes say where the input
//! splits) compared: no panic, and a set compared with itself never breaks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_supervisor::contract::fuzz_one(data));
