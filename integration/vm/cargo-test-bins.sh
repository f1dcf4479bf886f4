#!/usr/bin/env bash
# Build test binaries without running them and print their paths, one a line:
#   integration/vm/cargo-test-bins.sh [CARGO TEST OPTIONS...]
# e.g. integration/vm/cargo-test-bins.sh -p integration --test sandbox
# Runs `cargo test --no-run --message-format=json` with the given options
# (cargo's progress goes to stderr) and prints each test executable it reports.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo-test-bins: error: cargo not found" >&2
    exit 3
fi
if command -v python3 >/dev/null 2>&1; then
    filter=(python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])
')
elif command -v jq >/dev/null 2>&1; then
    filter=(jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable')
else
    echo "cargo-test-bins: error: need python3 or jq to read cargo's JSON" >&2
    exit 3
fi

out=$(cargo test --no-run --message-format=json "$@" | "${filter[@]}")
if [[ -z $out ]]; then
    echo "cargo-test-bins: error: cargo test --no-run $* built no test binary" >&2
    exit 3
fi
printf '%s\n' "$out"
