//! src/main.rs: serves the plugin to the supervisor.
fn main() {
    echo_plugin::plugin().serve()
}
