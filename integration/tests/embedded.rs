//! The supervisor as a library: a host process starts it from a config and
//! calls plugins through an in-process channel, with the same routing
//! behaviour as the gateway; shutting it down leaves no plugin behind.

use std::process::Command;
use std::time::Duration;

use plugin_integration::daemon::{config_with, example_config, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::pb::zoo::Text;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{alive, bins};
use plugin_supervisor::Supervisor;
use plugin_supervisor::config::Config;
use plugin_supervisor::reload::{ReloadError, ReloadOptions};

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
    // In-process: the test process must not move itself into a cgroup.
    let (_dir, cfg) =
        load(&config_with("", &plugins).replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n"));
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

    let Err(e) = sup.channel("ghost") else { panic!("a channel to an unknown plugin") };
    assert_eq!(e.to_string(), "unknown plugin \"ghost\"");

    let pids: Vec<i32> =
        sup.plugins().into_iter().flat_map(|p| p.instances().into_iter().filter_map(|i| i.status().pid)).collect();
    assert_eq!(pids.len(), 3);
    sup.shutdown().await;
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived shutdown");
    }
}

#[tokio::test]
async fn after_shutdown_another_supervisor_may_start_on_the_same_config_before_the_first_is_dropped() {
    let (_dir, cfg) = load(
        &config_with("", &plugin("echo", &bins::example("echo"), ""))
            .replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n"),
    );
    let first = Supervisor::start(cfg.clone()).await.unwrap();
    first.wait_running("echo", Duration::from_secs(30)).await.unwrap();
    first.shutdown().await;
    // Its state_dir (and cgroup subtree) went with the shutdown, not with the drop.
    let second = Supervisor::start(cfg).await.unwrap();
    second.wait_running("echo", Duration::from_secs(30)).await.unwrap();
    // What the first is still asked does nothing, and its drop leaves the second's
    // plugins (in cgroups of the same names) alone.
    let refused = first.reload("echo", ReloadOptions::default()).await.unwrap_err();
    assert!(matches!(&refused, ReloadError::ShuttingDown(p) if p == "echo"), "{refused:?}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut echo = EchoClient::new(second.channel("echo").unwrap());
    assert_eq!(echo.echo(EchoRequest { message: "again".into() }).await.unwrap().into_inner().message, "again");
    let status = second.plugin("echo").unwrap().instances()[0].status();
    assert_eq!((status.state.to_string(), status.restarts), ("running".to_owned(), 0), "{status:?}");
    second.shutdown().await;
}

#[test]
fn the_embedded_example_runs_against_the_example_config() {
    let (dir, _) = load(&example_config());
    let out = Command::new(bins::example("embedded")).arg(dir.path().join("embedded.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo answered: hello from the host");
}

#[tokio::test]
async fn a_shutdown_right_after_start_starts_nothing_and_returns() {
    // No instance task has run when shutdown begins: each must still see it,
    // rather than wait for a change it was not subscribed to see.
    let plugins = format!("{}{}", plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), ""));
    let (_dir, cfg) =
        load(&config_with("", &plugins).replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n"));
    let name = cfg.supervisor.cgroup.name.clone();
    let sup = Supervisor::start(cfg).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), sup.shutdown()).await.expect("shutdown returned");
    let spawned: Vec<_> = sup.events().subscribe().0.into_iter().filter(|e| e.kind == "spawned").collect();
    assert!(spawned.is_empty(), "plugins started after shutdown began: {spawned:?}");
    assert!(plugin_integration::procfs::cgroup_dirs_named(&name).is_empty(), "the subtree was removed");
}
