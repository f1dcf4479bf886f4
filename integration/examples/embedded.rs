//! Embedding the supervisor in a Rust host application: the plugins run as
//! sandboxed child processes of this program, and calls go straight from
//! the generated client to the plugin's socket — no daemon, no gateway hop.
//!
//! Run it with the example config (after building the example plugins):
//! `cargo run -p plugin-integration --example embedded -- supervisor/examples/supervisor.toml`

use std::time::Duration;

use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_supervisor::Supervisor;
use plugin_supervisor::config::Config;

// One thread is enough, and keeps each call on one CPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "supervisor/examples/supervisor.toml".into());
    let config = Config::load(path.as_ref())?;

    let supervisor = Supervisor::start(config).await?;
    supervisor.wait_running("echo", Duration::from_secs(10)).await?;

    // Any tonic-generated client takes the channel; the routing layers
    // (deadline, balancing over replicas) are the gateway's.
    let mut echo = EchoClient::new(supervisor.channel("echo")?);
    let reply = echo.echo(EchoRequest { message: "hello from the host".into() }).await?;
    println!("echo answered: {}", reply.into_inner().message);

    supervisor.shutdown().await;
    Ok(())
}
