//! Build-script helper for plugin authors: compiles `.proto` files to Rust
//! with protox (no `protoc` install) and saves the descriptor set the plugin
//! declares at handshake.
//!
//! In `build.rs`:
//! ```no_run
//! plugin_proto::build::compile(&["proto/echo.proto"], &["proto"]).unwrap();
//! ```
//! and in the crate: `include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.binpb"))`.
//!
//! The generated code reaches prost's gRPC codec through the SDK
//! ([`SDK_CODEC`]), so a plugin crate depends on `plugin-sdk`, `prost` and
//! `tonic` and on no `tonic-prost` of its own; the crate must call the SDK
//! `plugin_sdk` (not rename it).

use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

/// The codec the generated clients and servers name: prost's, as plugin-sdk re-exports it.
pub const SDK_CODEC: &str = "::plugin_sdk::tonic_prost::ProstCodec";

/// Compiles `protos` (searched in `includes`) into `$OUT_DIR`, writing the
/// generated code and `descriptors.binpb`.
pub fn compile(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> io::Result<()> {
    let out = PathBuf::from(
        std::env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR is not set: call this from build.rs"))?,
    );
    compile_into(protos, includes, &out, "descriptors.binpb")
}

/// Like [`compile`], into `out_dir` and with a chosen descriptor file name.
pub fn compile_into(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
    out_dir: &Path,
    descriptor_file: &str,
) -> io::Result<()> {
    for p in protos {
        println!("cargo:rerun-if-changed={}", p.as_ref().display());
    }
    let fds = protox::compile(protos, includes).map_err(|e| io::Error::other(format!("{e:?}")))?;
    std::fs::write(out_dir.join(descriptor_file), fds.encode_to_vec())?;
    tonic_prost_build::configure().codec_path(SDK_CODEC).out_dir(out_dir).compile_fds(fds)
}
