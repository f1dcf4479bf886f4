//! The supervisor as a library: a host process starts it from a config and
//! calls plugins through an in-process channel, with the same routing
//! behaviour as the gateway; shutting it down leaves no plugin behind.

use std::process::Command;
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::pb::zoo::Text;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{alive, bins};
use plugin_supervisor::Supervisor;
use plugin_supervisor::config::Config;

fn load(text: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("embedded.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::load(&path).unwrap();
    (dir, c)
}

#[tokio::test]
async fn a_host_calls_plugins_in_process_and_shutdown_stops_them() {
    let plugins =
        format!("{}{}", plugin("echo", &bins::example("echo"), "replicas = 2"), plugin("zoo", &bins::zoo(), ""));
    let (_dir, cfg) = load(&config(&plugins));
    let sup = Supervisor::start(cfg).await.unwrap();
    sup.wait_running("echo", Duration::from_secs(30)).await.unwrap();
    sup.wait_running("zoo", Duration::from_secs(30)).await.unwrap();

    let mut echo = EchoClient::new(sup.channel("echo").unwrap());
    for i in 0..20 {
        let msg = format!("m{i}");
        assert_eq!(echo.echo(EchoRequest { message: msg.clone() }).await.unwrap().into_inner().message, msg);
    }
    let mut zoo = ZooClient::new(sup.channel("zoo").unwrap());
    let err = zoo.panic(Text { text: "embedded".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert_eq!(zoo.echo(Text { text: "ok".into() }).await.unwrap().into_inner().text, "ok");

    let e = sup.channel("ghost").expect_err("unknown plugin").to_string();
    assert_eq!(e, "unknown plugin \"ghost\"");

    let pids: Vec<i32> = sup.plugins().flat_map(|p| p.instances.iter().filter_map(|i| i.status().pid)).collect();
    assert_eq!(pids.len(), 3);
    sup.shutdown().await;
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived shutdown");
    }
}

#[test]
fn the_embedded_example_runs_against_the_example_config() {
    let shipped = std::fs::read_to_string(bins::repo().join("supervisor/examples/supervisor.toml")).unwrap();
    let examples = bins::profile_dir().join("examples");
    let (dir, _) = load(&shipped.replace("../../target/release/examples", &examples.display().to_string()));
    let out = Command::new(bins::example("embedded")).arg(dir.path().join("embedded.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo answered: hello from the host");
}
