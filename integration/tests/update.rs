//! Live config updates with real processes. `supervisorctl reread`: the config file read
//! again and validated whole, and what it would change said plugin by plugin and key by
//! key, with nothing applied. `supervisorctl update` and SIGHUP: plugins removed, added
//! and changed (in place, or through a hot reload, a binary rebuilt in place included)
//! under a steady load without a failed call, plugins not named keeping their
//! processes. An invalid file is refused naming file, line and key, and what runs is
//! untouched.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::load::{Load, STEADY};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);

fn reread(d: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["reread"];
    all.extend_from_slice(args);
    let out = d.ctl(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pids(d: &Daemon) -> Vec<(String, i64)> {
    d.status().iter().map(|v| (v["instance"].as_str().unwrap().to_owned(), v["pid"].as_i64().unwrap())).collect()
}

/// The serving instances' pids of `plugin` (its newest revision's).
fn serving(d: &Daemon, plugin: &str) -> Vec<i64> {
    let rows: Vec<_> = d.status().into_iter().filter(|v| v["name"] == plugin).collect();
    let newest = rows.iter().filter_map(|v| v["revision"].as_u64()).max();
    rows.iter().filter(|v| v["revision"].as_u64() == newest).filter_map(|v| v["pid"].as_i64()).collect()
}

/// Copies `from` over `to` as a rebuild does: a new file renamed over the old path (the
/// running process keeps the old one), one byte longer so its digest differs.
fn rebuild(from: &std::path::Path, to: &std::path::Path) {
    let new = to.with_extension("new");
    let mut bytes = std::fs::read(from).unwrap();
    bytes.push(0);
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&new, to).unwrap();
}

fn update(d: &Daemon, args: &[&str]) -> (Option<i32>, Vec<String>, String) {
    let mut all = vec!["update"];
    all.extend_from_slice(args);
    let out = tokio::task::block_in_place(|| d.ctl(&all));
    let stdout = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (out.status.code(), stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn reread_says_what_the_file_would_change_and_applies_nothing() {
    // The echo plugin runs a copy, so that it can be rebuilt in place.
    let bin_dir = tempfile::tempdir().unwrap();
    let echo_bin = bin_dir.path().join("echo");
    std::fs::copy(bins::example("echo"), &echo_bin).unwrap();
    let plugins = format!("{}{}", plugin("echo", &echo_bin, ""), plugin("zoo", &bins::zoo(), ""));
    let d = Daemon::start(&config(&plugins));
    d.wait_state("echo-0", "running", UP);
    d.wait_state("zoo-0", "running", UP);
    let before = pids(&d);
    let original = std::fs::read_to_string(&d.config).unwrap();

    let (code, stdout, stderr) = reread(&d, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), format!("{}: no changes", d.config.display()));

    // A plugin added, one removed, one changed (a live key), a supervisor key.
    let zoo_entry = plugin("zoo", &bins::zoo(), "");
    let changed = original
        .replace(&zoo_entry, &plugin("echo2", &bins::example("echo"), ""))
        .replace("[supervisor]\n", "[supervisor]\nlog_lines = 77\n")
        .replace(&plugin("echo", &echo_bin, ""), &plugin("echo", &echo_bin, "call_timeout = \"42s\"\nargs = [\"-v\"]"));
    assert_ne!(changed, original);
    std::fs::write(&d.config, &changed).unwrap();
    let (code, stdout, stderr) = reread(&d, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "echo2: added",
            "zoo: removed",
            "echo: changed: args, call_timeout (live)",
            "supervisor: only a restart applies: log_lines"
        ],
        "{stdout}"
    );
    let (code, json, _) = reread(&d, &["--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["added"], serde_json::json!(["echo2"]));
    assert_eq!(v["removed"], serde_json::json!(["zoo"]));
    assert_eq!(v["changed"][0]["name"], "echo");
    assert_eq!(v["changed"][0]["keys"][1], serde_json::json!({"key": "call_timeout", "live": true}));
    assert_eq!(v["restart_only"], serde_json::json!(["log_lines"]));

    // The binary rebuilt under the same path (a new file renamed over it, as a linker does).
    std::fs::write(&d.config, &original).unwrap();
    rebuild(&bins::example("echo"), &echo_bin);
    let (code, stdout, stderr) = reread(&d, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "echo: changed: binary (rebuilt in place)");

    // An invalid file is refused whole, with where and why.
    std::fs::write(&d.config, original.replace("[supervisor]\n", "[supervisor]\nlog_lines = \"many\"\n")).unwrap();
    let (code, stdout, stderr) = reread(&d, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    let place = format!("{}:2: supervisor.log_lines: invalid type", d.config.display());
    assert!(stderr.contains(&place), "{stderr}");

    // Nothing was applied: the same instances, the same processes.
    assert_eq!(pids(&d), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_sighup_add_remove_and_change_plugins_under_load_without_a_failed_call() {
    let bin_dir = tempfile::tempdir().unwrap();
    let echo_bin = bin_dir.path().join("echo");
    std::fs::copy(bins::example("echo"), &echo_bin).unwrap();
    let echo = plugin("echo", &echo_bin, "call_timeout = \"20s\"");
    let zoo = plugin("zoo", &bins::zoo(), "");
    let d = Daemon::start(&config(&format!("{echo}{zoo}")));
    d.wait_state("echo-0", "running", UP);
    d.wait_state("zoo-0", "running", UP);
    let mut load = Load::new();
    for _ in 0..2 {
        let client = EchoClient::new(connect(&d.gateway()).await.unwrap());
        load.caller(move || {
            let mut client = client.clone();
            async move { client.echo(EchoRequest { message: STEADY.into() }).await.map(|r| r.into_inner().message) }
        });
    }
    let original = std::fs::read_to_string(&d.config).unwrap();
    let echo_pids = serving(&d, "echo");

    // The zoo goes; a second zoo, answering as "zoo2", takes its service; echo's call
    // timeout changes in place.
    let zoo2 = plugin("zoo2", &bins::zoo(), "args = [\"--name\", \"zoo2\"]");
    let echo_live = plugin("echo", &echo_bin, "call_timeout = \"25s\"");
    let text = original.replace(&zoo, &zoo2).replace(&echo, &echo_live);
    std::fs::write(&d.config, &text).unwrap();
    let (code, lines, stderr) = update(&d, &[]);
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert_eq!(lines, ["zoo: removed", "echo: applied in place: call_timeout", "zoo2: added"]);
    assert_eq!(serving(&d, "echo"), echo_pids, "echo changed in place");
    assert!(d.status().iter().all(|v| v["name"] != "zoo"), "{:?}", d.status());
    d.wait_state("zoo2-0", "running", UP);
    let mut zoo_client = plugin_integration::pb::zoo::zoo_client::ZooClient::new(connect(&d.gateway()).await.unwrap());
    let answer = zoo_client.echo(plugin_integration::pb::zoo::Text { text: "moved".into() }).await.unwrap();
    assert_eq!(answer.into_inner().text, "moved", "the service moved to zoo2");

    // The echo binary rebuilt in place: an update (named) hot-reloads it; zoo2 is not
    // named and keeps its process even though its entry changed too.
    let zoo2_pids = serving(&d, "zoo2");
    rebuild(&bins::example("echo"), &echo_bin);
    std::fs::write(&d.config, text.replace("\"--name\", \"zoo2\"", "\"--name\", \"zoo2\", \"-v\"")).unwrap();
    let (code, lines, stderr) = update(&d, &["echo"]);
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("echo: revision 2 serves (pid "), "{lines:?}");
    let reloaded = serving(&d, "echo");
    assert!(reloaded.iter().all(|p| !echo_pids.contains(p)), "{reloaded:?} after {echo_pids:?}");
    assert_eq!(serving(&d, "zoo2"), zoo2_pids);

    // An invalid file changes nothing.
    std::fs::write(&d.config, text.replace("[supervisor]\n", "[supervisor]\nlog_lines = -1\n")).unwrap();
    let (code, lines, stderr) = update(&d, &[]);
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(stderr.contains(&format!("{}:2: supervisor.log_lines", d.config.display())), "{stderr}");
    assert_eq!((serving(&d, "echo"), serving(&d, "zoo2")), (reloaded.clone(), zoo2_pids.clone()));

    // SIGHUP applies the file as update does: zoo2 goes, echo stays.
    std::fs::write(&d.config, text.replace(&zoo2, "")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_event("removed", "drained and stopped", UP);
    let deadline = Instant::now() + UP;
    while d.status().iter().any(|v| v["name"] == "zoo2") {
        assert!(Instant::now() < deadline, "zoo2 stayed: {:?}", d.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log_text().contains("update: zoo2: removed"), "{}", d.log_tail(30));
    assert_eq!(serving(&d, "echo"), reloaded, "echo untouched by the SIGHUP");

    let seen = load.finish().await;
    assert_eq!(seen.failed, 0, "{seen:?}\nlog:\n{}", d.log_tail(60));
    assert!(seen.calls > 100, "the load kept calling: {seen:?}");
}

/// `tail -f` of a plugin that `update` removes ends saying so (exit 4, as for an unknown
/// plugin), not silently with 0 as if its log had simply ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_of_a_plugin_update_removes_ends_saying_it_was_removed() {
    use plugin_integration::pb::zoo::PrintRequest;
    use plugin_integration::pb::zoo::zoo_client::ZooClient;
    use std::io::BufRead;
    let d =
        Daemon::start(&config(&[plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), "")].concat()));
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    zoo.print(PrintRequest { lines: 1, text: "before".into() }).await.unwrap();
    let mut tail = std::process::Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .args(["tail", "-f", "zoo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its backlog and its follow are taken together: a line of the backlog printed, it
    // follows. (Captured output arrives asynchronously, so the line may come later.)
    let mut out = std::io::BufReader::new(tail.stdout.take().unwrap());
    let mut first = String::new();
    tokio::task::block_in_place(|| out.read_line(&mut first)).unwrap();
    assert!(!first.is_empty(), "tail ended before printing anything");
    std::fs::write(&d.config, config(&plugin("echo", &bins::example("echo"), ""))).unwrap();
    let (code, lines, err) = update(&d, &[]);
    assert_eq!(code, Some(0), "{lines:?} {err}");
    let deadline = Instant::now() + UP;
    let status = loop {
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = tail.kill();
            let _ = tail.wait();
            panic!("tail -f of a removed plugin still runs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    for line in std::io::BufReader::new(tail.stderr.take().unwrap()).lines() {
        err.push_str(&line.unwrap());
    }
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("plugin \"zoo\" was removed"), "{err}");
}

/// The instance leaves of `plugin` in every hierarchy of the daemon's cgroup subtree.
fn leaves(d: &Daemon, plugin: &str) -> Vec<String> {
    let mut found: Vec<String> = plugin_integration::procfs::cgroup_dirs_named(&d.cgroup_name())
        .iter()
        .filter_map(|root| std::fs::read_dir(root.join("plugins").join(plugin)).ok())
        .flat_map(|dir| {
            dir.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn a_restart_while_an_updates_new_revision_starts_ends_the_update_and_leaves_no_leaf_behind() {
    let entry = |version: &str| {
        plugin("zoo", &bins::zoo(), &format!("args = [\"--version\", \"{version}\", \"--start-delay-ms\", \"3000\"]"))
    };
    let d = Daemon::start(&config(&entry("1.0.0")));
    d.wait_state("zoo-0", "running", UP);
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace(&entry("1.0.0"), &entry("1.0.1"))).unwrap();
    let began = Instant::now();
    let (updated, restarted) = std::thread::scope(|s| {
        let update = s.spawn(|| d.ctl(&["update"]));
        // Once the new revision's instance is in its three-second handshake (a fixed
        // second's wait was not always enough for the update to get there under load).
        let deadline = Instant::now() + UP;
        while !d.status().iter().any(|v| v["revision"] == 2 && v["state"] == "starting" && v["pid"].is_i64()) {
            assert!(Instant::now() < deadline, "the new revision never started: {:?}", d.status());
            std::thread::sleep(Duration::from_millis(25));
        }
        let restarted = d.ctl(&["restart", "zoo"]);
        (update.join().unwrap(), restarted)
    });
    assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));
    let said = format!("{}{}", String::from_utf8_lossy(&updated.stdout), String::from_utf8_lossy(&updated.stderr));
    assert!(!updated.status.success(), "{said}");
    assert!(said.contains("zoo\": the operator restarted it while its new revision was starting"), "{said}");
    assert!(began.elapsed() < Duration::from_secs(10), "the update waited {:?}", began.elapsed());
    // What runs is the old revision, restarted; of the new one's instance nothing stays.
    let settled = Instant::now();
    loop {
        let rows = d.status();
        let running: Vec<String> = rows
            .iter()
            .filter(|r| r["state"] == "running")
            .filter_map(|r| r["instance"].as_str().map(str::to_owned))
            .collect();
        if rows.len() == 1 && running.len() == 1 && leaves(&d, "zoo") == running {
            assert_eq!(rows[0]["version"], "1.0.0");
            break;
        }
        assert!(settled.elapsed() < UP, "status {rows:?}, leaves {:?}", leaves(&d, "zoo"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_narrowed_around_what_runs_apply_in_place_and_dropping_a_declared_one_is_refused_by_a_new_revision() {
    let zoo = |services: &str| plugin("zoo", &bins::zoo(), &format!("services = [{services}]"));
    // Refused at its first handshake: its entry does not list what it declares.
    let billing = zoo("\"billing.v1.Billing\"");
    let d = Daemon::start(&config(&billing));
    let refused = d.wait_state("zoo-0", "failed", UP);
    assert!(refused["reason"].as_str().unwrap().contains("which its entry's services do not list"), "{refused}");
    let original = std::fs::read_to_string(&d.config).unwrap();

    // Listing it then starts it: a plugin that never declared anything gets a new
    // revision, not a list it would wait on in place.
    let wide = zoo("\"zoo.v1.Zoo\", \"billing.v1.Billing\"");
    std::fs::write(&d.config, original.replace(&billing, &wide)).unwrap();
    let (code, lines, stderr) = update(&d, &[]);
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert!(lines.len() == 1 && lines[0].starts_with("zoo: revision 2 serves"), "{lines:?}");
    let original = original.replace(&billing, &wide);
    let pid = serving(&d, "zoo");
    let mut client = plugin_integration::pb::zoo::zoo_client::ZooClient::new(connect(&d.gateway()).await.unwrap());
    let mut call = async |text: &str| {
        let answer = client.echo(plugin_integration::pb::zoo::Text { text: text.into() }).await.unwrap();
        assert_eq!(answer.into_inner().text, text);
    };

    // Narrowed, still admitting the one service it declares: no new process.
    std::fs::write(&d.config, original.replace(&wide, &zoo("\"zoo.v1.Zoo\""))).unwrap();
    let (code, lines, stderr) = update(&d, &[]);
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert_eq!(lines, ["zoo: applied in place: services"]);
    assert_eq!(serving(&d, "zoo"), pid, "changed in place");
    let shown: serde_json::Value = serde_json::from_slice(&d.ctl(&["config", "zoo", "--json"]).stdout).unwrap();
    assert_eq!(shown[0]["settings"]["services"]["value"], serde_json::json!(["zoo.v1.Zoo"]), "{shown}");
    call("in place").await;
    // A restart under the list changed in place is admitted by its handshake.
    let restart = d.ctl(&["restart", "zoo"]);
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    let restarted = serving(&d, "zoo");
    assert!(!restarted.is_empty() && restarted != pid, "not restarted: {pid:?} then {restarted:?}");
    let pid = restarted;
    call("restarted").await;

    // Dropping the service it declares: the new revision's handshake refuses it and the
    // one serving keeps its process and its calls.
    std::fs::write(&d.config, original.replace(&wide, &zoo("\"billing.v1.Billing\""))).unwrap();
    let (code, lines, stderr) = update(&d, &[]);
    assert_ne!(code, Some(0), "{lines:?} {stderr}");
    assert_eq!(
        lines,
        ["plugin \"zoo\": the new revision's zoo-2 did not start: refused: plugin declares service \"zoo.v1.Zoo\", \
             which its entry's services do not list (they are: billing.v1.Billing)"],
        "{stderr}"
    );
    assert_eq!(serving(&d, "zoo"), pid, "the revision serving stays");
    call("kept").await;
}
