//! The fleet's manifests as the tests read them: `deploy/kubernetes` rendered by
//! `kubectl kustomize` (what `kubectl apply -k` applies) and validated against the
//! Kubernetes schemas with no network, the Nomad job parsed as HCL, the Containerfile's
//! instructions, the fleet config made runnable on this host, and the README's
//! "Across a fleet" section.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::bins;
use crate::daemon::unique_cgroup_name;

/// The Kubernetes versions the manifests must be valid for: the oldest the
/// DaemonSet's fields need and the newest kubernetes-validate bundles.
pub const KUBERNETES_VERSIONS: &str = "1.29.0,1.37.0";
pub const NAMESPACE: &str = "plugin-supervisor";
/// Where the image keeps what the Debian package installs, and where the fleet's
/// config expects plugins (a derived image adds them).
pub const IMAGE_POLICIES: &str = "/etc/plugin-supervisor/policies";
pub const IMAGE_PLUGINS: &str = "/usr/local/lib/plugin-supervisor/plugins/";

pub fn kubernetes_dir() -> PathBuf {
    bins::repo().join("deploy/kubernetes")
}

pub fn nomad_job() -> PathBuf {
    bins::repo().join("deploy/nomad/plugin-supervisor.nomad.hcl")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Python with kubernetes-validate and python-hcl2 that scripts/test-all.sh
/// installs beside the build (`<target>/py-grpc`), or `PLUGIN_TEST_PYTHON`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("PLUGIN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::profile_dir().parent().expect("target dir").join("py-grpc/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import kubernetes_validate, hcl2"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import kubernetes_validate and hcl2: run scripts/test-all.sh, or \
         `target/py-grpc/bin/python -m pip install -r integration/python/requirements.txt`, or set PLUGIN_TEST_PYTHON",
        python.display()
    );
    python
}

/// `name` on PATH, or a panic saying how to get it.
pub fn on_path(name: &str, how: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH: {how}"))
}

/// `kubectl kustomize DIR`: the objects `kubectl apply -k DIR` would apply, as YAML.
pub fn render(dir: &Path) -> String {
    let kubectl = on_path("kubectl", "scripts/test-all.sh installs it (Debian's kubernetes-client) when missing");
    let out = Command::new(kubectl).arg("kustomize").arg(dir).output().expect("run kubectl kustomize");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// Runs integration/python/fleet_manifests.py in a network namespace of its own
/// (so nothing it does can reach a network), `input` on its stdin.
fn manifests_tool(args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg(python())
        .arg(bins::repo().join("integration/python/fleet_manifests.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare --net python (the tests run as root)");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write the manifests");
    let out = child.wait_with_output().expect("fleet_manifests.py");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() { Ok(String::from_utf8(out.stdout).expect("JSON is UTF-8")) } else { Err(stderr) }
}

/// The objects of a YAML stream, each validated for every one of
/// [`KUBERNETES_VERSIONS`] (strictly: an unknown field fails), or the failure naming
/// the object, the version and the field.
pub fn validate(yaml: &str) -> Result<Vec<Value>, String> {
    let json = manifests_tool(&["kubernetes", KUBERNETES_VERSIONS, "-"], yaml)?;
    Ok(serde_json::from_str(&json).expect("a JSON array of objects"))
}

/// The Nomad job as JSON (blocks are lists of `{label: body}`).
pub fn nomad() -> Value {
    let file = nomad_job();
    let path = file.to_str().expect("UTF-8 path");
    let json = manifests_tool(&["hcl", path], "").unwrap_or_else(|e| panic!("python-hcl2 cannot read {path}: {e}"));
    serde_json::from_str(&json).expect("JSON")
}

/// The one object of `kind` among `objects`.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} among {objects:#?}");
    found[0]
}

/// The DaemonSet's one container.
pub fn container(daemonset: &Value) -> &Value {
    let containers = daemonset["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{containers:#?}");
    &containers[0]
}

/// The container's command line: `command` then `args`.
pub fn command_line(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// The single body of an HCL block list (`[{label: body}]` or `[body]`).
pub fn block<'a>(v: &'a Value, label: Option<&str>) -> &'a Value {
    let list = v.as_array().unwrap_or_else(|| panic!("a block list: {v}"));
    assert_eq!(list.len(), 1, "one block: {v:#}");
    match label {
        Some(l) => list[0].get(l).unwrap_or_else(|| panic!("block {l:?} in {v:#}")),
        None => &list[0],
    }
}

/// The fleet's config, as the ConfigMap carries it.
pub fn fleet_config() -> String {
    read(&kubernetes_dir().join("config.toml"))
}

pub fn toml_of(text: &str) -> toml::Table {
    text.parse().unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

/// The port of `metrics_listen` in a config.
pub fn metrics_port(config: &str) -> u16 {
    let table = toml_of(config);
    let listen = table["supervisor"]["metrics_listen"].as_str().expect("metrics_listen is set");
    listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("metrics_listen has a port")
}

/// `config` with the image's paths replaced by this host's (the repository's
/// policies, this build's examples as the plugins): nothing else changes.
pub fn with_this_hosts_paths(config: &str) -> String {
    let examples = format!("{}/", bins::profile_dir().join("examples").display());
    let policies = bins::repo().join("policies").display().to_string();
    let replaced = config.replace(IMAGE_POLICIES, &policies).replace(IMAGE_PLUGINS, &examples);
    for path in [IMAGE_POLICIES, IMAGE_PLUGINS] {
        assert!(config.contains(path), "the fleet config no longer names {path}");
    }
    replaced
}

/// [`with_this_hosts_paths`], and runnable beside other tests: a private state
/// directory and cgroup subtree, and the metrics on loopback at `metrics`.
pub fn runnable_here(config: &str, metrics: u16) -> String {
    let replaced = with_this_hosts_paths(config)
        .replace("\"/var/lib/plugin-supervisor\"", "\"state\"")
        .replace("name = \"plugin-supervisor\"", &format!("name = {:?}", unique_cgroup_name()))
        .replace("\"0.0.0.0:9464\"", &format!("\"127.0.0.1:{metrics}\""));
    for (from, what) in [
        ("/var/lib/plugin-supervisor", "state_dir"),
        ("name = \"plugin-supervisor\"", "cgroup name"),
        ("0.0.0.0", "metrics_listen"),
    ] {
        assert!(!replaced.contains(from), "the fleet config's {what} was not replaced");
    }
    replaced
}

/// The README's `## Across a fleet` section.
pub fn readme_section() -> String {
    let readme = read(&bins::repo().join("README.md"));
    let start = readme.find("\n## Across a fleet\n").expect("README.md has an \"Across a fleet\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_owned()
}

/// The fenced blocks of `lang` in `text`, each as its lines.
pub fn fenced(text: &str, lang: &str) -> Vec<Vec<String>> {
    let open = format!("```{lang}\n");
    text.split(&open)
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default().lines().map(str::to_owned).collect())
        .collect()
}

/// Words of a shell command line: whitespace-separated, double quotes grouping.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// One Containerfile instruction: its keyword and the rest, continuation lines joined.
#[derive(Debug)]
pub struct Instruction {
    pub keyword: String,
    pub rest: String,
}

pub fn containerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                let (keyword, rest) = pending.split_once(char::is_whitespace).unwrap_or((&pending, ""));
                out.push(Instruction { keyword: keyword.to_uppercase(), rest: rest.trim().to_owned() });
                pending.clear();
            }
        }
    }
    out
}

/// Whether a `.dockerignore` leaves `path` in the build context: its patterns in
/// order, the last that matches the path or a directory above it deciding, `!`
/// re-including; `*` matches within one path segment.
pub fn in_build_context(dockerignore: &str, path: &str) -> bool {
    let mut included = true;
    for line in dockerignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let segments: Vec<&str> = path.split('/').collect();
        let hits = (1..=segments.len()).any(|n| glob(pattern, &segments[..n].join("/")));
        if hits {
            included = negated;
        }
    }
    included
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else { return false };
            let mut ends = rest.char_indices().map(|(i, _)| i).chain(std::iter::once(rest.len()));
            ends.any(|i| !rest[..i].contains('/') && glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_excludes_all_but_the_reincluded() {
        let ignore = "*\n!target/debian/plugin-supervisor_*_amd64.deb\n";
        assert!(in_build_context(ignore, "target/debian/plugin-supervisor_0.1.0-1_amd64.deb"));
        assert!(!in_build_context(ignore, "target/debian/other_0.1.0-1_amd64.deb"));
        assert!(!in_build_context(ignore, "target/debug/plugin-supervisor"));
        assert!(!in_build_context(ignore, "README.md"));
        assert!(in_build_context("", "README.md"));
    }

    #[test]
    fn words_group_double_quotes() {
        assert_eq!(words(r#"podman run -v "$PWD/a b:/c" img"#), ["podman", "run", "-v", "$PWD/a b:/c", "img"]);
    }
}
