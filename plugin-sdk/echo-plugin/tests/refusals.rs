//! The harness refuses what the supervisor refuses, naming the cause as a
//! `HarnessError` variant: a plugin under another name than its config entry's,
//! descriptors that do not describe its services, no protocol in common, a
//! binary that ends before it answers.

use echo_plugin::pb::echo_server::EchoServer;
use plugin_sdk::testing::{self, HarnessError, Options, Phase};
use plugin_sdk::{DescriptorError, Plugin, SdkError};

fn echo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_echo-plugin")
}

#[tokio::test]
async fn a_plugin_declaring_another_name_than_its_entrys_is_refused() {
    let err = Options::named("token-validator").start(echo_plugin::plugin()).await.unwrap_err();
    assert!(
        matches!(&err, HarnessError::Name { declared, expected } if declared == "echo" && expected == "token-validator"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin answered the handshake as \"echo\", but the config names it \"token-validator\""
    );
}

#[tokio::test]
async fn a_binary_declaring_another_name_is_refused_and_by_default_its_file_name_is_expected() {
    let err = testing::start_binary("token-validator", echo_bin()).await.unwrap_err();
    assert!(matches!(&err, HarnessError::Name { declared, .. } if declared == "echo"), "{err:?}");
    // Without a name, an entry named after the file (echo-plugin) is what it must answer to.
    let err = Options::default().start_binary(echo_bin()).await.unwrap_err();
    assert!(matches!(&err, HarnessError::Name { expected, .. } if expected == "echo-plugin"), "{err:?}");
}

#[tokio::test]
async fn a_plugin_whose_descriptors_do_not_describe_its_service_is_refused() {
    // The supervisor's own contracts' descriptors, for the echo service: the SDK refuses to
    // serve it, and the harness says so as the cause of a failed handshake.
    let plugin = Plugin::new("echo", "0.1.0")
        .descriptors(plugin_sdk::plugin_proto::FILE_DESCRIPTOR_SET)
        .service(EchoServer::new(Echo));
    let err = testing::start(plugin).await.unwrap_err();
    match &err {
        HarnessError::Stopped {
            phase: Phase::Handshake,
            source: SdkError::Descriptors(DescriptorError::Undescribed { service, .. }),
        } => assert_eq!(service, "echo.v1.Echo"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("service echo.v1.Echo is served but not described"), "{err}");
}

#[tokio::test]
async fn a_plugin_with_no_protocol_in_common_is_refused() {
    let plugin = echo_plugin::plugin().protocol_versions(&[2]);
    let err = testing::start(plugin).await.unwrap_err();
    assert!(
        matches!(&err, HarnessError::HandshakeRefused(m) if m.contains("the supervisor offers [1], plugin echo")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_binary_that_exits_before_the_handshake_is_refused_with_its_status_and_stderr() {
    let err = Options::named("sh")
        .arg("-c")
        .arg("echo 'not a plugin' >&2; exit 3")
        .start_binary("/bin/sh")
        .await
        .unwrap_err();
    match &err {
        HarnessError::Exited { phase: Phase::Handshake, status, stderr } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr, "not a plugin");
        }
        other => panic!("{other:?}"),
    }
}

struct Echo;

#[tonic::async_trait]
impl echo_plugin::pb::echo_server::Echo for Echo {
    async fn echo(
        &self,
        request: tonic::Request<echo_plugin::pb::EchoRequest>,
    ) -> Result<tonic::Response<echo_plugin::pb::EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(echo_plugin::pb::EchoResponse { message: request.into_inner().message }))
    }
}

/// With the cookie set, a fd 3 that is a socket but not a connected Unix stream (a datagram
/// socket, a listening one: a launcher that is not the supervisor) is refused at start,
/// naming what it is; the plugin used to serve on it and hang, saying nothing.
#[test]
fn a_fd_3_that_is_no_connected_stream_socket_is_refused_naming_its_kind() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (theirs, _ours) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_echo-plugin"));
    cmd.env_clear()
        .env(plugin_sdk::plugin_proto::launch::COOKIE_ENV, plugin_sdk::plugin_proto::launch::COOKIE_VALUE)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: fcntl and dup2 are async-signal-safe, as code between fork and exec must be;
    // `fd` stays open in the parent until spawn has returned. Copied above 3 first: `fd`
    // may be 3 itself, close-on-exec, which dup2 onto itself would leave so.
    unsafe {
        cmd.pre_exec(move || {
            let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
            if copy < 0 || libc::dup2(copy, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > std::time::Duration::from_secs(5) {
            // Not left behind when the test fails.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "still serving after 5 s, or: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        "echo: the supervisor's cookie is set but fd 3 is a datagram socket, not the connected Unix stream socket \
         the supervisor hands a plugin"
    );
}
