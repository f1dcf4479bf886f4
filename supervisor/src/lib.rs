//! plugin-supervisor: runs plugins as isolated child processes reached over
//! gRPC on socketpairs, verifies what it launches, restarts what fails, and
//! routes host calls to them.
//!
//! Embedded use (no daemon, no gateway hop):
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = plugin_supervisor::config::Config::load("supervisor.toml".as_ref())?;
//! let sup = plugin_supervisor::Supervisor::start(config).await?;
//! sup.wait_running("echo", std::time::Duration::from_secs(10)).await?;
//! let channel = sup.channel("echo")?; // give it to any tonic-generated client
//! # drop(channel);
//! sup.shutdown().await;
//! # Ok(()) }
//! ```

pub mod cli_docs;
pub mod config;
pub mod contract;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod init;
pub mod instance;
pub mod integrity;
mod kept_stopped;
pub mod leaks;
pub mod net;
pub mod observe;
pub mod onboard;
mod plugin_set;
pub mod quotas;
pub mod reload;
pub mod rollout;
pub mod routing;
mod sampler;
pub mod sandbox;
pub mod service;
pub mod state;
mod supervisor;
#[cfg(test)]
mod test_files;
#[cfg(test)]
mod test_procs;

pub use routing::Channel;
pub use routing::host_calls::HostServices;
pub use supervisor::{Supervisor, SupervisorError};
