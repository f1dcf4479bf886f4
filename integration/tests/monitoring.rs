//! Monitoring as operators run it: the shipped Prometheus rules pass `promtool`'s
//! checks and unit tests, and a real Prometheus (Debian's `prometheus` package, which
//! scripts/test-all.sh installs) scrapes `metrics_listen`, finds the calls, instances and
//! events under the names and labels we gave them, and loads the rules.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plugin_integration::daemon::{config_with, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::pb::zoo::SleepRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);
const JOB: &str = "plugin-supervisor";

fn rules_dir() -> PathBuf {
    bins::repo().join("deploy/prometheus")
}

/// `name` from Debian's `prometheus` package, on PATH.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not on PATH: run scripts/test-all.sh, or `apt-get install prometheus` (Debian's package has both prometheus and promtool)")
    })
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The names after `- alert: ` (or `- record: `) in the rules file.
fn rule_names(rules: &str, kind: &str) -> Vec<String> {
    let prefix = format!("- {kind}: ");
    rules.lines().filter_map(|l| l.trim().strip_prefix(&prefix)).map(str::to_owned).collect()
}

/// Each alert of the rules file with its severity.
fn severities(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in rules.split("- alert: ").skip(1) {
        let name = rule.lines().next().unwrap_or_default().trim().to_owned();
        let severity = rule.lines().find_map(|l| l.trim().strip_prefix("severity: ")).unwrap_or_default();
        out.push((name, severity.to_owned()));
    }
    out
}

/// The README's "### Monitoring" section.
fn readme_monitoring() -> String {
    let readme = std::fs::read_to_string(bins::repo().join("README.md")).unwrap();
    let start = readme.find("\n### Monitoring\n").expect("README.md has a Monitoring section");
    let rest = &readme[start + 1..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The README's `prometheus.yml` lines, for the rules at `rules` and a daemon's
/// `metrics_listen` at `target`.
fn readme_prometheus_yml(rules: &Path, target: &str) -> String {
    let section = readme_monitoring();
    let (_, block) = section.split_once("```yaml\n").expect("a yaml block in README.md's Monitoring");
    let (block, _) = block.split_once("```").expect("the yaml block ends");
    for shown in ["/etc/prometheus/plugin-supervisor.rules.yml", "127.0.0.1:9464"] {
        assert!(block.contains(shown), "README.md's prometheus.yml no longer has {shown}:\n{block}");
    }
    block
        .replace("/etc/prometheus/plugin-supervisor.rules.yml", &format!("{:?}", rules.display().to_string()))
        .replace("127.0.0.1:9464", target)
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool");
    let dir = rules_dir();
    let check = Command::new(&promtool).args(["check", "rules", "rules.yml"]).current_dir(&dir).output().unwrap();
    let said = text(&check);
    assert!(check.status.success(), "promtool check rules:\n{said}");
    let rules = std::fs::read_to_string(dir.join("rules.yml")).unwrap();
    let (alerts, records) = (rule_names(&rules, "alert"), rule_names(&rules, "record"));
    assert!(said.contains(&format!("SUCCESS: {} rules found", alerts.len() + records.len())), "{said}");

    let test = Command::new(&promtool).args(["test", "rules", "rules.test.yml"]).current_dir(&dir).output().unwrap();
    assert!(test.status.success(), "promtool test rules:\n{}", text(&test));

    // Each alert has a case that expects it to fire.
    let tests = std::fs::read_to_string(dir.join("rules.test.yml")).unwrap();
    for alert in &alerts {
        let fires = tests.split("- eval_time: ").any(|case| {
            case.contains(&format!("alertname: {alert}\n"))
                && case.contains("exp_alerts:")
                && !case.contains("exp_alerts: []")
                && case.contains("- exp_labels:")
        });
        assert!(fires, "no test case in rules.test.yml expects {alert} to fire");
    }
}

#[test]
fn the_readme_tells_every_rule_and_each_alerts_severity() {
    let rules = std::fs::read_to_string(rules_dir().join("rules.yml")).unwrap();
    let section = readme_monitoring();
    let alerts = severities(&rules);
    assert!(alerts.len() >= 15, "{alerts:?}");
    for (alert, severity) in &alerts {
        let row = format!("| `{alert}` | {severity} |");
        assert!(section.contains(&row), "README.md's Monitoring has no row {row}");
    }
    for record in rule_names(&rules, "record") {
        // Quantiles share a row: `p99_rate5m` (and `p50_rate5m`).
        let shown = section.contains(&format!("`{record}`"))
            || record.rsplit_once(':').is_some_and(|(_, op)| section.contains(&format!("(and `{op}`)")));
        assert!(shown, "README.md's Monitoring does not name {record}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters pass): the
/// only piece of a URL this test needs, not worth an HTTP client crate.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server run from a scratch directory (its config and storage), killed
/// and removed when dropped, also when the test fails.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Prometheus {
    fn start(scrape: u16, rules: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("ps-prometheus-").tempdir().unwrap();
        // The README's lines, scraped and evaluated each second.
        let config = dir.path().join("prometheus.yml");
        let shown = readme_prometheus_yml(rules, &format!("127.0.0.1:{scrape}"));
        assert!(shown.contains(&format!("job_name: {JOB}\n")), "{shown}");
        std::fs::write(&config, format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{shown}")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` on the API; the `data` of its JSON answer. HTTP/1.0, so that the
    /// body comes whole and unchunked, ended by the server's close.
    fn api(&self, path: &str) -> Option<Value> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (_, body) = out.split_once("\r\n\r\n")?;
        let json: Value = serde_json::from_str(body).ok()?;
        (json["status"] == "success").then(|| json["data"].clone())
    }

    /// The series `promql` selects now.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        data.and_then(|d| d["result"].as_array().cloned()).unwrap_or_default()
    }

    /// Polls `what` until `done` holds of it.
    fn wait<T>(&self, what: &str, mut poll: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
        let deadline = Instant::now() + UP;
        loop {
            let got = poll();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "Prometheus: no {what} in {UP:?}; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The series of `result` whose labels include all of `want`.
fn series<'a>(result: &'a [Value], want: &[(&str, &str)]) -> Option<&'a Value> {
    result.iter().find(|s| want.iter().all(|(k, v)| s["metric"][*k] == *v))
}

fn label_names(s: &Value) -> Vec<String> {
    let mut names: Vec<String> = s["metric"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    names.sort();
    names
}

fn value(s: &Value) -> f64 {
    s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::test]
async fn a_real_prometheus_scrapes_calls_instances_and_events_as_named_and_loads_the_rules() {
    let metrics = free_port();
    let plugins = format!(
        "{}{}",
        plugin("zoo", &bins::zoo(), "call_timeout = \"300ms\""),
        plugin("echo", &bins::example("echo"), ""),
    );
    let d = Daemon::start(&config_with(&format!("metrics_listen = \"127.0.0.1:{metrics}\""), &plugins));
    d.wait_state("zoo-0", "running", UP);
    d.wait_state("echo-0", "running", UP);
    {
        let ch = connect(&d.gateway()).await.unwrap();
        let mut echo = EchoClient::new(ch.clone());
        for _ in 0..3 {
            echo.echo(EchoRequest { message: "hi".into() }).await.unwrap();
        }
        let err = ZooClient::new(ch).sleep(SleepRequest { ms: 2000 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    }

    let rules = rules_dir().join("rules.yml");
    let p = Prometheus::start(metrics, &rules);
    let target = format!("127.0.0.1:{metrics}");
    let up = p.wait(
        "scrape of the daemon",
        || p.query(&format!("up{{job=\"{JOB}\"}}")),
        |r| r.first().is_some_and(|s| value(s) == 1.0),
    );
    assert_eq!(up[0]["metric"]["instance"], target, "{up:?}");

    // Calls, by plugin, gRPC code and source; Prometheus adds only job and instance.
    let calls = p.query("supervisor_calls_total");
    let echo = series(&calls, &[("plugin", "echo"), ("code", "OK"), ("source", "plugin")])
        .unwrap_or_else(|| panic!("no echo OK calls in {calls:#?}"));
    assert_eq!(value(echo), 3.0, "{echo}");
    assert_eq!(label_names(echo), ["__name__", "code", "instance", "job", "plugin", "source"]);
    assert_eq!(echo["metric"]["instance"], target);
    assert_eq!(echo["metric"]["job"], JOB);
    let zoo = series(&calls, &[("plugin", "zoo"), ("code", "DEADLINE_EXCEEDED"), ("source", "deadline")])
        .unwrap_or_else(|| panic!("no zoo deadline in {calls:#?}"));
    assert_eq!(value(zoo), 1.0, "{zoo}");
    let seconds = p.query("supervisor_call_duration_seconds_count{plugin=\"echo\"}");
    assert_eq!(seconds.first().map(value), Some(3.0), "{seconds:#?}");

    // Instances: the plugin's instance is plugin_instance; instance is the target.
    let up = p.query("supervisor_instance_up");
    let echo0 = series(&up, &[("plugin", "echo"), ("plugin_instance", "echo-0"), ("revision", "1")])
        .unwrap_or_else(|| panic!("no echo-0 in {up:#?}"));
    assert_eq!(value(echo0), 1.0);
    assert_eq!(label_names(echo0), ["__name__", "instance", "job", "plugin", "plugin_instance", "revision"]);
    assert_eq!(echo0["metric"]["instance"], target);
    let state = p.query("supervisor_instance_state{plugin=\"zoo\",state=\"running\"}");
    assert_eq!(state.first().map(|s| s["metric"]["plugin_instance"].clone()), Some("zoo-0".into()), "{state:#?}");
    let restarts = p.query("supervisor_instance_restarts_total{plugin=\"echo\"}");
    assert_eq!(restarts.first().map(value), Some(0.0), "{restarts:#?}");

    // Events, by plugin and kind.
    let events = p.query("supervisor_events_total");
    let ready = series(&events, &[("plugin", "echo"), ("kind", "ready")])
        .unwrap_or_else(|| panic!("no echo ready event in {events:#?}"));
    assert_eq!(value(ready), 1.0);
    assert_eq!(label_names(ready), ["__name__", "instance", "job", "kind", "plugin"]);

    // Nothing was renamed for clashing with the target's labels.
    let exported = p.query("{__name__=~\"exported_.+\"}");
    assert!(exported.is_empty(), "{exported:#?}");
    let names = p.api("/api/v1/labels").unwrap_or_default();
    let names: Vec<&str> = names.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(names.contains(&"plugin_instance"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("exported_")), "{names:?}");

    // The rules loaded and evaluate without error.
    let shipped = std::fs::read_to_string(&rules).unwrap();
    let (alerts, records) = (rule_names(&shipped, "alert"), rule_names(&shipped, "record"));
    let loaded = p.wait(
        "healthy evaluation of every rule",
        || {
            let groups = p.api("/api/v1/rules").and_then(|d| d["groups"].as_array().cloned()).unwrap_or_default();
            groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect::<Vec<_>>()
        },
        |rules| rules.len() == alerts.len() + records.len() && rules.iter().all(|r| r["health"] == "ok"),
    );
    for rule in loaded.iter().filter(|r| r["type"] == "alerting") {
        let name = rule["name"].as_str().unwrap_or_default();
        assert!(rule["duration"].as_f64().is_some_and(|d| d > 0.0), "{name} has no `for`: {rule}");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["critical", "warning", "info"].contains(&severity), "{name}'s severity: {rule}");
        // Each names what it is about: the plugin, or the supervisor itself.
        let who = if name.starts_with("Supervisor") { "the supervisor" } else { "{{ $labels.plugin }}" };
        for annotation in ["summary", "description"] {
            let said = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(said.to_lowercase().contains(who), "{name}'s {annotation} does not name {who}: {said:?}");
        }
    }

    // The recording rules work on the names the daemon really exports.
    let rate = p.wait(
        "recorded call rate",
        || p.query("instance_plugin:supervisor_calls:rate5m{plugin=\"echo\"}"),
        |r| !r.is_empty(),
    );
    assert_eq!(label_names(&rate[0]), ["__name__", "instance", "job", "plugin"], "{rate:#?}");
    let ready = p.wait(
        "recorded events",
        || p.query("instance_plugin_kind:supervisor_events:increase10m{plugin=\"echo\",kind=\"ready\"}"),
        |r| !r.is_empty(),
    );
    assert_eq!(ready[0]["metric"]["instance"], target, "{ready:#?}");
}
