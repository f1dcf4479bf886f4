//! Compiles the contracts the tests call: the example plugins' and the zoo's.
fn main() -> std::io::Result<()> {
    let out =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| std::io::Error::other("OUT_DIR unset"))?);
    let examples = "../plugin-sdk/examples/proto";
    let echo = "../plugin-sdk/echo-plugin/proto";
    plugin_proto::build::compile_into(&[format!("{echo}/echo.proto")], &[echo], &out, "echo.binpb")?;
    plugin_proto::build::compile_into(&[format!("{examples}/token.proto")], &[examples], &out, "token.binpb")?;
    plugin_proto::build::compile_into(&["proto/zoo.proto"], &["proto"], &out, "zoo.binpb")?;
    Ok(())
}
