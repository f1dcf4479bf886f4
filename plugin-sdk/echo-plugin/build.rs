//! build.rs: compiles proto/echo.proto (no protoc needed) and saves its descriptors.
fn main() -> std::io::Result<()> {
    plugin_proto::build::compile(&["proto/echo.proto"], &["proto"])
}
