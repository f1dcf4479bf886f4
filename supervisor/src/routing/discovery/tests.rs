//! Reflection and health as the specification: what a caller sees, and does not.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_proto::transport::H2Channel;
use prost::Message;
use prost_reflect::DescriptorPool;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

use super::reflection::reflect;
use super::*;
use crate::config::Config;
use crate::instance::{Contract, Live};

const COMMON: &str = r#"syntax = "proto3";
package common.v1;
import "google/protobuf/timestamp.proto";
message Stamp { google.protobuf.Timestamp at = 1; }
enum Color { COLOR_UNSPECIFIED = 0; RED = 1; }
"#;

const ALPHA: &str = r#"syntax = "proto3";
package alpha.v1;
import "alpha/common.proto";
import "google/protobuf/descriptor.proto";
extend google.protobuf.MessageOptions { string label = 50001; }
message Ask {
  common.v1.Stamp stamp = 1;
  message Inner {
    enum Mood { MOOD_UNSPECIFIED = 0; }
    Mood mood = 1;
  }
  Inner inner = 2;
  oneof pick { string a = 3; int32 b = 4; }
}
message Reply { string text = 1; }
service Alpha {
  rpc Get(Ask) returns (Reply);
  rpc Follow(Ask) returns (stream Reply);
}
"#;

const BETA: &str = r#"syntax = "proto3";
package beta.v1;
message Secret { string s = 1; }
service Beta { rpc Tell(Secret) returns (Secret); }
"#;

/// The contract `files` (name, text) declare, the first file's services served.
fn contract(files: &[(&str, &str)]) -> Contract {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let set = protox::compile([files[0].0], [dir.path()]).unwrap();
    let descriptor_set = set.encode_to_vec();
    let pool = DescriptorPool::decode(descriptor_set.as_slice()).unwrap();
    let services = pool.get_file_by_name(files[0].0).unwrap().services().map(|s| s.full_name().to_owned()).collect();
    Contract { pool, services, descriptor_set }
}

fn alpha() -> Contract {
    contract(&[("alpha/alpha.proto", ALPHA), ("alpha/common.proto", COMMON)])
}

fn beta() -> Contract {
    contract(&[("beta.proto", BETA)])
}

/// A channel to an HTTP/2 server that answers nothing: enough to be a ready instance.
async fn idle_channel() -> H2Channel {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(theirs).await.unwrap();
        while conn.accept().await.is_some() {}
    });
    let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    channel
}

/// Plugins named as given, each with its contract, none ready yet.
fn plugins(named: Vec<(&str, Contract)>) -> Vec<Arc<Plugin>> {
    let mut text = String::from("[supervisor.sandbox]\nallow_unsandboxed = true\n");
    for (name, _) in &named {
        text.push_str(&format!("[[plugin]]\nname = {name:?}\nbinary = \"/bin/true\"\ntier = \"none\"\n"));
    }
    let config: Config = text.parse().unwrap();
    config
        .specs()
        .into_iter()
        .zip(named)
        .map(|(spec, (_, contract))| {
            let p = Arc::new(Plugin::new(spec, 10));
            p.serving().contract.store(Some(Arc::new(contract)));
            p
        })
        .collect()
}

/// Makes `p`'s instance ready (and saying it serves) or not.
async fn ready(board: &Board, p: &Plugin, serving: bool) {
    let inst = &p.serving().instances[0];
    inst.live.store(Some(Arc::new(Live::new(idle_channel().await, 1))));
    board.set(&inst.id, serving);
}

fn gone(board: &Board, p: &Plugin) {
    let inst = &p.serving().instances[0];
    inst.live.store(None);
    board.bump();
}

/// Alpha and beta, both ready and serving; `hide` names plugins no caller may call.
async fn discovery(hide: &'static [&'static str]) -> (Arc<Discovery>, Arc<Board>, Vec<Arc<Plugin>>) {
    let board = Arc::new(Board::default());
    let ps = plugins(vec![("alpha", alpha()), ("beta", beta())]);
    for p in &ps {
        ready(&board, p, true).await;
    }
    let d = Discovery::new(&ps, board.clone()).with_may_call(Arc::new(move |_, name| !hide.contains(&name)));
    (Arc::new(d), board, ps)
}

fn ask(d: &Discovery, caller: &Caller, q: MessageRequest) -> MessageResponse {
    let req = v1::ServerReflectionRequest { host: "gw".into(), message_request: Some(q) };
    reflect(d, caller, req).message_response.unwrap()
}

fn listed(d: &Discovery, caller: &Caller) -> Vec<String> {
    match ask(d, caller, MessageRequest::ListServices(String::new())) {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("not a list: {other:?}"),
    }
}

/// The names of the files answered, in order.
fn files(answer: MessageResponse) -> Vec<String> {
    match answer {
        MessageResponse::FileDescriptorResponse(f) => f
            .file_descriptor_proto
            .iter()
            .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap().name().to_owned())
            .collect(),
        other => panic!("not files: {other:?}"),
    }
}

fn not_found(answer: MessageResponse) -> String {
    match answer {
        MessageResponse::ErrorResponse(e) => {
            assert_eq!(e.error_code, tonic::Code::NotFound as i32, "{e:?}");
            e.error_message
        }
        other => panic!("not an error: {other:?}"),
    }
}

fn symbol(s: &str) -> MessageRequest {
    MessageRequest::FileContainingSymbol(s.into())
}

#[tokio::test]
async fn reflection_lists_the_gateways_services_and_those_of_the_running_plugins_the_caller_may_call() {
    let (d, _, _) = discovery(&[]).await;
    let own =
        ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];
    let mut all = vec!["alpha.v1.Alpha", "beta.v1.Beta"];
    all.extend(own);
    assert_eq!(listed(&d, &Caller::anyone()), all);

    let (hidden, _, _) = discovery(&["beta"]).await;
    let mut visible = vec!["alpha.v1.Alpha"];
    visible.extend(own);
    assert_eq!(listed(&hidden, &Caller::anyone()), visible);
}

#[tokio::test]
async fn a_caller_naming_a_plugin_sees_that_one_alone() {
    let (d, _, _) = discovery(&[]).await;
    let caller = Caller { plugin: Some("beta".into()), ..Caller::anyone() };
    assert!(!listed(&d, &caller).contains(&"alpha.v1.Alpha".to_owned()));
    assert!(listed(&d, &caller).contains(&"beta.v1.Beta".to_owned()));
    not_found(ask(&d, &caller, symbol("alpha.v1.Alpha")));
}

#[tokio::test]
async fn a_caller_naming_a_plugin_in_a_header_that_is_not_text_sees_no_plugin_as_its_calls_reach_none() {
    let (d, _, _) = discovery(&[]).await;
    let mut req = tonic::Request::new(());
    let garbled = tonic::metadata::MetadataValue::try_from(&b"beta\xff"[..]).unwrap();
    req.metadata_mut().insert(super::PLUGIN_HEADER, garbled);
    let caller = Caller::of(&req);
    let seen = listed(&d, &caller);
    assert!(!seen.iter().any(|s| s.starts_with("alpha") || s.starts_with("beta")), "{seen:?}");
    not_found(ask(&d, &caller, symbol("beta.v1.Beta")));
}

#[tokio::test]
async fn a_plugin_without_a_ready_instance_is_not_listed_nor_described() {
    let (d, board, ps) = discovery(&[]).await;
    gone(&board, &ps[1]);
    assert!(!listed(&d, &Caller::anyone()).contains(&"beta.v1.Beta".to_owned()));
    not_found(ask(&d, &Caller::anyone(), symbol("beta.v1.Beta")));
    ready(&board, &ps[1], true).await;
    assert!(listed(&d, &Caller::anyone()).contains(&"beta.v1.Beta".to_owned()));
}

#[tokio::test]
async fn every_kind_of_symbol_is_found_in_its_file_which_comes_first_with_all_it_imports() {
    let (d, _, _) = discovery(&[]).await;
    let alpha_files = HashSet::from(
        [
            "alpha/alpha.proto",
            "alpha/common.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/descriptor.proto",
        ]
        .map(str::to_owned),
    );
    for s in [
        "alpha.v1.Alpha",
        "alpha.v1.Alpha.Get",
        "alpha.v1.Alpha.Follow",
        "alpha.v1.Ask",
        "alpha.v1.Ask.Inner",
        "alpha.v1.Ask.Inner.Mood",
        "alpha.v1.Ask.stamp",
        "alpha.v1.Ask.pick",
        "alpha.v1.label",
    ] {
        let answered = files(ask(&d, &Caller::anyone(), symbol(s)));
        assert_eq!(answered[0], "alpha/alpha.proto", "{s}");
        assert_eq!(answered.iter().cloned().collect::<HashSet<_>>(), alpha_files, "{s}");
        assert_eq!(answered.len(), alpha_files.len(), "{s}: each file once");
    }
    for s in ["common.v1.Stamp", "common.v1.Color", "common.v1.RED"] {
        let answered = files(ask(&d, &Caller::anyone(), symbol(s)));
        assert_eq!(answered, ["alpha/common.proto", "google/protobuf/timestamp.proto"], "{s}");
    }
    // The gateway's own.
    let answered = files(ask(&d, &Caller::anyone(), symbol("grpc.health.v1.Health")));
    assert_eq!(answered, ["health.proto"]);
    let by_name = files(ask(&d, &Caller::anyone(), MessageRequest::FileByFilename("alpha/common.proto".into())));
    assert_eq!(by_name, ["alpha/common.proto", "google/protobuf/timestamp.proto"]);
}

#[tokio::test]
async fn what_a_caller_may_not_call_is_answered_as_what_does_not_exist() {
    let (d, _, _) = discovery(&["beta"]).await;
    let caller = Caller::anyone();
    let hidden = not_found(ask(&d, &caller, symbol("beta.v1.Beta")));
    assert_eq!(hidden, "symbol \"beta.v1.Beta\" not found");
    assert_eq!(not_found(ask(&d, &caller, symbol("nope.v1.Nope"))), "symbol \"nope.v1.Nope\" not found");
    for s in ["beta.v1.Beta.Tell", "beta.v1.Secret", "beta.v1.Secret.s"] {
        not_found(ask(&d, &caller, symbol(s)));
    }
    let by_name = not_found(ask(&d, &caller, MessageRequest::FileByFilename("beta.proto".into())));
    assert_eq!(by_name, "file \"beta.proto\" not found");
    // Alpha's are found for the same caller.
    assert_eq!(files(ask(&d, &caller, symbol("alpha.v1.Reply")))[0], "alpha/alpha.proto");
}

/// A plugin whose descriptors describe another plugin's service (undeclared, and not as
/// it is) cannot answer for it: the plugin declaring a service answers for it and its
/// file, and one declaring a service in a symbol's package for the symbol, whatever the
/// plugins' names. `aaa` sorts first, and used to answer for `beta.v1.Beta`.
#[tokio::test]
async fn a_plugin_cannot_answer_for_a_service_another_declares() {
    const IMPOSTOR: &str = r#"syntax = "proto3";
package beta.v1;
message Secret { int64 other = 7; }
service Beta { rpc Steal(Secret) returns (Secret); }
"#;
    const AAA: &str = r#"syntax = "proto3";
package aaa.v1;
import "beta.proto";
service Aaa { rpc Get(beta.v1.Secret) returns (beta.v1.Secret); }
"#;
    let board = Arc::new(Board::default());
    let impostor = contract(&[("aaa.proto", AAA), ("beta.proto", IMPOSTOR)]);
    assert_eq!(impostor.services, ["aaa.v1.Aaa"], "it declares only its own");
    let ps = plugins(vec![("aaa", impostor), ("beta", beta())]);
    for p in &ps {
        ready(&board, p, true).await;
    }
    let d = Discovery::new(&ps, board);
    let real = beta().pool.get_file_by_name("beta.proto").unwrap().file_descriptor_proto().clone();
    let answered = |q: MessageRequest| match ask(&d, &Caller::anyone(), q) {
        MessageResponse::FileDescriptorResponse(f) => {
            prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice()).unwrap()
        }
        other => panic!("not files: {other:?}"),
    };
    for s in ["beta.v1.Beta", "beta.v1.Beta.Tell", "beta.v1.Secret", "beta.v1.Secret.s"] {
        assert_eq!(answered(symbol(s)), real, "{s}");
    }
    assert_eq!(answered(MessageRequest::FileByFilename("beta.proto".into())), real);
    // What only the impostor has is still its to answer.
    assert_eq!(answered(symbol("aaa.v1.Aaa")).name(), "aaa.proto");
    assert_eq!(answered(symbol("beta.v1.Beta.Steal")).service[0].method[0].name(), "Steal");
}

#[tokio::test]
async fn extensions_are_answered_or_not_found() {
    let (d, _, _) = discovery(&[]).await;
    let c = Caller::anyone();
    let ext = |t: &str, n| {
        MessageRequest::FileContainingExtension(v1::ExtensionRequest { containing_type: t.into(), extension_number: n })
    };
    assert_eq!(files(ask(&d, &c, ext("google.protobuf.MessageOptions", 50001)))[0], "alpha/alpha.proto");
    not_found(ask(&d, &c, ext("google.protobuf.MessageOptions", 50002)));
    not_found(ask(&d, &c, ext("nope.Nope", 1)));
    let numbers = |t: &str| ask(&d, &c, MessageRequest::AllExtensionNumbersOfType(t.into()));
    match numbers("google.protobuf.MessageOptions") {
        MessageResponse::AllExtensionNumbersResponse(r) => {
            assert_eq!(
                (r.base_type_name.as_str(), r.extension_number),
                ("google.protobuf.MessageOptions", vec![50001])
            );
        }
        other => panic!("{other:?}"),
    }
    match numbers("alpha.v1.Ask") {
        MessageResponse::AllExtensionNumbersResponse(r) => assert!(r.extension_number.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(not_found(numbers("nope.Nope")), "type \"nope.Nope\" not found");
}

#[tokio::test]
async fn a_request_that_asks_nothing_is_invalid_and_the_answer_echoes_the_request() {
    let (d, _, _) = discovery(&[]).await;
    let req = v1::ServerReflectionRequest { host: "gw".into(), message_request: None };
    let answer = reflect(&d, &Caller::anyone(), req.clone());
    assert_eq!(answer.valid_host, "gw");
    assert_eq!(answer.original_request, Some(req));
    match answer.message_response {
        Some(MessageResponse::ErrorResponse(e)) => assert_eq!(e.error_code, tonic::Code::InvalidArgument as i32),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn v1alpha_is_answered_as_v1() {
    let (d, _, _) = discovery(&["beta"]).await;
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let answer = super::reflection::reflect_v1alpha(&d, &Caller::anyone(), req);
    match answer.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            let names: Vec<_> = l.service.into_iter().map(|s| s.name).collect();
            assert_eq!(names, listed(&d, &Caller::anyone()));
        }
        other => panic!("{other:?}"),
    }
}

/// Opens `plugin`'s circuit.
struct Open(&'static str);

impl Circuits for Open {
    fn closed(&self, plugin: &str) -> bool {
        plugin != self.0
    }
}

#[tokio::test]
async fn a_plugin_serves_only_while_ready_saying_so_and_its_circuit_closed() {
    let (d, board, ps) = discovery(&["beta"]).await;
    let c = Caller::anyone();
    assert_eq!(d.health(&c, ""), Some(ServingStatus::Serving), "the gateway itself");
    assert_eq!(d.health(&c, "plugin:alpha"), Some(ServingStatus::Serving));
    assert_eq!(d.health(&c, "alpha.v1.Alpha"), Some(ServingStatus::Serving));
    board.set(&ps[0].serving().instances[0].id, false);
    assert_eq!(d.health(&c, "plugin:alpha"), Some(ServingStatus::NotServing), "it says it does not");
    assert_eq!(d.health(&c, "alpha.v1.Alpha"), Some(ServingStatus::NotServing));
    board.set(&ps[0].serving().instances[0].id, true);
    gone(&board, &ps[0]);
    assert_eq!(d.health(&c, "plugin:alpha"), Some(ServingStatus::NotServing), "no instance ready");
    assert_eq!(d.health(&c, "alpha.v1.Alpha"), Some(ServingStatus::NotServing), "its service is still known");
    ready(&board, &ps[0], true).await;
    let open = Discovery::new(&ps, board.clone()).with_circuits(Arc::new(Open("alpha")));
    assert_eq!(open.health(&c, "plugin:alpha"), Some(ServingStatus::NotServing), "circuit open");
    assert_eq!(open.health(&c, "plugin:beta"), Some(ServingStatus::Serving));
}

#[tokio::test]
async fn unknown_services_and_plugins_the_caller_may_not_call_are_unknown_alike() {
    let (d, _, _) = discovery(&["beta"]).await;
    let c = Caller::anyone();
    for service in ["plugin:beta", "beta.v1.Beta", "plugin:nope", "nope.v1.Nope", "grpc.health.v1.Health"] {
        assert_eq!(d.health(&c, service), None, "{service}");
    }
}

#[tokio::test]
async fn a_service_two_plugins_declare_serves_while_either_does_and_x_plugin_asks_one() {
    let board = Arc::new(Board::default());
    let ps = plugins(vec![("alpha", alpha()), ("alpha2", alpha())]);
    ready(&board, &ps[0], false).await;
    ready(&board, &ps[1], true).await;
    let d = Discovery::new(&ps, board.clone());
    assert_eq!(d.health(&Caller::anyone(), "alpha.v1.Alpha"), Some(ServingStatus::Serving));
    let naming = |p: &str| Caller { plugin: Some(p.into()), ..Caller::anyone() };
    assert_eq!(d.health(&naming("alpha"), "alpha.v1.Alpha"), Some(ServingStatus::NotServing));
    assert_eq!(d.health(&naming("alpha2"), "alpha.v1.Alpha"), Some(ServingStatus::Serving));
    assert_eq!(d.health(&naming("beta"), "alpha.v1.Alpha"), None, "beta declares no such service");
    gone(&board, &ps[1]);
    assert_eq!(d.health(&Caller::anyone(), "alpha.v1.Alpha"), Some(ServingStatus::NotServing));
}

// ------------------------------------------------------------ through a supervisor's gateway

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::instance::fake::{UP, fixture, plugin};

async fn next_status(watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> ServingStatus {
    let next = tokio::time::timeout(UP, watch.message()).await.expect("no health change in time");
    ServingStatus::try_from(next.unwrap().unwrap().status).unwrap()
}

#[tokio::test]
async fn gateway_health_follows_a_plugin_through_stop_and_start_and_reflection_with_it() {
    let f = fixture(&plugin("fake", "stop_timeout = \"5s\""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let mut health = HealthClient::new(f.sup.gateway());
    let check = |service: &str| HealthCheckRequest { service: service.into() };
    let status = health.check(check("fake.v1.Fake")).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let mut watch = health.watch(check("plugin:fake")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(f.sup.gateway());
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(futures_util::stream::iter([list.clone()])).await.unwrap();
    let answer = answers.get_mut().message().await.unwrap().unwrap();
    assert!(format!("{answer:?}").contains("fake.v1.Fake"), "{answer:?}");

    // The follower's health stream is let go before the drain: the stop takes no drain
    // deadline (5 s) waiting for it.
    let stopping = Instant::now();
    f.sup.stop_plugin("fake").await.unwrap();
    assert!(stopping.elapsed() < Duration::from_millis(2500), "the stop waited {:?}", stopping.elapsed());
    assert_eq!(next_status(&mut watch).await, ServingStatus::NotServing);
    let status = health.check(check("fake.v1.Fake")).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::NotServing as i32, "known, and down");
    let mut answers = reflection.server_reflection_info(futures_util::stream::iter([list])).await.unwrap();
    let answer = answers.get_mut().message().await.unwrap().unwrap();
    assert!(!format!("{answer:?}").contains("fake.v1.Fake"), "a stopped plugin is not listed: {answer:?}");

    f.sup.start_plugin("fake", UP).await.unwrap();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
    let unknown = health.check(check("nope.v1.Nope")).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (tonic::Code::NotFound, "unknown service \"nope.v1.Nope\""));
    let mut unknown = health.watch(check("nope.v1.Nope")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut unknown).await, ServingStatus::ServiceUnknown);
    f.sup.shutdown().await;
}

#[tokio::test]
async fn the_plugins_own_word_is_followed_until_the_follower_stops() {
    let sdk = plugin_sdk::Plugin::new("own", "1.0.0");
    let said = sdk.health();
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let served = tokio::spawn(plugin_sdk::testing::serve_connection(sdk, theirs, "own-0"));
    let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let board = Arc::new(Board::default());
    let mut changes = board.subscribe();
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = board.follow("own-0", channel.clone(), true, flag.clone(), Arc::new(|| ()));
    let flagged = || flag.load(std::sync::atomic::Ordering::Relaxed);
    assert!(flagged(), "the first check's word is the flag's at once");
    said.set_serving(false).await;
    let deadline = Instant::now() + UP;
    while board.says_serving("own-0") {
        assert!(Instant::now() < deadline, "the plugin's NOT_SERVING never reached the board");
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
    assert!(!flagged(), "the instance's flag says what the board does");
    said.set_serving(true).await;
    while !board.says_serving("own-0") {
        assert!(Instant::now() < deadline, "the plugin's SERVING never reached the board");
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
    assert!(flagged());
    follower.stop().await;
    assert!(!board.says_serving("own-0"), "forgotten once stopped");
    assert_eq!(board.followed(), 0);
    // With the health stream gone, the plugin drains at once instead of waiting out the
    // drain deadline for it.
    let mut lifecycle = plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient::new(channel);
    let shutdown = plugin_proto::plugin::v1::ShutdownRequest { drain_deadline_ms: 5000, reason: "test".into() };
    let draining = Instant::now();
    lifecycle.shutdown(shutdown).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();
    assert!(draining.elapsed() < Duration::from_millis(2500), "the drain took {:?}", draining.elapsed());
}

#[tokio::test]
async fn a_follower_dropped_without_stop_ends_its_stream_and_is_forgotten() {
    // The instance's task dropped (an embedded supervisor dropped, a panic): before, the
    // follower's task ran on, kept the channel, and wrote the instance back every 2 s.
    let sdk = plugin_sdk::Plugin::new("own", "1.0.0");
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let served = tokio::spawn(plugin_sdk::testing::serve_connection(sdk, theirs, "own-0"));
    let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let board = Arc::new(Board::default());
    drop(board.follow("own-0", channel.clone(), true, Arc::default(), Arc::new(|| ())));
    assert_eq!(board.followed(), 0, "forgotten when dropped");
    // With its Watch stream reset, the plugin drains at once.
    let mut lifecycle = plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient::new(channel);
    let shutdown = plugin_proto::plugin::v1::ShutdownRequest { drain_deadline_ms: 5000, reason: "test".into() };
    let draining = Instant::now();
    lifecycle.shutdown(shutdown).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();
    assert!(draining.elapsed() < Duration::from_millis(2500), "the drain took {:?}", draining.elapsed());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(board.followed(), 0, "nothing wrote it back");
}

/// A reflection request that does not decode ends the answers with why (a gRPC error),
/// after the answers to the requests before it: it used to end them OK, hiding it.
#[tokio::test]
async fn a_reflection_request_that_does_not_decode_ends_the_answers_with_an_error() {
    use http_body_util::BodyExt;
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend(u32::try_from(list.len()).unwrap().to_be_bytes());
    body.extend(&list);
    // A message whose first field's tag never ends: no protobuf message.
    body.extend([0u8, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let req = http::Request::builder()
        .method("POST")
        .uri("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body))))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(f.sup.gateway(), req).await.unwrap();
    let all = resp.into_body().collect().await.unwrap();
    let trailers = all.trailers().cloned().expect("trailers");
    let answered = all.to_bytes();
    let one = v1::ServerReflectionResponse::decode(&answered[5..]).expect("the first request's answer, whole");
    assert!(format!("{one:?}").contains("fake.v1.Fake"), "{one:?}");
    let status = tonic::Status::from_header_map(&trailers).expect("a status");
    assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");
    assert!(status.message().contains("decode"), "{status:?}");
    f.sup.shutdown().await;
}

// ------------------------------------------------------------ bounds on the gateway's own streams

/// A request to `/service/method` from uid `uid`, whose body sends what `sent` gives
/// (gRPC-framed messages) and never ends.
fn request(
    service: &str,
    method: &str,
    uid: u32,
    sent: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> http::Request<tonic::body::Body> {
    let frames = futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(sent), |b| {
        Ok::<_, tonic::Status>(http_body::Frame::data(b))
    });
    let never_ends = futures_util::StreamExt::chain(frames, futures_util::stream::pending());
    let mut req = http::Request::post(format!("/{service}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(never_ends)))
        .unwrap();
    req.extensions_mut().insert(crate::routing::callers::Peer::new(uid, uid, None, &[]));
    req
}

/// A request from `uid` that sends nothing and never ends.
fn silent(service: &str, method: &str, uid: u32) -> http::Request<tonic::body::Body> {
    // The sender dropped: the receiver ends, and the body waits for ever after.
    request(service, method, uid, tokio::sync::mpsc::channel(1).1)
}

/// The status of an answer that is one (trailers-only), or None.
fn refusal(answer: &http::Response<tonic::body::Body>) -> Option<(tonic::Code, String)> {
    tonic::Status::from_header_map(answer.headers()).map(|s| (s.code(), s.message().to_owned()))
}

/// The status the answer ends with, and its data, once it ends: within `limit`.
async fn ended(answer: http::Response<tonic::body::Body>, limit: Duration) -> (tonic::Code, String, usize) {
    use http_body_util::BodyExt;
    let all =
        tokio::time::timeout(limit, answer.into_body().collect()).await.expect("the stream was never ended").unwrap();
    let status = tonic::Status::from_header_map(all.trailers().expect("trailers")).expect("a status");
    (status.code(), status.message().to_owned(), all.to_bytes().len())
}

const IDLE: Duration = Duration::from_secs(60);
const IDLE_STREAM: &str =
    "reflection: no request for the gateway's idle_timeout (1m); the stream is ended, open another to ask more";

/// A reflection stream waited on its caller's next request for ever: 1,000 silent ones
/// held about 12 KiB each for as long as their connections lasted.
#[tokio::test(start_paused = true)]
async fn a_reflection_stream_that_asks_nothing_is_ended_at_idle_timeout_and_gives_its_place_back() {
    let d = Arc::new(Discovery::new(&[], Arc::new(Board::default())).with_idle(IDLE));
    let mut own = Services::new(d.clone());
    let started = tokio::time::Instant::now();
    let answer = own.call(REFLECTION_V1, silent(REFLECTION_V1, "ServerReflectionInfo", 1000)).await.unwrap();
    assert_eq!(refusal(&answer), None);
    assert_eq!(d.reflections.open(), 1);
    let (code, message, _) = ended(answer, IDLE * 10).await;
    assert_eq!((code, message.as_str()), (tonic::Code::DeadlineExceeded, IDLE_STREAM));
    assert_eq!(started.elapsed(), IDLE);
    assert_eq!(d.reflections.open(), 0, "its place was given back");

    // The bound is on the wait for each request: one answered resets it.
    let (ask, asked) = tokio::sync::mpsc::channel(1);
    let started = tokio::time::Instant::now();
    let answer = own.call(REFLECTION_V1ALPHA, request(REFLECTION_V1ALPHA, "ServerReflectionInfo", 1000, asked));
    let answer = answer.await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(IDLE - Duration::from_secs(10)).await;
        let list = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        }
        .encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend(u32::try_from(list.len()).unwrap().to_be_bytes());
        framed.extend(list);
        ask.send(framed.into()).await.unwrap();
        // Kept open, asking nothing more.
        std::future::pending::<()>().await;
    });
    let (code, message, answered) = ended(answer, IDLE * 10).await;
    assert_eq!((code, message.as_str()), (tonic::Code::DeadlineExceeded, IDLE_STREAM));
    assert!(answered > 0, "the request was answered");
    assert_eq!(started.elapsed(), IDLE * 2 - Duration::from_secs(10));
    assert_eq!(d.reflections.open(), 0);
}

#[tokio::test]
async fn reflection_streams_past_the_bounds_are_refused_naming_them() {
    let d = Arc::new(Discovery::new(&[], Arc::new(Board::default())).with_max_reflections(8));
    let mut own = Services::new(d.clone());
    let mut open = Vec::new();
    for uid in [1000, 1000, 1001, 1001, 1002, 1002, 1003] {
        let answer = own.call(REFLECTION_V1, silent(REFLECTION_V1, "ServerReflectionInfo", uid)).await.unwrap();
        assert_eq!(refusal(&answer), None, "uid {uid}");
        open.push(answer);
    }
    let instead = "ask on a stream already open, or end one first";
    let refused = own.call(REFLECTION_V1, silent(REFLECTION_V1, "ServerReflectionInfo", 1000)).await.unwrap();
    let mine = format!("this caller already holds 2 reflection streams, the most one caller may: {instead}");
    assert_eq!(refusal(&refused), Some((tonic::Code::ResourceExhausted, mine)));
    // Both versions count together.
    let alpha = own.call(REFLECTION_V1ALPHA, silent(REFLECTION_V1ALPHA, "ServerReflectionInfo", 1003)).await.unwrap();
    assert_eq!(refusal(&alpha), None);
    open.push(alpha);
    let refused = own.call(REFLECTION_V1, silent(REFLECTION_V1, "ServerReflectionInfo", 1004)).await.unwrap();
    let all = format!("the gateway already holds 8 reflection streams, its most: {instead}");
    assert_eq!(refusal(&refused), Some((tonic::Code::ResourceExhausted, all)));
    assert_eq!(d.reflections.open(), 8);
    // A stream that ends (its caller hung up: the answer dropped) gives its place back.
    drop(open.pop());
    assert_eq!(d.reflections.open(), 7);
    let again = own.call(REFLECTION_V1, silent(REFLECTION_V1, "ServerReflectionInfo", 1004)).await.unwrap();
    assert_eq!(refusal(&again), None);
}

/// Check and Watch answer once their request has ended: one that never ended held its
/// task for as long as its connection lasted.
#[tokio::test(start_paused = true)]
async fn a_health_request_that_never_ends_is_answered_at_idle_timeout() {
    let d = Arc::new(Discovery::new(&[], Arc::new(Board::default())).with_idle(IDLE));
    let mut own = Services::new(d.clone());
    for method in ["Check", "Watch"] {
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(IDLE * 10, own.call(HEALTH, silent(HEALTH, method, 1000)))
            .await
            .unwrap_or_else(|_| panic!("{method}: never answered"))
            .unwrap();
        let said =
            "grpc.health.v1.Health: the request did not end within the gateway's idle_timeout (1m); send it whole";
        assert_eq!(refusal(&answer), Some((tonic::Code::DeadlineExceeded, said.to_owned())), "{method}");
        assert_eq!(started.elapsed(), IDLE, "{method}");
    }
    assert_eq!(d.watches.open(), 0);
}
