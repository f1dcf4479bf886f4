//! docs/protocol.md held to the code: every table the document marks with
//! `<!-- check:NAME -->` is compared, both ways, with the constants, the
//! contracts' descriptors and what the supervisor hands a plugin; the bytes
//! and frames of its worked example with an exchange between the
//! supervisor's channel and an SDK plugin. A change on either side alone
//! fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use plugin_integration::{bins, pb};
use plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient;
use plugin_proto::plugin::v1::{HandshakeRequest, HandshakeResponse, InitRequest, ShutdownRequest};
use plugin_proto::transport::H2Channel;
use plugin_supervisor::config::units::format_duration;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The packages whose every message, field and RPC the document lists.
const PACKAGES: [&str; 2] = ["plugin.v1", "plugin.host.v1"];

fn doc() -> String {
    let path = bins::repo().join("docs/protocol.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text after the `<!-- check:NAME -->` marker.
fn after_marker<'a>(doc: &'a str, name: &str) -> &'a str {
    let marker = format!("<!-- check:{name} -->");
    let at = doc.find(&marker).unwrap_or_else(|| panic!("docs/protocol.md has no {marker}"));
    &doc[at + marker.len()..]
}

/// A cell as written, without the backticks around the whole of it.
fn cell(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('`').and_then(|s| s.strip_suffix('`')).unwrap_or(s).to_owned()
}

/// The rows of the table marked `name` (header and separator left out).
fn table(doc: &str, name: &str) -> Vec<Vec<String>> {
    let rows: Vec<Vec<String>> = after_marker(doc, name)
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim().trim_matches('|').split('|').map(cell).collect())
        .collect();
    assert!(!rows.is_empty(), "the table marked check:{name} has no rows");
    rows
}

/// The lines of the fenced code block marked `name`.
fn block(doc: &str, name: &str) -> Vec<String> {
    let mut lines = after_marker(doc, name).lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(fence.starts_with("```"), "check:{name} is not followed by a code block but by {fence:?}");
    lines.take_while(|l| !l.starts_with("```")).map(str::to_owned).collect()
}

/// The bytes of a hex dump: each line's leading two-digit hex words, up to its comment.
fn hex(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| {
            l.split_whitespace()
                .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
                .map(|w| u8::from_str_radix(w, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn grpc_framed(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The worked example's request, with the values the document gives it.
fn example_request() -> HandshakeRequest {
    HandshakeRequest {
        protocol_versions: vec![1],
        supervisor_version: "0.1.0".into(),
        expected_name: "echo".into(),
        instance: "echo-0".into(),
    }
}

fn contracts() -> FileDescriptorSet {
    FileDescriptorSet::decode(plugin_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn fstat(fd: RawFd) -> libc::stat {
    // SAFETY: fstat writes only into the zeroed buffer we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd, &mut st), 0, "fstat({fd}): {}", std::io::Error::last_os_error());
        st
    }
}

fn socket_option(fd: RawFd, option: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which we own.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut libc::c_int).cast(), &mut len) };
    assert_eq!(rc, 0, "getsockopt({fd}, {option}): {}", std::io::Error::last_os_error());
    value
}

#[test]
fn the_inherited_descriptors_are_the_ones_the_supervisor_creates() {
    let rows = table(&doc(), "fds");
    let fds: Vec<RawFd> = rows.iter().map(|r| r[0].parse().unwrap_or_else(|_| panic!("fd {:?}", r[0]))).collect();
    assert_eq!(fds, [0, 1, 2, 3, 4], "the document lists fds 0-4, in order");
    let constants =
        BTreeMap::from([("PLUGIN_FD", plugin_proto::launch::PLUGIN_FD), ("HOST_FD", plugin_proto::launch::HOST_FD)]);
    let named: BTreeSet<&str> = rows.iter().map(|r| r[2].as_str()).filter(|c| *c != "–").collect();
    assert_eq!(
        named,
        constants.keys().copied().collect(),
        "every descriptor constant of plugin_proto::launch is named"
    );
    for row in &rows {
        if let Some(value) = constants.get(row[2].as_str()) {
            assert_eq!(row[0], value.to_string(), "{} is fd {value} in the code", row[2]);
        }
    }
    // What the supervisor hands the child, in the order the spawn places them.
    let (_ours, child) = plugin_supervisor::sandbox::instance_io().unwrap();
    let null = std::fs::metadata("/dev/null").unwrap();
    for (row, fd) in rows.iter().zip(&child) {
        let st = fstat(fd.as_raw_fd());
        let what = format!("fd {} ({})", row[0], row[1]);
        match row[1].as_str() {
            "/dev/null" => {
                assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR, "{what}");
                assert_eq!(st.st_rdev, std::os::unix::fs::MetadataExt::rdev(&null), "{what}");
            }
            "pipe" => assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFIFO, "{what}"),
            "socket" => {
                assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFSOCK, "{what}");
                assert_eq!(socket_option(fd.as_raw_fd(), libc::SO_DOMAIN), libc::AF_UNIX, "{what}: AF_UNIX");
                assert_eq!(socket_option(fd.as_raw_fd(), libc::SO_TYPE), libc::SOCK_STREAM, "{what}: SOCK_STREAM");
                // SAFETY: F_GETFL on a descriptor we own.
                let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
                assert_eq!(flags & libc::O_NONBLOCK, 0, "{what}: handed over in blocking mode");
            }
            other => panic!("fd {}: the test knows no kind {other:?}", row[0]),
        }
    }
}

fn spec(env: &[&str]) -> plugin_supervisor::config::PluginSpec {
    let env: Vec<String> = env.iter().map(|e| format!("{e:?}")).collect();
    let text = format!(
        "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n\
         args = [\"--flag\"]\ntier = \"none\"\nenv = [{}]\n",
        env.join(", ")
    );
    let config: plugin_supervisor::config::Config = text.parse().unwrap();
    config.specs().remove(0)
}

/// The environment a plugin gets, as name → value.
fn plugin_env(env: &[&str]) -> (Vec<String>, BTreeMap<String, String>) {
    let (argv, envp) = plugin_supervisor::sandbox::argv_env(&spec(env), "echo-0", Some(4242));
    let argv = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
    let envp = envp
        .into_iter()
        .map(|kv| {
            let kv = kv.into_string().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (argv, envp)
}

#[test]
fn the_environment_is_exactly_the_documented_variables() {
    use plugin_proto::launch::{COOKIE_ENV, COOKIE_VALUE, HOST_SOCKET_ENV, INSTANCE_ENV};
    let rows = table(&doc(), "env");
    let names: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    for known in [COOKIE_ENV, INSTANCE_ENV, HOST_SOCKET_ENV, plugin_sdk::FILTER_ENV] {
        assert!(names.contains(known), "the environment table does not name {known}");
    }
    let (argv, env) = plugin_env(&[]);
    assert_eq!(argv, ["/bin/true", "--flag"], "argv[0] is the configured binary, then args");
    let always: BTreeSet<&str> = rows.iter().filter(|r| r[1] == "always").map(|r| r[0].as_str()).collect();
    assert_eq!(env.keys().map(String::as_str).collect::<BTreeSet<_>>(), always, "the cleared environment");
    for row in &rows {
        match row[0].as_str() {
            n if n == COOKIE_ENV => assert_eq!((row[2].as_str(), env[n].as_str()), (COOKIE_VALUE, COOKIE_VALUE)),
            n if n == INSTANCE_ENV => {
                assert_eq!(env[n], "echo-0");
                assert!(row[2].contains("`echo-0`"), "the instance row says what an id looks like: {:?}", row[2]);
            }
            n if n == HOST_SOCKET_ENV => {
                assert_eq!(env[n], "4242");
                assert!(row[2].contains("inode number"), "the host socket row says what it holds: {:?}", row[2]);
            }
            // Passed through only when the entry lists it: the SDK's log filter.
            n if n == plugin_sdk::FILTER_ENV => assert_eq!(row[1], "when listed in `env`"),
            other => panic!("the environment table names {other:?}, which neither side knows"),
        }
    }
    // A listed name passes through with the supervisor's value; an unknown one is left out.
    let path = std::env::var("PATH").expect("tests run with PATH set");
    let (_, env) = plugin_env(&["PATH", "PROTOCOL_DOC_TEST_NEVER_SET"]);
    assert_eq!(env.get("PATH"), Some(&path));
    assert!(!env.contains_key("PROTOCOL_DOC_TEST_NEVER_SET"));
}

/// `TYPE` as the document writes it.
fn field_type(msg: &DescriptorProto, f: &FieldDescriptorProto) -> String {
    let scalar = |f: &FieldDescriptorProto| match f.r#type() {
        Type::Enum | Type::Message => f.type_name().trim_start_matches('.').to_owned(),
        t => format!("{t:?}").to_lowercase(),
    };
    if f.r#type() == Type::Message {
        let short = f.type_name().rsplit('.').next().unwrap_or_default();
        if let Some(entry) =
            msg.nested_type.iter().find(|n| n.name() == short && n.options.as_ref().is_some_and(|o| o.map_entry()))
        {
            return format!("map<{}, {}>", scalar(&entry.field[0]), scalar(&entry.field[1]));
        }
    }
    match f.label() {
        Label::Repeated => format!("repeated {}", scalar(f)),
        _ => scalar(f),
    }
}

#[test]
fn every_message_and_field_of_the_contracts_is_documented_as_it_is() {
    let mut declared = BTreeSet::new();
    for file in contracts().file.iter().filter(|f| PACKAGES.contains(&f.package())) {
        for msg in &file.message_type {
            let full = format!("{}.{}", file.package(), msg.name());
            if msg.field.is_empty() {
                declared.insert([full.clone(), "–".into(), "–".into(), "–".into()]);
            }
            for f in &msg.field {
                declared.insert([full.clone(), f.name().to_owned(), f.number().to_string(), field_type(msg, f)]);
            }
        }
    }
    let documented: BTreeSet<[String; 4]> =
        table(&doc(), "fields").into_iter().map(|r| r.try_into().expect("four columns")).collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let wrong: Vec<_> = documented.difference(&declared).collect();
    assert!(missing.is_empty() && wrong.is_empty(), "undocumented: {missing:?}\nnot in the .proto files: {wrong:?}");
}

#[test]
fn the_log_levels_are_the_host_contracts() {
    let file = contracts().file.into_iter().find(|f| f.package() == "plugin.host.v1").unwrap();
    let level = file.enum_type.iter().find(|e| e.name() == "Level").unwrap();
    let declared: BTreeSet<[String; 2]> =
        level.value.iter().map(|v| [v.name().to_owned(), v.number().to_string()]).collect();
    let documented: BTreeSet<[String; 2]> =
        table(&doc(), "levels").into_iter().map(|r| r.try_into().expect("two columns")).collect();
    assert_eq!(documented, declared);
}

fn kind(client_streaming: bool, server_streaming: bool) -> &'static str {
    match (client_streaming, server_streaming) {
        (false, false) => "unary",
        (false, true) => "server streaming",
        (true, false) => "client streaming",
        (true, true) => "bidirectional streaming",
    }
}

#[test]
fn every_rpc_of_the_contracts_is_documented_as_it_is() {
    let mut declared = BTreeSet::new();
    for file in contracts().file.iter().filter(|f| PACKAGES.contains(&f.package())) {
        let served_by = if file.package() == "plugin.v1" { "plugin, fd 3" } else { "supervisor, fd 4" };
        for svc in &file.service {
            for m in &svc.method {
                let short = |t: &str| t.rsplit('.').next().unwrap_or_default().to_owned();
                declared.insert([
                    format!("{}.{}", file.package(), svc.name()),
                    m.name().to_owned(),
                    short(m.input_type()),
                    short(m.output_type()),
                    kind(m.client_streaming(), m.server_streaming()).to_owned(),
                    served_by.to_owned(),
                ]);
            }
        }
    }
    let rows: Vec<[String; 6]> =
        table(&doc(), "rpcs").into_iter().map(|r| r.try_into().expect("six columns")).collect();
    let (health, ours): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r[0] == "grpc.health.v1.Health");
    // grpc.health.v1 is the standard one; `an_sdk_plugin_answers_the_worked_example` calls it.
    let health: BTreeSet<_> = health.into_iter().collect();
    let standard = BTreeSet::from([
        ["grpc.health.v1.Health", "Check", "HealthCheckRequest", "HealthCheckResponse", "unary", "plugin, fd 3"]
            .map(String::from),
        [
            "grpc.health.v1.Health",
            "Watch",
            "HealthCheckRequest",
            "HealthCheckResponse",
            "server streaming",
            "plugin, fd 3",
        ]
        .map(String::from),
    ]);
    assert_eq!(health, standard);
    let documented: BTreeSet<_> = ours.into_iter().collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let wrong: Vec<_> = documented.difference(&declared).collect();
    assert!(missing.is_empty() && wrong.is_empty(), "undocumented: {missing:?}\nnot in the .proto files: {wrong:?}");
}

#[test]
fn the_documented_constants_are_the_codes() {
    use plugin_supervisor::instance::{handshake, host};
    let defaults = plugin_supervisor::config::PluginDefaults::default();
    let logs = plugin_supervisor::observe::limit::LogLimit::default();
    let actual: BTreeMap<&str, String> = BTreeMap::from([
        ("protocol version", plugin_proto::PROTOCOL_VERSION.to_string()),
        ("versions offered", format!("{:?}", handshake::SUPPORTED_PROTOCOLS)),
        ("SDK versions accepted", handshake::SUPPORTED_SDK.to_owned()),
        ("plugin fd", plugin_proto::launch::PLUGIN_FD.to_string()),
        ("host fd", plugin_proto::launch::HOST_FD.to_string()),
        ("exec fd", plugin_supervisor::sandbox::spawn::EXEC_FD.to_string()),
        ("handshake_timeout", format_duration(defaults.handshake_timeout)),
        ("stop_timeout", format_duration(defaults.stop_timeout)),
        ("call_timeout", format_duration(defaults.call_timeout)),
        ("SIGTERM grace", format_duration(plugin_supervisor::instance::TERM_GRACE)),
        ("SDK drain on SIGTERM", format_duration(plugin_sdk::SIGNAL_DRAIN)),
        ("host streams", host::MAX_STREAMS.to_string()),
        ("host log streams", host::MAX_LOG_STREAMS.to_string()),
        ("stream window", plugin_proto::transport::STREAM_WINDOW.to_string()),
        ("connection window", plugin_proto::transport::CONNECTION_WINDOW.to_string()),
        ("log_rate", logs.rate.to_string()),
        ("log_burst", logs.burst.to_string()),
        ("record fields", host::MAX_FIELDS.to_string()),
        ("record text", host::MAX_TEXT.to_string()),
        ("line length", plugin_supervisor::observe::capture::MAX_LINE.to_string()),
    ]);
    let rows = table(&doc(), "constants");
    let documented: BTreeMap<&str, &str> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    for (name, value) in &documented {
        let code =
            actual.get(name).unwrap_or_else(|| panic!("the constants table names {name:?}, the test knows no such"));
        assert_eq!(*value, code.as_str(), "{name}");
    }
    let left_out: Vec<_> = actual.keys().filter(|k| !documented.contains_key(*k)).collect();
    assert!(left_out.is_empty(), "the constants table leaves out {left_out:?}");
}

#[test]
fn the_example_bytes_are_the_encodings_of_the_example_messages() {
    let doc = doc();
    let request = hex(&block(&doc, "handshake-request"));
    assert_eq!(request, grpc_framed(&example_request().encode_to_vec()), "the Handshake request's DATA payload");
    let response = HandshakeResponse {
        name: "echo".into(),
        version: "1.2.3".into(),
        sdk_version: "0.1.0".into(),
        protocol_version: 1,
        services: vec!["echo.v1.Echo".into()],
        file_descriptor_set: Vec::new(),
    };
    assert_eq!(hex(&block(&doc, "handshake-response")), response.encode_to_vec(), "the answer without field 6");
    // "(29 bytes)" in the text, "length=29" in the frames.
    assert!(doc.contains(&format!("({} bytes)", request.len())), "the text says the request's length");
}

/// A stream whose writes are kept, as the peer reads them.
struct Recording<S> {
    inner: S,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The frames in `bytes` (after the preface) as the document writes them, up to the
/// first DATA frame, and that frame's payload. Acknowledgements are left out: when
/// they go relative to the request depends on when the peer's SETTINGS arrive.
fn frames_until_data(bytes: &[u8]) -> (Vec<String>, Vec<u8>) {
    assert!(bytes.starts_with(PREFACE), "the connection starts with the client preface");
    let mut rest = &bytes[PREFACE.len()..];
    let mut lines = Vec::new();
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        let head = |name: &str| format!("{name} stream={stream} flags={flags:#x}");
        match kind {
            0 => {
                lines.push(format!("{} length={len}", head("DATA")));
                return (lines, payload.to_vec());
            }
            1 => lines.push(head("HEADERS")),
            4 if flags & 1 == 0 => {
                let settings: Vec<String> = payload
                    .chunks(6)
                    .map(|s| {
                        let id = u16::from_be_bytes([s[0], s[1]]);
                        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        let name = match id {
                            1 => "HEADER_TABLE_SIZE".to_owned(),
                            2 => "ENABLE_PUSH".to_owned(),
                            3 => "MAX_CONCURRENT_STREAMS".to_owned(),
                            4 => "INITIAL_WINDOW_SIZE".to_owned(),
                            5 => "MAX_FRAME_SIZE".to_owned(),
                            6 => "MAX_HEADER_LIST_SIZE".to_owned(),
                            other => format!("SETTING_{other:#x}"),
                        };
                        format!("{name}={value}")
                    })
                    .collect();
                lines.push(format!("{} {}", head("SETTINGS"), settings.join(" ")).trim_end().to_owned());
            }
            8 => {
                let increment = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                lines.push(format!("{} increment={increment}", head("WINDOW_UPDATE")));
            }
            4 | 6 => {}
            other => lines.push(head(&format!("FRAME_{other}"))),
        }
    }
    panic!("no DATA frame among {lines:?}");
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// grpc.health.v1's SERVING.
const SERVING: i32 = 1;

struct Echo;

#[tonic::async_trait]
impl pb::echo::echo_server::Echo for Echo {
    async fn echo(
        &self,
        request: tonic::Request<pb::echo::EchoRequest>,
    ) -> Result<tonic::Response<pb::echo::EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::echo::EchoResponse { message: request.into_inner().message }))
    }
}

/// The worked example's plugin: `echo` 1.2.3 serving `echo.v1.Echo`, keeping what its
/// init hook was given.
fn echo_plugin(inits: Arc<Mutex<Vec<plugin_sdk::InitContext>>>) -> plugin_sdk::Plugin {
    plugin_sdk::Plugin::new("echo", "1.2.3")
        .descriptors(pb::echo::FILE_DESCRIPTOR_SET)
        .service(pb::echo::echo_server::EchoServer::new(Echo))
        .on_init(move |ctx| {
            inits.lock().unwrap().push(ctx.clone());
            Ok(())
        })
}

/// What a health method answered: one status, or a stream of them.
enum Health {
    Unary(HealthCheckResponse),
    Stream(Box<tonic::Streaming<HealthCheckResponse>>),
}

/// Calls `/grpc.health.v1.Health/METHOD` for the plugin as a whole, as a method of `kind`.
async fn health_call(channel: &H2Channel, method: &str, kind: &str) -> Health {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = format!("/grpc.health.v1.Health/{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    match kind {
        "unary" => Health::Unary(grpc.unary(request, path, codec).await.unwrap().into_inner()),
        "server streaming" => {
            Health::Stream(Box::new(grpc.server_streaming(request, path, codec).await.unwrap().into_inner()))
        }
        other => panic!("{method}: the test calls no health method of kind {other:?}"),
    }
}

#[tokio::test]
async fn an_sdk_plugin_answers_the_worked_example() {
    let doc = doc();
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let inits = Arc::default();
    let served = tokio::spawn(plugin_sdk::testing::serve_connection(echo_plugin(Arc::clone(&inits)), theirs, "echo-0"));
    let written = Arc::default();
    let (channel, conn) = H2Channel::handshake(Recording { inner: ours, written: Arc::clone(&written) }).await.unwrap();
    tokio::spawn(conn);
    let mut lifecycle = PluginLifecycleClient::new(channel.clone());

    let answer = lifecycle.handshake(example_request()).await.unwrap().into_inner();
    assert_eq!(
        (answer.name.as_str(), answer.version.as_str(), answer.protocol_version, answer.services.as_slice()),
        ("echo", "1.2.3", 1, ["echo.v1.Echo".to_owned()].as_slice())
    );
    assert_eq!(answer.sdk_version, plugin_sdk::SDK_VERSION);
    let set = FileDescriptorSet::decode(answer.file_descriptor_set.as_slice()).unwrap();
    assert!(set.file.iter().any(|f| f.package() == "echo.v1" && f.service.iter().any(|s| s.name() == "Echo")));
    let (frames, payload) = frames_until_data(&written.lock().unwrap());
    assert_eq!(frames, block(&doc, "frames"), "the supervisor's frames up to the Handshake's DATA");
    assert_eq!(payload, hex(&block(&doc, "handshake-request")), "the Handshake's DATA payload");

    let init =
        InitRequest { config_json: r#"{"greeting":"hi"}"#.into(), data_dir: String::new(), instance: "echo-0".into() };
    lifecycle.init(init).await.unwrap();
    {
        let inits = inits.lock().unwrap();
        assert_eq!(inits.len(), 1, "init runs once");
        assert_eq!(inits[0].config, serde_json::json!({"greeting": "hi"}));
        assert_eq!((inits[0].data_dir.as_deref(), inits[0].instance.as_str()), (None, "echo-0"));
    }

    // The health methods as the RPC table lists them.
    let mut watches = Vec::new();
    for row in table(&doc, "rpcs").iter().filter(|r| r[0] == "grpc.health.v1.Health") {
        match health_call(&channel, &row[1], &row[4]).await {
            Health::Unary(answer) => assert_eq!(answer.status, SERVING, "{}", row[1]),
            Health::Stream(mut stream) => {
                let first = stream.message().await.unwrap().expect("a first status");
                assert_eq!(first.status, SERVING, "{}", row[1]);
                watches.push(stream);
            }
        }
    }
    assert_eq!(watches.len(), 1, "one streaming health method");
    // The supervisor ends its Watch before it asks for the drain.
    drop(watches);

    let shutdown = ShutdownRequest { drain_deadline_ms: 5000, reason: "operator request".into() };
    let answer = lifecycle.shutdown(shutdown).await.unwrap().into_inner();
    assert_eq!(answer.in_flight, 0);
    let ended = tokio::time::timeout(Duration::from_secs(10), served).await.expect("the plugin drained and ended");
    ended.unwrap().expect("a clean drain");
}

#[tokio::test]
async fn the_supervisors_calls_carry_the_documented_headers() {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let seen = tokio::spawn(async move {
        let mut conn = h2::server::handshake(theirs).await.unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        let mut answer = http::Response::new(());
        answer.headers_mut().insert("grpc-status", http::HeaderValue::from_static("12"));
        drop(respond.send_response(answer, true));
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        request.into_parts().0
    });
    let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let refused = PluginLifecycleClient::new(channel).handshake(example_request()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    let parts = seen.await.unwrap();
    for line in block(&doc(), "headers") {
        let (name, value) = match line.split_once(": ") {
            Some((name, value)) if !name.starts_with(':') => (name, value),
            _ => line.split_once(' ').unwrap_or_else(|| panic!("header line {line:?}")),
        };
        let got = match name {
            ":method" => parts.method.to_string(),
            ":scheme" => parts.uri.scheme_str().unwrap_or_default().to_owned(),
            ":authority" => parts.uri.authority().map(ToString::to_string).unwrap_or_default(),
            ":path" => parts.uri.path().to_owned(),
            header => parts.headers.get(header).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        };
        assert_eq!(got, value, "{name}");
    }
}

#[tokio::test]
async fn the_plugin_picks_the_highest_common_version_or_refuses_as_documented() {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let plugin = echo_plugin(Arc::default()).protocol_versions(&[1, 2]);
    let served = tokio::spawn(plugin_sdk::testing::serve_connection(plugin, theirs, "echo-0"));
    let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let mut lifecycle = PluginLifecycleClient::new(channel);
    for (offered, chosen) in [(vec![1], 1), (vec![2, 1], 2), (vec![1, 2, 3], 2)] {
        let request = HandshakeRequest { protocol_versions: offered.clone(), ..example_request() };
        let answer = lifecycle.handshake(request).await.unwrap().into_inner();
        assert_eq!(answer.protocol_version, chosen, "offered {offered:?}");
    }
    let none = HandshakeRequest { protocol_versions: vec![3], ..example_request() };
    let refused = lifecycle.handshake(none).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "no common protocol version: the supervisor offers [3], plugin echo (sdk {}) speaks [1, 2]",
            plugin_sdk::SDK_VERSION
        )
    );
    let shutdown = ShutdownRequest { drain_deadline_ms: 0, reason: "test".into() };
    lifecycle.shutdown(shutdown).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();

    // The document's own example of the refusal, with the SDK's version in it.
    let quoted = doc()
        .split('`')
        .find(|s| s.starts_with("no common protocol version:"))
        .expect("the document quotes the refusal")
        .to_owned();
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let served = tokio::spawn(plugin_sdk::testing::serve_connection(echo_plugin(Arc::default()), theirs, "echo-0"));
    let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let mut lifecycle = PluginLifecycleClient::new(channel);
    let offered = HandshakeRequest { protocol_versions: vec![2], ..example_request() };
    let refused = lifecycle.handshake(offered).await.unwrap_err();
    assert_eq!(refused.message(), quoted.replace("sdk 0.1.0", &format!("sdk {}", plugin_sdk::SDK_VERSION)));
    drop(lifecycle);
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();
}

#[test]
fn a_plugin_started_by_hand_says_so_and_exits_non_zero() {
    let quoted = doc()
        .split('`')
        .find(|s| s.starts_with("NAME is a plugin for plugin-supervisor"))
        .expect("the document quotes the message")
        .trim_end_matches("...")
        .trim_end_matches(", ")
        .replace("NAME", "echo");
    let out = std::process::Command::new(bins::example("echo")).env_clear().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&quoted), "{stderr:?} should start with {quoted:?}");
    // With the cookie the SDK takes fd 3 for its connection: none here, so it refuses that.
    let out = std::process::Command::new(bins::example("echo"))
        .env_clear()
        .env(plugin_proto::launch::COOKIE_ENV, plugin_proto::launch::COOKIE_VALUE)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fd 3 is not a socket"), "{out:?}");
}
