#!/usr/bin/env bash
# Builds the supervisor, supervisorctl and the example plugins (release) and
# runs the daemon in the foreground on supervisor/examples/supervisor.toml.
# Needs root (cgroups, per-plugin uids). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins --examples
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
config=supervisor/examples/supervisor.toml
if [ "$target_dir" != "$PWD/target" ]; then
    # The example config expects ../../target; point a copy at the real place.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    sed -e "s|../../target/release/examples|$target_dir/release/examples|" \
        -e "s|\"../../policies\"|\"$PWD/policies\"|" "$config" >"$tmp/supervisor.toml"
    config="$tmp/supervisor.toml"
fi
ctl="$target_dir/release/supervisorctl"
cat <<MSG

plugin-supervisor is starting with $config.
In another terminal, try:
  $ctl status
  $ctl call echo echo.v1.Echo/Echo --data '{"message":"hi"}'
  $ctl call token-validator token.v1.TokenValidator/Issue --data '{"subject":"alice","scopes":["read"]}'
  $ctl tail -f echo
  $ctl quota echo --memory 64M
  $ctl events
  $ctl doctor --config $config
Host applications call plugins on /run/plugin-supervisor/gateway.sock.

MSG
exec "$target_dir/release/plugin-supervisor" --config "$config"
