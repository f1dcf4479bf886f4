//! tests/echo.rs: the plugin under the SDK's harness, in this process and as the built binary.
use echo_plugin::pb::{EchoRequest, echo_client::EchoClient};
use plugin_sdk::serde_json::json;
use plugin_sdk::testing;

#[tokio::test]
async fn echoes_in_process() -> Result<(), Box<dyn std::error::Error>> {
    let plugin = testing::start(echo_plugin::plugin()).await?;
    assert_eq!(plugin.handshake().services, ["echo.v1.Echo"]);
    let mut echo = EchoClient::new(plugin.channel());
    let reply = echo.echo(EchoRequest { message: "hello".into() }).await?;
    assert_eq!(reply.into_inner().message, "hello");
    assert!(plugin.shutdown().await?.ended.is_clean());
    Ok(())
}

#[tokio::test]
async fn echoes_as_the_built_binary() -> Result<(), Box<dyn std::error::Error>> {
    let plugin = testing::start_binary("echo", env!("CARGO_BIN_EXE_echo-plugin")).await?;
    plugin.init(json!({"greeting": "hi"})).await?; // its [plugin.config]
    let configured = plugin.wait_for_log(|line| line.message == "configured").await?;
    assert_eq!(configured.fields["config"], r#"{"greeting":"hi"}"#);
    let mut echo = EchoClient::new(plugin.channel());
    assert_eq!(echo.echo(EchoRequest { message: "hi".into() }).await?.into_inner().message, "hi");
    let stopped = plugin.shutdown().await?; // as `supervisorctl stop` does
    assert!(stopped.ended.is_clean(), "{stopped:?}");
    Ok(())
}
