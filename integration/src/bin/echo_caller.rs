//! Calls `echo.v1.Echo/Echo` once through a gateway socket, as whichever
//! user runs it, and prints the outcome: `OK <message>`, or the gRPC code
//! and message. The routing tests run it under other uids and groups to
//! show what `callers` lets each of them see.
//!
//! `echo_caller SOCKET [PLUGIN]`: PLUGIN goes into the `x-plugin` header.

use plugin_integration::connect;
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().ok_or_else(|| anyhow::anyhow!("usage: echo_caller SOCKET [PLUGIN]"))?;
    let mut req = tonic::Request::new(EchoRequest { message: "hi".into() });
    if let Some(plugin) = args.next() {
        req.metadata_mut().insert("x-plugin", plugin.parse()?);
    }
    let mut echo = EchoClient::new(connect(socket.as_ref()).await?);
    match echo.echo(req).await {
        Ok(answer) => println!("OK {}", answer.into_inner().message),
        Err(status) => println!("{:?} {}", status.code(), status.message()),
    }
    Ok(())
}
