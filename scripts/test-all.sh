#!/usr/bin/env bash
# Installs what the tests need and runs them all, in order:
#   format and lint, build, unit and end-to-end tests on this host (real
#   processes, cgroups, seccomp, Landlock), the lifecycle's unit tests again
#   as an unprivileged user, the fuzz targets briefly, the
#   sandbox tests again in a pure cgroup v2 VM, the Debian package run as a
#   systemd service in a Debian VM with systemd as PID 1, and a check that
#   nothing (no cgroup) was left behind. Needs root (cgroups, per-plugin uids).
# Fails on the first failing step. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-all.sh: run as root: the tests create cgroups and run plugins under their own uids" >&2
    exit 2
fi

# Incremental caches only pay off on rebuilds and double the target's size.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step "toolchain"
cargo --version
rustc --version
# The VM lane installs its own packages (qemu, the kernel image, busybox).
target_parent=${CARGO_TARGET_DIR:-$PWD}
mkdir -p "$target_parent"
free_kb=$(df -Pk "$target_parent" | awk 'NR == 2 { print $4 }')
echo "disk free under $target_parent: $((free_kb / 1024)) MiB"
# A cold run takes about 4 GiB (build 2.3, fuzz build 1.3, VM image); failing
# here names the cause instead of a linker dying with SIGBUS halfway through.
if [ "$free_kb" -lt $((5 * 1024 * 1024)) ]; then
    echo "scripts/test-all.sh: less than 5 GiB free under $target_parent; a cold run needs about 4 GiB" >&2
    exit 2
fi
command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc >/dev/null; }
# The monitoring tests (integration/tests/monitoring.rs) run promtool and a real
# Prometheus server: Debian's prometheus package has both.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The completion tests parse the zsh and fish scripts (about 36 MB installed); the man
# page tests render with man -l.
cli_docs_pkgs=()
command -v zsh >/dev/null || cli_docs_pkgs+=(zsh)
command -v fish >/dev/null || cli_docs_pkgs+=(fish)
command -v man >/dev/null || cli_docs_pkgs+=(man-db)
# `supervisorctl top` and the colour of states are tested in a real terminal: a tmux pane.
command -v tmux >/dev/null || cli_docs_pkgs+=(tmux)
if [ ${#cli_docs_pkgs[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${cli_docs_pkgs[@]}" >/dev/null
fi
# The package (scripts/package-deb.sh, integration/tests/package.rs) needs dpkg-shlibdeps
# for its Depends and systemd-analyze to verify the unit; the systemd lane debootstraps.
pkg_pkgs=()
command -v dpkg-shlibdeps >/dev/null || pkg_pkgs+=(dpkg-dev)
command -v systemd-analyze >/dev/null || pkg_pkgs+=(systemd)
command -v debootstrap >/dev/null || pkg_pkgs+=(debootstrap)
if [ ${#pkg_pkgs[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkg_pkgs[@]}" >/dev/null
fi
# The fleet tests (integration/tests/fleet.rs) render deploy/kubernetes with
# `kubectl kustomize`, as `kubectl apply -k` does; it needs no cluster. The
# machine images have kubectl; where not, Debian's (1.20, whose kustomize
# renders these manifests the same).
if ! command -v kubectl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "build (the end-to-end tests run the built daemon, CLI and plugins)"
cargo build --workspace --bins --examples

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

step "the Go plugin example (Debian's Go, gRPC and protobuf packages, installed when missing; integration/tests/go_plugin.rs runs it)"
examples/go-plugin/build.sh "$target_dir/go-plugin"

step "Python packages (grpcio: a stock gRPC C-core client for the gateway; kubernetes-validate and python-hcl2: the fleet's manifests)"
py_env="$target_dir/py-grpc"
if [ ! -x "$py_env/bin/python" ]; then
    python3 -m venv "$py_env" 2>/dev/null || {
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        rm -rf "$py_env" && python3 -m venv "$py_env"
    }
fi
"$py_env/bin/pip" install -q --disable-pip-version-check -r integration/python/requirements.txt
export PLUGIN_TEST_PYTHON="$py_env/bin/python"

step "tests on this host"
cargo test --workspace

step "the lifecycle, reload, kept-stop, rollout and leak unit tests again, as an unprivileged user (they need no root)"
lib_tests=$(cargo test -p plugin-supervisor --lib --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
(cd / && setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/ "$lib_tests" instance:: reload:: kept_stopped:: rollout:: leaks::)

step "fuzz targets (coverage-guided, 15 s each)"
bash fuzz/run.sh 15

step "sandbox, teardown and process-1 tests in a pure cgroup v2 VM"
# pid_one runs the daemon as process 1 under util-linux's unshare (busybox's has no
# --kill-child): its cgroup v2 leaf, and its plugins' quotas, on a real v2 host.
mapfile -t vm_tests < <(integration/vm/cargo-test-bins.sh -p plugin-integration --test sandbox --test teardown --test pid_one)
unshare_bin=$(command -v unshare) || { echo "test-all: the VM lane needs util-linux's unshare" >&2; exit 2; }
debug="$target_dir/debug"
integration/vm/run.sh --timeout 2400 \
    --add "$debug/plugin-supervisor" \
    --add "$debug/supervisorctl" \
    --add "$debug/zoo" \
    --add "$debug/examples/echo" \
    --add "$PWD/policies" \
    --add "$unshare_bin" \
    --workdir "$PWD/integration" \
    --env TEARDOWN_CYCLES=100 \
    "${vm_tests[@]}"

step "the Debian package, installed and run as a systemd service in a Debian VM (systemd as PID 1)"
# The debug binaries the build step made, packaged as they are (no release build).
deb=$(CARGO_TARGET_DIR="$target_dir" scripts/package-deb.sh --profile debug --no-build)
integration/vm/systemd.sh --timeout 900 --deb "$deb" --echo "$debug/examples/echo" --zoo "$debug/zoo"

step "nothing left behind"
left=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 8 -type d -name 'pstest-*' 2>/dev/null || true)
if [ -n "$left" ]; then
    echo "test cgroups were left behind:" >&2
    echo "$left" >&2
    exit 1
fi

printf '\nall tests passed in %d s\n' "$((SECONDS - started))"
