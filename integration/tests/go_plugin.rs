//! The Go plugin example (`examples/go-plugin`), built from Debian's Go and gRPC packages
//! by the README's command and run from the README's config entry: the daemon starts it,
//! callers reach its echo service through the gateway, its logs arrive through the host
//! service on fd 4, and it drains and exits 0 when stopped or sent SIGTERM. Which tiers its
//! runtime fits is measured here, and the README says what is measured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use plugin_integration::daemon::config;
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::{Daemon, bins, connect};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);
/// What the README says the tightest shipped tier does to the Go runtime.
const L3_KILL: &str = "killed: seccomp violation (syscall clone)";

/// The fenced code blocks of the README's "## A plugin in Go", as (language, body).
fn readme_blocks() -> Vec<(String, String)> {
    let section = readme_section();
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else { continue };
        let mut body = String::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            body.push_str(line);
            body.push('\n');
        }
        blocks.push((lang.to_owned(), body));
    }
    blocks
}

fn readme_section() -> String {
    let readme = std::fs::read_to_string(bins::repo().join("README.md")).expect("README.md");
    let start = readme.find("\n## A plugin in Go\n").expect("a \"## A plugin in Go\" section in README.md");
    let section = &readme[start + 1..];
    section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 2)].to_owned()
}

fn block(lang: &str) -> String {
    let found: Vec<String> = readme_blocks().into_iter().filter(|(l, _)| l == lang).map(|(_, b)| b).collect();
    assert_eq!(found.len(), 1, "exactly one ```{lang} block in \"A plugin in Go\": {found:?}");
    found.into_iter().next().unwrap_or_default()
}

/// `<target>`: where the README's `target/` is for this build.
fn target_dir() -> PathBuf {
    bins::profile_dir().parent().expect("the target directory").to_path_buf()
}

/// The plugin, built once per test process by the README's command (run from the
/// repository, with this build's target directory for `target/`).
fn go_echo() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let command = block("sh");
        let command = command.trim();
        assert!(command.starts_with("examples/go-plugin/build.sh target/"), "{command}");
        let command = command.replace(" target/", &format!(" {}/", target_dir().display()));
        let out = Command::new("bash").arg("-c").arg(&command).current_dir(bins::repo()).output().expect("run bash");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{command}: {}\n{stdout}{stderr}", out.status);
        let built = PathBuf::from(stdout.trim());
        assert_eq!(built, target_dir().join("go-plugin/go-echo"), "{stdout}");
        built
    })
}

/// The README's config entry for the plugin, with `tier` replaced when given.
fn entry(tier: Option<&str>) -> String {
    let readme = block("toml");
    let readme_binary = "binary = \"target/go-plugin/go-echo\"";
    assert!(readme.contains(readme_binary), "{readme}");
    let mut entry = readme.replace(readme_binary, &format!("binary = {:?}", go_echo().display().to_string()));
    if let Some(tier) = tier {
        let line = entry.lines().find(|l| l.starts_with("tier = ")).expect("the entry names its tier").to_owned();
        entry = entry.replace(&line, &format!("tier = {tier:?}"));
    }
    entry
}

fn ctl_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.ctl(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {}\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

/// The plugin's records that came through the host service (`tail`'s `sdk` stream).
fn host_records(d: &Daemon) -> Vec<Value> {
    ctl_ok(d, &["tail", "-n", "1000", "go-echo", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["stream"] == "sdk")
        .collect()
}

/// Waits until the plugin has sent `n` records saying `text`; returns them, oldest first.
fn wait_records(d: &Daemon, text: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + UP;
    loop {
        let found: Vec<Value> = host_records(d).into_iter().filter(|r| r["text"] == text).collect();
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "not {n} {text:?} records from the plugin: {:#?}", host_records(d));
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn echo(d: &Daemon, message: &str) -> Result<String, tonic::Status> {
    let mut echo = EchoClient::new(connect(&d.gateway()).await.expect("connect to the gateway"));
    Ok(echo.echo(EchoRequest { message: message.into() }).await?.into_inner().message)
}

/// The milliseconds a `stopped` event says the drain took (`... (drain 2.5, teardown 2.3)`).
fn drain_ms(event: &Value) -> f64 {
    let message = event["message"].as_str().unwrap_or_default();
    let after = message.split("(drain ").nth(1).unwrap_or_else(|| panic!("no drain time in {message:?}"));
    after.split(',').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no drain time in {message:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_go_plugin_is_called_through_the_gateway_logs_through_the_host_and_drains() {
    let d = Daemon::start(&config(&entry(None)));
    let row = d.wait_state("go-echo-0", "running", UP);
    assert_eq!((&row["version"], &row["tier"]), (&"1.0.0".into(), &"L2".into()), "{row}");

    // The contract it declared at its handshake is its real one: the daemon builds a
    // call from it, and lists the service and method it describes.
    let listed: Value = serde_json::from_str(&ctl_ok(&d, &["list", "go-echo", "--json"])).expect("list --json");
    let services = &listed[0]["services"];
    assert_eq!(services[0]["name"], "echo.v1.Echo", "{listed}");
    assert_eq!(services[0]["methods"][0]["input"], "echo.v1.EchoRequest", "{listed}");
    let called = ctl_ok(&d, &["call", "go-echo", "echo.v1.Echo/Echo", "--data", r#"{"message": "from the CLI"}"#]);
    assert_eq!(serde_json::from_str::<Value>(&called).expect("JSON")["message"], "from the CLI", "{called}");

    // A caller through the gateway, with the example plugins' generated client.
    assert_eq!(echo(&d, "hello from a Rust client").await.unwrap(), "hello from a Rust client");

    // Its logs came over fd 4, with their level, target and fields.
    let configured = wait_records(&d, "configured", 1).remove(0);
    assert_eq!((&configured["level"], &configured["instance"]), (&"info".into(), &"go-echo-0".into()), "{configured}");
    assert_eq!(configured["fields"]["config"], r#"{"greeting":"hi"}"#, "{configured}");
    assert_eq!(configured["fields"]["target"], "go_echo", "{configured}");
    let sizes: Vec<Value> = wait_records(&d, "echoed", 2).into_iter().map(|r| r["fields"]["bytes"].clone()).collect();
    assert_eq!(sizes, ["12", "24"], "one record per call, in order");

    // Stopped: it answers Shutdown, drains and exits 0 by itself, well before the
    // supervisor would send SIGTERM (stop_timeout 2s), and leaves nothing behind.
    let pid = row["pid"].as_i64().unwrap();
    ctl_ok(&d, &["stop", "go-echo"]);
    let stopped = d.wait_event("stopped", &format!("pid {pid} stopped (operator request): exited with code 0"), UP);
    assert!(drain_ms(&stopped) < 2000.0, "it did not exit on the Shutdown call: {stopped}");
    d.wait_event("teardown", "teardown clean in ", UP);
    wait_records(&d, "drained", 1);

    // SIGTERM drains too, and a plugin that exits 0 unasked is not restarted.
    ctl_ok(&d, &["start", "go-echo"]);
    let pid = d.wait_state("go-echo-0", "running", UP)["pid"].as_i64().unwrap();
    ctl_ok(&d, &["signal", "TERM", "go-echo"]);
    d.wait_event("exited", &format!("pid {pid} exited with code 0"), UP);
    let drains = wait_records(&d, "draining", 2);
    let why: Vec<(&Value, &Value)> =
        drains.iter().map(|r| (&r["fields"]["reason"], &r["fields"]["deadline"])).collect();
    assert_eq!(why, [(&"shutdown call".into(), &"2s".into()), (&"terminated".into(), &"5s".into())], "{drains:#?}");
    wait_records(&d, "drained", 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.instance("go-echo-0")["pid"], Value::Null, "restarted after exiting 0 unasked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_runtime_fits_l1_with_no_call_denied() {
    let d = Daemon::start(&config(&entry(Some("L1"))));
    d.wait_state("go-echo-0", "running", UP);
    assert_eq!(echo(&d, "under L1").await.unwrap(), "under L1");
    ctl_ok(&d, &["stop", "go-echo"]);
    d.wait_event("stopped", "exited with code 0", UP);
    // L1 answers a call it denies with EPERM and says so in an event: there is none.
    let denied: Vec<Value> = d.events().into_iter().filter(|e| e["kind"] == "seccomp").collect();
    assert!(denied.is_empty(), "{denied:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_kills_the_go_runtime_at_its_first_thread_as_the_readme_says() {
    let d = Daemon::start(&config(&entry(Some("L3"))));
    let row = d.wait_for("go-echo-0", UP, "refused", |v| v["state"] == "failed");
    let reason = format!("refused: {L3_KILL} during start-up");
    assert_eq!(row["reason"], reason.as_str(), "{row}");
    let e = d.wait_event("seccomp", L3_KILL, UP);
    assert_eq!(e["instance"], "go-echo-0", "{e}");
    let readme = readme_section().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(readme.contains(&format!("`status` says `{reason}`")), "the README quotes the refusal");
}

#[test]
fn started_by_hand_it_says_what_it_is_and_exits_1() {
    let out = Command::new(go_echo()).env_clear().output().expect("run go-echo");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "go-echo is a plugin for plugin-supervisor: it serves gRPC on a socket the supervisor hands it"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `supervisorctl onboard` of the README's entry: the learning pass finds L2 the tightest
/// tier that fits, and names what L3 would deny, the thread the Go runtime starts first.
#[test]
fn onboard_finds_l2_the_tightest_fit_and_names_what_l3_denies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, config(&entry(None))).unwrap();
    let out = Command::new(bins::supervisorctl())
        .args(["onboard", "--config"])
        .arg(&path)
        .args(["go-echo", "--call", "echo.v1.Echo/Echo", "-d", r#"{"message":"hi"}"#, "--calls", "20", "--json"])
        .output()
        .unwrap();
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let fit = &report["tier_fit"];
    assert_eq!((fit["configured"].as_str(), fit["tightest"].as_str()), (Some("L2"), Some("L2")), "{fit:#}");
    let tighter = fit["tighter"].as_array().unwrap();
    assert_eq!(tighter.len(), 1, "{fit:#}");
    assert_eq!(tighter[0]["tier"], "L3");
    let denied: Vec<&str> = tighter[0]["denied"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(denied.contains(&"clone"), "{denied:?}");
    assert_eq!(report["baseline"]["calls"]["errors"], 0, "{report:#}");
}
