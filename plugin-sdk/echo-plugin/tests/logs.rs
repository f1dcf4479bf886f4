//! The SDK's log stream as the built binary sends it through the harness's host service.

use plugin_sdk::testing;

/// The SDK's log stream does not log itself: at `PLUGIN_LOG=debug` (and trace), h2's event
/// for each frame of the log stream was a record of its own, sent in a frame of its own, for
/// ever, with the plugin idle (thousands of lines a second).
#[tokio::test]
async fn at_debug_an_idle_plugins_log_stream_does_not_log_itself() -> Result<(), Box<dyn std::error::Error>> {
    for level in ["debug", "trace"] {
        let plugin = testing::Options::named("echo")
            .env("PLUGIN_LOG", level)
            .start_binary(env!("CARGO_BIN_EXE_echo-plugin"))
            .await?;
        // Its connections' start settles: the records of it, which come on fd 4 apart
        // from the handshake, have stopped coming for half a second (a fixed half second
        // was not always enough on a loaded machine). A stream logging itself never
        // settles, and is caught below all the same.
        let settling = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = plugin.logs().len();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let now = plugin.logs().len();
            if now == seen || std::time::Instant::now() > settling {
                break;
            }
            seen = now;
        }
        let before = plugin.logs().len();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let idle = &plugin.logs()[before..];
        assert!(idle.is_empty(), "at {level}: {} lines while idle, the first: {:?}", idle.len(), idle.first());
    }
    Ok(())
}
