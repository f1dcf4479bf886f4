//! Specification tests for the integrity module, one file per concern.

mod digest_pin;
mod elf_refusals;
mod ldconfig;
mod libraries;
mod loader_caps;
mod never_panics;
mod signatures;
pub(crate) mod support;
