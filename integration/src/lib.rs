//! Shared by the end-to-end tests and the benchmarks: where the built
//! binaries are, a real daemon in a scratch runtime directory that is torn
//! down even when a test fails, and clients for the example contracts.

pub mod bins;
pub mod daemon;
pub mod files;
pub mod fleet;
pub mod flood;
pub mod hog;
pub mod leaker;
pub mod load;
pub mod pb;
pub mod procfs;
pub mod raw;
pub mod scale;
pub mod sibling;
pub mod tmux;

pub use daemon::Daemon;

/// Connects a gRPC channel to a Unix socket (the gateway, typically).
pub async fn connect(path: &std::path::Path) -> anyhow::Result<plugin_proto::transport::H2Channel> {
    let stream = plugin_proto::socket::QuietStream::connect(path).await?;
    let (channel, conn) = plugin_proto::transport::H2Channel::handshake(stream).await?;
    tokio::spawn(conn);
    Ok(channel)
}

/// True while a process with this pid exists (zombies count as gone: an exit is what
/// most tests wait for; [`procfs::state`] tells whether the zombie was reaped too).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}
