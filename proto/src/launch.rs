//! How the supervisor hands a plugin its connections: fixed descriptor
//! numbers and a cookie, the same on both sides of the protocol.

use std::os::fd::RawFd;
use std::time::Duration;

/// The plugin serves gRPC (lifecycle + its own services) on this socket.
pub const PLUGIN_FD: RawFd = 3;
/// The plugin calls the supervisor's Host service on this socket.
pub const HOST_FD: RawFd = 4;
/// How long past the drain deadline of a Shutdown call a plugin has to end by itself,
/// counted from the call's answer, before the supervisor sends SIGTERM. Whatever a plugin
/// does after its drain (flushing its logs, letting blocking jobs end) fits in it.
pub const EXIT_AFTER_DRAIN: Duration = Duration::from_millis(250);
/// Set in a plugin's environment by the supervisor; without it a binary was
/// started by hand and says so instead of serving.
pub const COOKIE_ENV: &str = "PLUGIN_SUPERVISOR_COOKIE";
/// The cookie's value. Not a secret: it only tells "started by the supervisor"
/// from "started by hand".
pub const COOKIE_VALUE: &str = "9d3e2f6a-plugin-supervisor-v1";
/// The instance id ("echo-0"), for the plugin's own logs.
pub const INSTANCE_ENV: &str = "PLUGIN_SUPERVISOR_INSTANCE";
/// The inode number (`st_ino`) of the socket the supervisor put at [`HOST_FD`], in
/// decimal: a plugin may close fd 4 and open a socket of its own that takes the number,
/// which an SDK must then leave alone rather than take for the host's.
pub const HOST_SOCKET_ENV: &str = "PLUGIN_SUPERVISOR_HOST_SOCKET";
