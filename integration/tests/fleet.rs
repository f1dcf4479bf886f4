//! Across a fleet: the Kubernetes manifests, as `kubectl apply -k` would apply them, are
//! valid for Kubernetes by its own schemas (checked with no network), run the Debian
//! package's command with the package's paths, roll a config edit out node by node, and
//! probe the daemon with `supervisorctl`'s exit codes, which a real daemon on the
//! ConfigMap's config answers; the ServiceMonitor reaches the pods; the Nomad job runs
//! the same supervisor; the Containerfile installs the package and copies nothing that
//! does not exist; and every command and query in the README's "Across a fleet" is
//! backed by these files.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plugin_integration::fleet::{
    self, IMAGE_PLUGINS, NAMESPACE, block, command_line, container, fleet_config, metrics_port, one, read, render,
    strings, validate,
};
use plugin_integration::{Daemon, bins};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);
/// The package's command line: its systemd unit's ExecStart=.
const UNIT: &str = "deploy/systemd/plugin-supervisor.service";
const PACKAGE_SCRIPT: &str = "scripts/package-deb.sh";

fn rendered() -> (String, Vec<Value>) {
    let yaml = render(&fleet::kubernetes_dir());
    let objects = validate(&yaml).unwrap_or_else(|e| panic!("deploy/kubernetes does not validate:\n{e}"));
    (yaml, objects)
}

fn daemonset(objects: &[Value]) -> &Value {
    one(objects, "DaemonSet")
}

/// `ExecStart=` of the package's unit, as words.
fn unit_exec_start() -> Vec<String> {
    let unit = read(&bins::repo().join(UNIT));
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("the unit has ExecStart=");
    line.split_whitespace().map(str::to_owned).collect()
}

fn workspace_version() -> String {
    let cargo = fleet::toml_of(&read(&bins::repo().join("Cargo.toml")));
    cargo["workspace"]["package"]["version"].as_str().expect("workspace version").to_owned()
}

/// The volume named `name` and where the container mounts it.
fn volume<'a>(ds: &'a Value, name: &str) -> (&'a Value, &'a Value) {
    let pod = &ds["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name);
    let mount = container(ds)["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == name);
    (volume.unwrap_or_else(|| panic!("no volume {name}")), mount.unwrap_or_else(|| panic!("no mount of {name}")))
}

fn probe(ds: &Value, which: &str) -> Vec<String> {
    strings(&container(ds)[which]["exec"]["command"])
}

#[test]
fn the_kustomization_renders_objects_valid_for_kubernetes_offline_and_a_misspelt_field_is_refused() {
    let (yaml, objects) = rendered();
    let mut kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["ConfigMap", "DaemonSet", "Namespace", "Service"]);
    for o in objects.iter().filter(|o| o["kind"] != "Namespace") {
        assert_eq!(o["metadata"]["namespace"], NAMESPACE, "{o:#}");
    }
    // The pods are privileged: Pod Security Admission must allow it there.
    let ns = one(&objects, "Namespace");
    assert_eq!(ns["metadata"]["name"], NAMESPACE);
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");

    // Strict: a field Kubernetes does not know is refused, naming it.
    assert!(yaml.contains("readinessProbe:"));
    let err = validate(&yaml.replace("readinessProbe:", "readinesProbe:")).unwrap_err();
    assert!(err.contains("DaemonSet/plugin-supervisor") && err.contains("'readinesProbe' was unexpected"), "{err}");
    // And a wrong type.
    let err = validate(&yaml.replace("minReadySeconds: 30", "minReadySeconds: soon")).unwrap_err();
    assert!(err.contains("minReadySeconds") && err.contains("'soon'"), "{err}");
}

#[test]
fn the_daemonset_runs_the_packages_command_with_its_paths_rolling_one_node_at_a_time() {
    let (_, objects) = rendered();
    let ds = daemonset(&objects);
    let c = container(ds);
    let config = fleet::toml_of(&fleet_config());
    let supervisor = &config["supervisor"];

    // The package's command, in the foreground, at the package's config path.
    assert_eq!(command_line(c), unit_exec_start());
    assert_eq!(command_line(c), ["/usr/bin/plugin-supervisor", "--config", "/etc/plugin-supervisor/config.toml"]);
    assert_eq!(c["securityContext"]["privileged"], true, "{c:#}");

    // The config: the generated ConfigMap, one file at the package's path, the
    // policies directory beside it left to the image.
    let cm = one(&objects, "ConfigMap");
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    assert!(cm_name.starts_with("plugin-supervisor-config-") && cm_name.len() > 26, "{cm_name}");
    let (v, m) = volume(ds, "config");
    assert_eq!(v["configMap"]["name"], cm_name);
    assert_eq!(m["mountPath"], "/etc/plugin-supervisor/config.toml");
    assert_eq!(m["subPath"], "config.toml");
    assert_eq!(cm["data"]["config.toml"], fleet_config());
    assert_eq!(supervisor["policies_dir"].as_str(), Some(fleet::IMAGE_POLICIES));
    for mount in c["volumeMounts"].as_array().unwrap() {
        let at = mount["mountPath"].as_str().unwrap();
        assert!(!fleet::IMAGE_POLICIES.starts_with(at), "{at} hides the image's policies");
    }

    // The runtime and state directories on the node, where the config puts them.
    for (name, key) in [("runtime", "runtime_dir"), ("state", "state_dir")] {
        let (v, m) = volume(ds, name);
        assert_eq!(v["hostPath"]["path"], m["mountPath"], "{name}");
        assert_eq!(m["mountPath"].as_str(), supervisor[key].as_str(), "{name} and {key}");
        assert_eq!(v["hostPath"]["type"], "DirectoryOrCreate");
    }

    // The README's defaults are these paths (its [supervisor] table).
    let readme = read(&bins::repo().join("README.md"));
    for (key, path) in [
        ("runtime_dir", "/run/plugin-supervisor"),
        ("policies_dir", "/etc/plugin-supervisor/policies"),
        ("state_dir", "/var/lib/plugin-supervisor"),
    ] {
        assert!(readme.contains(&format!("| `{key}` | `{path}` |")), "README.md's default {key} is not {path}");
        assert_eq!(supervisor[key].as_str(), Some(path));
    }
    assert!(fleet::readme_section().contains(&format!("`{}`", unit_exec_start().join(" "))));

    // One node at a time; the old pod goes before the new one starts.
    let strategy = &ds["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 0);
    assert!(ds["spec"]["minReadySeconds"].as_u64().is_some_and(|s| s >= 10), "{strategy}");

    // Time to drain: more than the plugins' stop_timeout.
    let stop = config["supervisor"]["defaults"]["stop_timeout"].as_str().unwrap();
    let stop: u64 = stop.strip_suffix('s').and_then(|s| s.parse().ok()).expect("stop_timeout in seconds");
    let grace = ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > 2 * stop, "terminationGracePeriodSeconds {grace} against stop_timeout {stop}s");

    // The scrape: the container port, the annotations, metrics_listen.
    let port = metrics_port(&fleet_config());
    let ports = c["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["name"] == "metrics" && p["containerPort"] == port), "{ports:?}");
    let notes = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/scrape"], "true");
    assert_eq!(notes["prometheus.io/port"], port.to_string());
    assert_eq!(notes["prometheus.io/path"], "/metrics");
    assert_eq!(supervisor["metrics_listen"].as_str(), Some(format!("0.0.0.0:{port}").as_str()));

    // Probes: the same check while starting as alive.
    assert_eq!(probe(ds, "startupProbe"), probe(ds, "livenessProbe"));
}

#[test]
fn a_config_edit_renames_the_configmap_and_so_rolls_the_daemonset() {
    let copy = tempfile::tempdir().unwrap();
    let source = fleet::kubernetes_dir();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let before = validate(&render(copy.path())).unwrap();
    let config = copy.path().join("config.toml");
    let text = read(&config);
    assert!(text.contains("replicas = 2"), "{text}");
    std::fs::write(&config, text.replace("replicas = 2", "replicas = 3")).unwrap();
    let after = validate(&render(copy.path())).unwrap();

    let name = |objects: &[Value]| one(objects, "ConfigMap")["metadata"]["name"].as_str().unwrap().to_owned();
    let (old, new) = (name(&before), name(&after));
    assert_ne!(old, new, "an edited config kept its ConfigMap's name");
    assert!(one(&after, "ConfigMap")["data"]["config.toml"].as_str().unwrap().contains("replicas = 3"));

    // The pod template changed, and only by the ConfigMap's name: the rolling update
    // Kubernetes makes of it replaces every pod with one that mounts the new config.
    let template = |objects: &[Value]| daemonset(objects)["spec"]["template"].to_string();
    let (t0, t1) = (template(&before), template(&after));
    assert_ne!(t0, t1);
    assert_eq!(t0.replace(&old, &new), t1);
}

#[test]
fn the_configmaps_config_passes_check_config_with_the_images_paths_made_this_hosts() {
    let (_, objects) = rendered();
    let shipped = one(&objects, "ConfigMap")["data"]["config.toml"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, fleet::with_this_hosts_paths(&shipped)).unwrap();
    let out = Command::new(bins::supervisor()).arg("check-config").arg(&file).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-config refused the fleet's config:\n{said}");
    assert!(said.contains(": ok ("), "{said}");

    // Each plugin it names is where the derived image puts it.
    let table = fleet::toml_of(&shipped);
    for plugin in table["plugin"].as_array().unwrap() {
        let binary = plugin["binary"].as_str().unwrap();
        assert!(binary.starts_with(IMAGE_PLUGINS), "{binary}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a probe's command as the kubelet would inside the container: `supervisorctl`
/// from PATH (this build's), the default socket replaced by the daemon's; its exit code.
fn run_probe(command: &[String], d: &Daemon) -> i32 {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bins::profile_dir()];
    dirs.extend(std::env::split_paths(&path));
    let out = Command::new(&command[0])
        .args(&command[1..])
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("SUPERVISORCTL_SOCKET", d.control())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    out.status.code().unwrap_or(-1)
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_daemon_on_the_fleet_config_answers_the_daemonsets_probes_and_scrape() {
    let (_, objects) = rendered();
    let ds = daemonset(&objects).clone();
    let (ready, alive) = (probe(&ds, "readinessProbe"), probe(&ds, "livenessProbe"));
    let shipped = one(&objects, "ConfigMap")["data"]["config.toml"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut d = Daemon::start(&fleet::runnable_here(&shipped, port));
    for id in ["echo-0", "echo-1"] {
        d.wait_state(id, "running", UP);
    }

    // Ready once every instance runs and serves.
    let deadline = Instant::now() + UP;
    while run_probe(&ready, &d) != 0 {
        assert!(Instant::now() < deadline, "not ready in {UP:?}: {:#?}", d.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run_probe(&alive, &d), 0);

    // The annotations' scrape.
    let notes = &ds["spec"]["template"]["metadata"]["annotations"];
    let scraped = http_get(port, notes["prometheus.io/path"].as_str().unwrap());
    assert!(scraped.starts_with("HTTP/1.1 200") || scraped.starts_with("HTTP/1.0 200"), "{scraped}");
    assert!(scraped.contains("supervisor_instance_up{") && scraped.contains("plugin_instance=\"echo-1\""), "{scraped}");

    // A plugin down: not ready (the rollout would stop here), but alive (not restarted).
    let stop = d.ctl(&["stop", "echo"]);
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    assert_eq!(run_probe(&ready, &d), 3, "status exits 3 with a plugin stopped");
    assert_eq!(run_probe(&alive, &d), 0);

    // The daemon gone: neither.
    let status = d.stop_with(libc::SIGTERM, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(run_probe(&ready, &d), 5, "status exits 5 when nothing listens");
    assert_ne!(run_probe(&alive, &d), 0);
}

#[test]
fn the_servicemonitor_validates_and_selects_the_service_that_selects_the_daemonsets_pods() {
    let dir = fleet::kubernetes_dir().join("prometheus-operator");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "`kubectl apply -f {}` applies every file there: {files:?}", dir.display());
    let text = read(&files[0]);
    let sm = validate(&text).unwrap_or_else(|e| panic!("{e}"));
    let sm = one(&sm, "ServiceMonitor");
    let err = validate(&text.replace("interval:", "intervl:")).unwrap_err();
    assert!(err.contains("ServiceMonitor/plugin-supervisor") && err.contains("'intervl' was unexpected"), "{err}");
    let err = validate(&text.replace("interval: 30s", "interval: 30 seconds")).unwrap_err();
    assert!(err.contains("interval"), "{err}");

    let (_, objects) = rendered();
    let service = one(&objects, "Service");
    let ds = daemonset(&objects);
    let subset = |want: &Value, have: &Value| {
        want.as_object().unwrap().iter().all(|(k, v)| have.get(k) == Some(v)) && !want.as_object().unwrap().is_empty()
    };
    // ServiceMonitor → Service → pods → the container's port → metrics_listen.
    assert_eq!(sm["metadata"]["namespace"], NAMESPACE);
    assert!(strings(&sm["spec"]["namespaceSelector"]["matchNames"]).contains(&NAMESPACE.to_owned()));
    assert!(subset(&sm["spec"]["selector"]["matchLabels"], &service["metadata"]["labels"]), "{sm:#}\n{service:#}");
    let endpoint = &sm["spec"]["endpoints"][0];
    let svc_port = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == endpoint["port"]);
    let svc_port = svc_port.unwrap_or_else(|| panic!("the Service has no port {}", endpoint["port"]));
    assert!(subset(&service["spec"]["selector"], &ds["spec"]["template"]["metadata"]["labels"]));
    let port = metrics_port(&fleet_config());
    let c = container(ds);
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == svc_port["targetPort"] && p["containerPort"] == port)
    );
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true, "an unready pod must stay a target");
    assert_eq!(endpoint["path"], "/metrics");

    // The job is the one README.md's scrape config names, and `instance` is the node
    // with no per-pod label left, as the recording rules add up.
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(service["metadata"]["labels"][job_label], "plugin-supervisor");
    let readme = read(&bins::repo().join("README.md"));
    assert!(readme.contains("  - job_name: plugin-supervisor\n"));
    let relabel = endpoint["relabelings"].as_array().unwrap();
    assert!(relabel.iter().any(|r| r["targetLabel"] == "instance"
        && strings(&r["sourceLabels"]) == ["__meta_kubernetes_pod_node_name"]
        && r.get("action").is_none_or(|a| a == "replace")));
    let dropped = relabel.iter().find(|r| r["action"] == "labeldrop").expect("a labeldrop");
    let dropped: Vec<&str> = dropped["regex"].as_str().unwrap().split('|').collect();
    for label in ["namespace", "service", "pod", "container", "endpoint"] {
        assert!(dropped.contains(&label), "{label} is not dropped: {dropped:?}");
    }
    let rules = read(&bins::repo().join("deploy/prometheus/rules.yml"));
    assert!(rules.contains("sum without (instance)"), "the plugin: level no longer adds up over instance alone");
}

#[test]
fn the_nomad_job_is_a_system_job_running_the_daemonsets_supervisor() {
    let (_, objects) = rendered();
    let ds = daemonset(&objects);
    let c = container(ds);
    let parsed = fleet::nomad();
    let job = block(&parsed["job"], Some("plugin-supervisor"));
    assert_eq!(job["type"], "system");
    let update = block(&job["update"], None);
    assert_eq!(update["max_parallel"], 1);
    assert_eq!(update["health_check"], "checks");
    let group = block(&job["group"], Some("plugin-supervisor"));
    let task = block(&group["task"], Some("supervisor"));
    assert_eq!(task["driver"], "docker");
    let config = block(&task["config"], None);
    assert_eq!(config["privileged"], true);

    // The same command line as the DaemonSet (and so the package's unit).
    let mut line = strings(&config["entrypoint"]);
    line.extend(strings(&config["args"]));
    assert_eq!(line, command_line(c));

    // The same image the kustomization deploys.
    let (_, kustomized) = rendered();
    assert_eq!(config["image"], container(daemonset(&kustomized))["image"]);

    // The same mounts: the config at its path from the template, the host's runtime
    // and state directories at theirs.
    let template = block(&task["template"], None);
    let volumes = strings(&config["volumes"]);
    let binds: Vec<(String, String)> = volumes
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (parts[0].to_owned(), parts[1].to_owned())
        })
        .collect();
    let (_, config_mount) = volume(ds, "config");
    assert!(binds.contains(&(
        template["destination"].as_str().unwrap().to_owned(),
        config_mount["mountPath"].as_str().unwrap().to_owned()
    )));
    for name in ["runtime", "state"] {
        let (v, m) = volume(ds, name);
        let bind = (v["hostPath"]["path"].as_str().unwrap().to_owned(), m["mountPath"].as_str().unwrap().to_owned());
        assert!(binds.contains(&bind), "{bind:?} not in {binds:?}");
    }
    assert_eq!(binds.len(), 3, "{binds:?}");

    // The same settings as the ConfigMap's config (the comments may differ).
    let data = template["data"].as_str().unwrap();
    assert_eq!(fleet::toml_of(data), fleet::toml_of(&fleet_config()));

    // The same environment.
    let env = block(&task["env"], None);
    for var in c["env"].as_array().unwrap() {
        assert_eq!(env[var["name"].as_str().unwrap()], var["value"], "{env}");
    }

    // The checks run the probes' commands.
    let service = block(&group["service"], None);
    let checks = service["check"].as_array().unwrap();
    let command = |name: &str| {
        let check = checks.iter().find(|k| k["name"] == name).unwrap_or_else(|| panic!("no check {name}"));
        assert_eq!(check["type"], "script");
        assert_eq!(check["task"], "supervisor");
        let mut line = vec![check["command"].as_str().unwrap().to_owned()];
        line.extend(strings(&check["args"]));
        (line, check.clone())
    };
    let (ready, _) = command("ready");
    let (alive, alive_check) = command("alive");
    assert_eq!(ready, probe(ds, "readinessProbe"));
    assert_eq!(alive, probe(ds, "livenessProbe"));
    assert!(alive_check.get("check_restart").is_some(), "the alive check restarts the task");

    // The metrics port, and time to drain.
    let network = block(&group["network"], None);
    let port = block(&network["port"], Some("metrics"));
    assert_eq!(port["static"], metrics_port(&fleet_config()));
    assert_eq!(service["port"], "metrics");
    let grace = ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert_eq!(task["kill_timeout"], format!("{grace}s"));
}

#[test]
fn the_containerfile_installs_the_package_and_runs_the_units_command() {
    let repo = bins::repo();
    let text = read(&repo.join("Containerfile"));
    let instructions = fleet::containerfile(&text);
    let keywords: Vec<&str> = instructions.iter().map(|i| i.keyword.as_str()).collect();
    assert_eq!(keywords[0], "FROM", "{keywords:?}");
    assert_eq!(instructions[0].rest, "debian:bookworm-slim");

    // Its version is the workspace's: the package's file name.
    let version = workspace_version();
    let arg = instructions.iter().find(|i| i.keyword == "ARG").expect("ARG VERSION");
    assert_eq!(arg.rest, format!("VERSION={version}"));
    let expand = |s: &str| s.replace("${VERSION}", &version);
    let deb = format!("target/debian/plugin-supervisor_{version}-1_amd64.deb");

    // Every COPY source exists, or is the package scripts/package-deb.sh makes; each is
    // in the build context .dockerignore leaves.
    let (_scratch, package) = package_this_build();
    let ignore = read(&repo.join(".dockerignore"));
    let copies: Vec<&fleet::Instruction> = instructions.iter().filter(|i| i.keyword == "COPY").collect();
    assert!(!copies.is_empty());
    let mut installed_from = Vec::new();
    for copy in &copies {
        let words: Vec<String> = copy.rest.split_whitespace().map(expand).collect();
        assert!(!words.iter().any(|w| w.starts_with("--from")), "{copy:?}");
        let (dest, sources) = words.split_last().unwrap();
        for source in sources {
            if source == &deb {
                assert_eq!(package.file_name(), Path::new(source).file_name(), "{PACKAGE_SCRIPT} makes {package:?}");
                let file = Path::new(source).file_name().unwrap().to_str().unwrap();
                installed_from.push(format!("{dest}{file}"));
            } else {
                assert!(repo.join(source).exists(), "the Containerfile copies {source}, which does not exist");
            }
            assert!(fleet::in_build_context(&ignore, source), ".dockerignore leaves {source} out of the context");
        }
    }
    assert_eq!(installed_from.len(), 1, "the Containerfile copies the package: {copies:?}");

    // What the image relies on is in the package: both binaries, the tiers at the
    // fleet config's policies_dir, a config at the path the DaemonSet mounts over.
    let listing = Command::new("dpkg-deb").arg("--contents").arg(&package).output().unwrap();
    assert!(listing.status.success(), "dpkg-deb --contents {package:?}");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let mut wanted = vec![
        "/usr/bin/plugin-supervisor".to_owned(),
        "/usr/bin/supervisorctl".to_owned(),
        "/etc/plugin-supervisor/config.toml".to_owned(),
    ];
    for tier in std::fs::read_dir(repo.join("policies")).unwrap() {
        let name = tier.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".toml") || name.ends_with(".json") {
            wanted.push(format!("{}/{name}", fleet::IMAGE_POLICIES));
        }
    }
    for path in &wanted {
        assert!(listing.contains(&format!(" .{path}\n")), "the package has no {path}:\n{listing}");
    }

    // apt-get installs that file, as the package's own instructions do (README.md),
    // with its dependencies, and nothing else is installed.
    let readme = read(&repo.join("README.md"));
    assert!(readme.contains(&format!("apt-get install ./{deb}\n")), "README.md installs the package otherwise");
    let runs: Vec<String> = instructions.iter().filter(|i| i.keyword == "RUN").map(|i| expand(&i.rest)).collect();
    let install = format!("apt-get install -y --no-install-recommends {}", installed_from[0]);
    assert!(runs.iter().any(|r| r.contains(&install)), "no `{install}` in {runs:#?}");
    let installs: usize = runs.iter().map(|r| r.matches("apt-get install").count()).sum();
    assert_eq!(installs, 1, "{runs:#?}");
    assert!(runs.iter().any(|r| r.contains(&format!("install -d -m 0755 {}", IMAGE_PLUGINS.trim_end_matches('/')))));

    // The package's command, as the unit and the DaemonSet run it.
    let entry = instructions.iter().find(|i| i.keyword == "ENTRYPOINT").expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entry.rest).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entry, unit_exec_start());
    let (_, objects) = rendered();
    assert_eq!(entry, command_line(container(daemonset(&objects))));
    let expose = instructions.iter().find(|i| i.keyword == "EXPOSE").expect("EXPOSE");
    assert_eq!(expose.rest, metrics_port(&fleet_config()).to_string());
}

/// The Debian package of this build's binaries, made by scripts/package-deb.sh into a
/// scratch directory, removed when the returned guard goes; its path.
fn package_this_build() -> (tempfile::TempDir, std::path::PathBuf) {
    let scratch = tempfile::Builder::new().prefix("ps-fleet-deb-").tempdir().unwrap();
    let out = scratch.path().to_path_buf();
    let profile = bins::profile_dir();
    let made = Command::new(bins::repo().join(PACKAGE_SCRIPT))
        .args(["--profile", profile.file_name().unwrap().to_str().unwrap(), "--no-build", "--out-dir"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", profile.parent().unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(made.status.success(), "{PACKAGE_SCRIPT}: {said}{}", String::from_utf8_lossy(&made.stderr));
    let path = std::path::PathBuf::from(said.lines().last().expect("it prints the package's path"));
    assert_eq!(path.parent(), Some(out.as_path()), "{said}");
    (scratch, path)
}

/// A `promtool check rules` file recording each query: it checks their syntax.
fn check_promql(queries: &[String]) {
    let promtool = fleet::on_path("promtool", "scripts/test-all.sh installs Debian's prometheus package");
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: readme\n    rules:\n");
    for (n, q) in queries.iter().enumerate() {
        rules.push_str(&format!("      - record: readme:query{n}\n        expr: {}\n", serde_json::json!(q)));
    }
    let file = dir.path().join("readme.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "a query in README.md's \"Across a fleet\" does not parse:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_command_and_query_in_across_a_fleet_is_backed_by_the_repository() {
    let repo = bins::repo();
    let section = fleet::readme_section();
    let (_, objects) = rendered();
    let ds = daemonset(&objects);
    let deployed = container(ds)["image"].as_str().unwrap().to_owned();
    let nomad = fleet::nomad();
    let nomad_image = block(
        &block(
            &block(&block(&nomad["job"], Some("plugin-supervisor"))["group"], Some("plugin-supervisor"))["task"],
            Some("supervisor"),
        )["config"],
        None,
    )["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(nomad_image, deployed);
    let (base, _) = deployed.rsplit_once(':').unwrap();
    let base_image = format!("{base}:{}", workspace_version());
    let config = fleet::toml_of(&fleet_config());
    let plugins: Vec<String> =
        config["plugin"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();

    // The derived image: FROM the base, each plugin this build has, to where the config
    // says it is.
    let dockerfiles = fleet::fenced(&section, "dockerfile");
    assert_eq!(dockerfiles.len(), 1);
    let derived = fleet::containerfile(&dockerfiles[0].join("\n"));
    assert_eq!(derived[0].keyword, "FROM");
    assert_eq!(derived[0].rest, base_image);
    for copy in derived.iter().filter(|i| i.keyword == "COPY") {
        let (source, dest) = copy.rest.split_once(' ').unwrap();
        assert!(bins::profile_dir().join("examples").join(source).is_file(), "{source} is not an example");
        let named = config["plugin"].as_array().unwrap().iter().any(|p| p["binary"].as_str() == Some(dest));
        assert!(named, "the config names no plugin at {dest}");
    }

    let mut built = Vec::new();
    let (mut checked, mut pod_chosen) = (0, false);
    for line in fleet::fenced(&section, "sh").concat() {
        let w = fleet::words(&line);
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["scripts/package-deb.sh"] => assert!(repo.join(PACKAGE_SCRIPT).is_file()),
            ["podman", "build", "-t", tag, "."] => {
                assert_eq!(*tag, base_image);
                assert!(repo.join("Containerfile").is_file());
                built.push(tag.to_string());
            }
            ["podman", "build", "-t", tag, "-f", file, context] => {
                assert_eq!(*tag, deployed, "the derived image is the one the manifests run");
                assert_eq!(Path::new(file).parent(), Some(Path::new(context)));
                assert_eq!(*context, "target/release/examples", "where cargo build --release --examples puts them");
                built.push(tag.to_string());
            }
            ["podman", "push", tag] => assert!(built.iter().any(|b| b == tag), "pushes {tag}, which no line builds"),
            ["podman", "run", "--rm", "--entrypoint", "plugin-supervisor", "-v", bind, image, "check-config", file] => {
                let (from, to) = bind.split_once(':').unwrap();
                assert_eq!(from, "$PWD/deploy/kubernetes/config.toml");
                assert_eq!(Some(*file), to.strip_suffix(":ro"));
                assert_eq!(*file, volume(ds, "config").1["mountPath"]);
                assert_eq!(*image, deployed);
            }
            ["kubectl", "apply", "-k", dir] => assert_eq!(repo.join(dir), fleet::kubernetes_dir()),
            ["kubectl", "apply", "-f", dir] => {
                assert_eq!(repo.join(dir), fleet::kubernetes_dir().join("prometheus-operator/"));
            }
            ["kubectl", "-n", ns, "rollout", "status" | "undo", what] => {
                assert_eq!(*ns, NAMESPACE);
                assert_eq!(*what, format!("daemonset/{}", ds["metadata"]["name"].as_str().unwrap()));
            }
            ["pod=$(kubectl", "-n", ns, "get", "pods", "-l", selector, "--field-selector", node, "-o", "name)"] => {
                assert_eq!(*ns, NAMESPACE);
                let (key, value) = selector.split_once('=').unwrap();
                assert_eq!(ds["spec"]["template"]["metadata"]["labels"][key], *value, "{selector}");
                assert_eq!(*node, "spec.nodeName=NODE", "one node's pod");
                pod_chosen = true;
            }
            ["kubectl", "-n", ns, "exec", what, "--", "supervisorctl", args @ ..] => {
                assert_eq!(*ns, NAMESPACE);
                let daemonset = format!("daemonset/{}", ds["metadata"]["name"].as_str().unwrap());
                assert!(*what == daemonset || (*what == "$pod" && pod_chosen), "exec in {what}");
                // A command supervisorctl has; a rollout's plugin is one the config
                // gives a canary rollout.
                let (named, words): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| plugins.iter().any(|p| p == *a));
                let help = Command::new(bins::supervisorctl()).args(&words).arg("--help").output().unwrap();
                assert!(help.status.success(), "supervisorctl {words:?}: {}", String::from_utf8_lossy(&help.stderr));
                if words[0] == "rollout" || words[0] == "reload" {
                    assert_eq!(named.len(), 1, "{args:?} names no plugin of the config");
                    let entry =
                        config["plugin"].as_array().unwrap().iter().find(|p| p["name"].as_str() == Some(named[0]));
                    assert_eq!(entry.unwrap()["rollout"]["strategy"].as_str(), Some("canary"), "{}", named[0]);
                }
            }
            ["nomad", "job", "run", file] => assert_eq!(repo.join(file), fleet::nomad_job()),
            ["nomad", "job", "status", name] => assert!(nomad["job"][0].get(*name).is_some(), "no job {name}"),
            other => panic!("README.md's \"Across a fleet\" has a command the tests do not check: {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 12, "{checked} commands");

    // The queries parse, and the series they read are recorded or exported.
    let queries: Vec<String> = fleet::fenced(&section, "promql").concat();
    assert!(queries.len() >= 5, "{queries:?}");
    check_promql(&queries);
    let rules = read(&repo.join("deploy/prometheus/rules.yml"));
    let readme = read(&repo.join("README.md"));
    for q in &queries {
        for name in q.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if name.contains(':') && name.contains("supervisor") {
                assert!(rules.contains(&format!("- record: {name}\n")), "{name} is not recorded in rules.yml");
            } else if name.starts_with("supervisor_") {
                assert!(readme.contains(&format!("`{name}`")), "{name} is not in README.md's Metrics");
            }
        }
    }

    // Every file the section names exists.
    for name in section.split('`').skip(1).step_by(2) {
        if name.starts_with("deploy/") || name == "Containerfile" || name == ".dockerignore" {
            assert!(repo.join(name).exists(), "README.md's \"Across a fleet\" names {name}, which does not exist");
        }
    }
}
