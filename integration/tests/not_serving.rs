//! A plugin's own health, said while it runs, steers its calls: of two replicas, the one
//! that says NOT_SERVING (the zoo's `SetServing`) gets no call while the other serves,
//! `status` shows it, and once it says SERVING again (the zoo says so on SIGUSR1) it takes
//! calls again. When no ready replica serves, a call is refused UNAVAILABLE by the
//! supervisor, naming why, and never reaches the plugin.

use std::collections::BTreeSet;
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::{ServingRequest, SyscallRequest};
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);
const NOTE: &str = "health: NOT_SERVING (the plugin says so)";

type Zoo = ZooClient<plugin_proto::transport::H2Channel>;

/// The pid of the process that answered each of `calls` calls (`Syscall getpid`).
async fn answered_by(zoo: &mut Zoo, calls: usize) -> Result<Vec<i64>, tonic::Status> {
    let mut pids = Vec::new();
    for _ in 0..calls {
        let req = SyscallRequest { name: "getpid".into(), ..Default::default() };
        pids.push(zoo.syscall(req).await?.into_inner().result);
    }
    Ok(pids)
}

/// Tells whichever replica the call reaches to say `serving`; its pid.
async fn say(zoo: &mut Zoo, serving: bool) -> i64 {
    i64::from(zoo.set_serving(ServingRequest { serving }).await.expect("SetServing").into_inner().pid)
}

fn notes(v: &serde_json::Value) -> String {
    v["notes"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_says_not_serving_gets_no_calls_while_the_other_serves_and_gets_them_again_once_it_serves() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "replicas = 2\nargs = [\"--usr1-serves\"]")));
    let ids = ["zoo-0", "zoo-1"];
    let pids: Vec<i64> = ids.iter().map(|id| d.wait_state(id, "running", UP)["pid"].as_i64().unwrap()).collect();
    let id_of = |pid: i64| ids[pids.iter().position(|p| *p == pid).expect("one of the replicas")];
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let both: BTreeSet<i64> = pids.iter().copied().collect();
    assert_eq!(answered_by(&mut zoo, 6).await.unwrap().into_iter().collect::<BTreeSet<_>>(), both);

    // One replica says NOT_SERVING: status shows it, and every call goes to the other.
    let down = say(&mut zoo, false).await;
    let up = *pids.iter().find(|p| **p != down).unwrap();
    let shown = d.wait_for(id_of(down), UP, "NOT_SERVING", |v| v["serving"] == false);
    assert_eq!(shown["state"], "running", "{shown}");
    assert!(notes(&shown).contains(NOTE), "{shown}");
    let other = d.instance(id_of(up));
    assert_eq!((&other["serving"], notes(&other).contains(NOTE)), (&serde_json::json!(true), false), "{other}");
    assert_eq!(d.ctl(&["status", "zoo"]).status.code(), Some(3), "not every instance serves");
    assert_eq!(answered_by(&mut zoo, 10).await.unwrap(), [up; 10], "calls go around pid {down}");

    // Neither serves: a call is refused, and reaches neither.
    assert_eq!(say(&mut zoo, false).await, up, "only the one serving is called");
    d.wait_for(id_of(up), UP, "NOT_SERVING", |v| v["serving"] == false);
    let refused = answered_by(&mut zoo, 1).await.expect_err("no replica serves");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::Unavailable,
            "plugin \"zoo\": every ready instance says NOT_SERVING (its own grpc.health.v1 status); call not sent"
        )
    );

    // SIGUSR1: both say SERVING again, and both take calls.
    let out = d.ctl(&["signal", "USR1", "zoo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for id in ids {
        let back = d.wait_for(id, UP, "SERVING again", |v| v["serving"] == true);
        assert!(!notes(&back).contains(NOTE), "{back}");
    }
    assert_eq!(d.ctl(&["status", "zoo"]).status.code(), Some(0));
    assert_eq!(answered_by(&mut zoo, 6).await.unwrap().into_iter().collect::<BTreeSet<_>>(), both);
}
