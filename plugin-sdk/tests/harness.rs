//! The test harness holds a plugin's declared contract to the supervisor's
//! check, which is stricter than the SDK's own: descriptors that name the
//! served service but leave out a type its methods use pass the SDK and are
//! refused, as the supervisor refuses them. Its shutdown drains as the
//! supervisor's stop does: a call in flight finishes, and is reported. Its
//! health check reads the plugin's own health, as the supervisor's does.

use std::time::Duration;

use plugin_sdk::testing::{self, HarnessError};
use prost::Message;

mod pb {
    tonic::include_proto!("echo.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.binpb"));
}

/// Echoes, after `delay`.
struct SlowEcho {
    delay: Duration,
}

#[tonic::async_trait]
impl pb::echo_server::Echo for SlowEcho {
    async fn echo(
        &self,
        request: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        Ok(tonic::Response::new(pb::EchoResponse { message: request.into_inner().message }))
    }
}

fn echo(descriptors: &[u8], delay: Duration) -> plugin_sdk::Plugin {
    plugin_sdk::Plugin::new("echo", "0.1.0")
        .descriptors(descriptors)
        .service(pb::echo_server::EchoServer::new(SlowEcho { delay }))
}

#[tokio::test]
async fn descriptors_that_leave_out_a_type_the_service_uses_are_refused() {
    let mut set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    set.file[0].message_type.retain(|m| m.name() != "EchoRequest");
    let err = testing::start(echo(&set.encode_to_vec(), Duration::ZERO)).await.unwrap_err();
    assert!(matches!(err, HarnessError::Contract(_)), "{err:?}");
    assert!(err.to_string().starts_with("plugin declared a contract that does not decode: "), "{err}");
    assert!(err.to_string().contains("echo.v1.EchoRequest"), "{err}");
}

#[tokio::test]
async fn shutdown_drains_a_call_in_flight_and_reports_it() {
    let plugin = testing::start(echo(pb::FILE_DESCRIPTOR_SET, Duration::from_millis(300))).await.unwrap();
    let mut client = pb::echo_client::EchoClient::new(plugin.channel());
    let called = std::time::Instant::now();
    let call = tokio::spawn(async move { client.echo(pb::EchoRequest { message: "late".into() }).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped = plugin.shutdown().await.unwrap();
    assert_eq!(stopped.in_flight, Some(1), "{stopped:?}");
    assert!(stopped.ended.is_clean(), "{stopped:?}");
    // The stop waited for the call's 300 ms, counted from the call: from the Shutdown
    // alone it is 250 ms only when this test's thread woke on time.
    assert!(called.elapsed() >= Duration::from_millis(300), "{stopped:?}");
    assert_eq!(call.await.unwrap().unwrap().into_inner().message, "late");
}

/// A stop with no time to drain is answered, with the call it cuts, before the plugin
/// ends: the deadline passing at once ended the plugin before its answer left.
#[tokio::test]
async fn a_stop_with_no_time_to_drain_is_still_answered() {
    for _ in 0..5 {
        let options = testing::Options::default().stop_timeout(Duration::ZERO);
        let plugin = options.start(echo(pb::FILE_DESCRIPTOR_SET, Duration::from_secs(30))).await.unwrap();
        let mut client = pb::echo_client::EchoClient::new(plugin.channel());
        let call = tokio::spawn(async move { client.echo(pb::EchoRequest { message: "cut".into() }).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stopped = plugin.shutdown().await.unwrap();
        assert_eq!(stopped.in_flight, Some(1), "{stopped:?}");
        let cut = call.await.unwrap().unwrap_err();
        assert!(
            matches!(cut.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown),
            "{cut:?}"
        );
    }
}

#[tokio::test]
async fn serving_says_what_the_plugins_own_health_says() {
    let serving = testing::start(echo(pb::FILE_DESCRIPTOR_SET, Duration::ZERO)).await.unwrap();
    assert!(serving.serving().await.unwrap());
    let not_yet = testing::start(echo(pb::FILE_DESCRIPTOR_SET, Duration::ZERO).not_serving()).await.unwrap();
    assert!(!not_yet.serving().await.unwrap());
}

/// An init hook that panicked is not run again, nor skipped: a later init is refused,
/// saying so. It used to answer OK without running any hook.
#[tokio::test]
async fn init_after_a_panicking_init_hook_is_refused_not_skipped() {
    let plugin =
        testing::start(echo(pb::FILE_DESCRIPTOR_SET, Duration::ZERO).on_init(|_| panic!("no config"))).await.unwrap();
    let first = plugin.init(serde_json::json!({})).await.unwrap_err();
    assert!(
        matches!(&first, HarnessError::Init { code: tonic::Code::Internal, message } if message.contains("no config")),
        "{first:?}"
    );
    let again = plugin.init(serde_json::json!({})).await.unwrap_err();
    assert!(
        matches!(&again, HarnessError::Init { code: tonic::Code::Internal, message }
            if message == "init hook poisoned by an earlier panic"),
        "{again:?}"
    );
}

/// A plugin that ended, found so by an init, is not waited for again: a second init and
/// the shutdown say it had ended (both panicked: the task's handle was awaited twice).
#[tokio::test]
async fn steps_after_the_plugins_end_was_reported_say_it_ended_instead_of_panicking() {
    let plugin = testing::start(echo(pb::FILE_DESCRIPTOR_SET, Duration::ZERO)).await.unwrap();
    let mut lifecycle =
        plugin_sdk::plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient::new(plugin.channel());
    let req = plugin_sdk::plugin_proto::plugin::v1::ShutdownRequest { drain_deadline_ms: 0, reason: "test".into() };
    lifecycle.shutdown(req).await.unwrap();
    let first = plugin.init(serde_json::json!({})).await.unwrap_err();
    assert!(matches!(first, HarnessError::Ended { phase: testing::Phase::Init }), "{first:?}");
    let again = plugin.init(serde_json::json!({})).await.unwrap_err();
    assert!(matches!(again, HarnessError::Ended { phase: testing::Phase::Init }), "{again:?}");
    let stopped = plugin.shutdown().await.unwrap_err();
    assert_eq!(stopped.to_string(), "plugin stopped serving before it answered the init");
}

/// A line is cut at 16 KiB and marked, as the supervisor cuts it: a child writing an endless
/// line was read whole into memory, and came back whole in the error that named its end.
#[tokio::test]
async fn a_long_stderr_line_is_cut_as_the_supervisor_cuts_it() {
    let err = testing::Options::named("sh")
        .env("PATH", "/usr/bin:/bin")
        .arg("-c")
        .arg("head -c 1048576 /dev/zero | tr '\\0' x >&2; echo >&2; echo after >&2; exit 3")
        .start_binary("/bin/sh")
        .await
        .unwrap_err();
    let HarnessError::Exited { stderr, .. } = &err else { panic!("{err:?}") };
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{} bytes of stderr", stderr.len());
    assert_eq!(lines[0], format!("{} [line truncated]", "x".repeat(16 * 1024)));
    assert_eq!(lines[1], "after");
}
