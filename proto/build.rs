//! Compiles the contracts with protox, so no `protoc` install is needed.
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/plugin/v1/plugin.proto", "proto/plugin/v1/host.proto", "proto/supervisor/v1/control.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.binpb"), fds.encode_to_vec())?;
    tonic_prost_build::configure().codec_path("crate::codec::SmallCodec").compile_fds(fds)?;
    Ok(())
}
