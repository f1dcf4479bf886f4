//! How the supervisor hands a plugin its connections: fixed descriptor
//! numbers and a cookie, the same on both sides of the protocol.

use std::os::fd::RawFd;

/// The plugin serves gRPC (lifecycle + its own services) on this socket.
pub const PLUGIN_FD: RawFd = 3;
/// The plugin calls the supervisor's Host service on this socket.
pub const HOST_FD: RawFd = 4;
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
