//! The echo plugin of `echo-plugin/` (the README's "Writing a plugin"), built as
//! this crate's example, which the tests and the example config run.
#[path = "../echo-plugin/src/lib.rs"]
mod echo_plugin;

fn main() {
    echo_plugin::plugin().serve()
}
