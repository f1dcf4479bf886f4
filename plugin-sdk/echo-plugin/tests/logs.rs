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
        // Lines in all, the ones the harness dropped past its bound included.
        let total = |p: &testing::TestPlugin| p.logs_dropped() + p.logs().len() as u64;
        let mut seen = total(&plugin);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let now = total(&plugin);
            if now == seen || std::time::Instant::now() > settling {
                break;
            }
            seen = now;
        }
        let before = total(&plugin);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let idle = total(&plugin) - before;
        let last = plugin.logs().pop();
        assert_eq!(idle, 0, "at {level}: {idle} lines while idle, the last: {last:?}");
    }
    Ok(())
}
