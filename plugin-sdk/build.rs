//! Compiles the example plugins' contracts the same way a plugin author's
//! build script would, through `plugin_proto::build`.
fn main() -> std::io::Result<()> {
    let out =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| std::io::Error::other("OUT_DIR unset"))?);
    // The echo example is echo-plugin's own src/lib.rs, which reads its descriptors
    // under the name `plugin_proto::build::compile` gives them.
    plugin_proto::build::compile_into(
        &["echo-plugin/proto/echo.proto"],
        &["echo-plugin/proto"],
        &out,
        "descriptors.binpb",
    )?;
    plugin_proto::build::compile_into(&["examples/proto/token.proto"], &["examples/proto"], &out, "token.binpb")?;
    Ok(())
}
