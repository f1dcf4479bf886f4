#!/bin/bash
# The systemd lane's checks, run in the guest by sdlane-check.service once the system
# is up (systemd is PID 1): installs the package, runs the service as an operator
# would (the README's "Running as a systemd service"), prints one SDLANE-CHECK line
# per check, the figures as JSON, and powers off. integration/vm/systemd.sh parses it.
set -u
# shellcheck disable=SC1091
. /vmlane/config
UNIT=plugin-supervisor.service
CG=/sys/fs/cgroup/system.slice/$UNIT
CONF=/etc/plugin-supervisor/config.toml
PLUGINS=/opt/vmlane/plugins
PASSED=0
FAILED=0
declare -A FIG=()

log() { echo "sdlane-check: $*"; }
check() { # check NAME PASS|FAIL DETAIL
    local name=$1 status=$2
    shift 2
    echo "SDLANE-CHECK $TOKEN $name $status $*"
    if [[ $status == PASS ]]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
}
ok_if() { # ok_if NAME DETAIL COMMAND...: PASS when COMMAND succeeds
    local name=$1 detail=$2
    shift 2
    if "$@"; then check "$name" PASS "$detail"; else check "$name" FAIL "$detail"; fi
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
uptime_s() { awk '{ print $1 }' /proc/uptime; }
finish() {
    local json='{' k sep=
    for k in boot_s install_s start_s boot_to_active_s reload_s reload_added_running_s stop_s kill_main_plugins_gone_s \
        restart_after_kill_s; do
        json+="$sep\"$k\": ${FIG[$k]:-null}"
        sep=', '
    done
    echo "SDLANE-FIGURES $TOKEN $json}"
    echo "SDLANE-DONE $TOKEN $PASSED $FAILED"
    sync
    sleep 1 # the serial line drains
    systemctl poweroff --force --force
}
trap finish EXIT

# The pids of every running instance of the given plugins, one a line.
plugin_pids() {
    local p
    for p in "$@"; do supervisorctl pid "$p"; done
    return 0
}
alive() { # alive PID...: prints those still running (zombies count as gone)
    local p st
    for p in "$@"; do
        st=$(awk '/^State:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        [[ -n $st && $st != Z ]] && echo "$p"
    done
    return 0
}
# What systemd (PID 1) logged about the unit, as journalctl -u shows it beside the
# daemon's own output.
systemd_says() { journalctl _PID=1 UNIT="$UNIT" -o cat --no-pager; }
# Processes under the plugins' dynamic uids (the default uid_range).
plugin_uid_processes() { ps -e -o pid=,uid=,comm= | awk '$2 >= 61184 && $2 <= 65519'; }

FIG[boot_s]=$(uptime_s)
log "system up after ${FIG[boot_s]} s (kernel uptime); systemd $(systemctl --version | head -n 1)"

# ------------------------------------------------------------------ install
t=$(now)
if dpkg -i /vmlane/plugin-supervisor.deb; then
    FIG[install_s]=$(secs "$t" "$(now)")
    check install PASS "dpkg -i in ${FIG[install_s]} s"
else
    check install FAIL "dpkg -i failed"
    exit 1
fi
# The package's postinst reloaded systemd: the unit is known without a daemon-reload.
ok_if unit-loaded "$(systemctl show -p LoadState,UnitFileState "$UNIT" | tr '\n' ' ')" \
    test "$(systemctl show -p LoadState --value "$UNIT")" = loaded
missing=
for f in /usr/bin/plugin-supervisor /usr/bin/supervisorctl /etc/plugin-supervisor/policies/L1.toml \
    /etc/plugin-supervisor/policies/L1.seccomp.json "$CONF" /lib/systemd/system/$UNIT \
    /usr/share/man/man1/supervisorctl.1.gz /usr/share/man/man1/plugin-supervisor.1.gz \
    /usr/share/bash-completion/completions/supervisorctl /usr/share/zsh/vendor-completions/_supervisorctl \
    /usr/share/fish/vendor_completions.d/supervisorctl.fish; do
    [[ -e $f ]] || missing+=" $f"
done
ok_if package-files "${missing:+missing:$missing}" test -z "$missing"

# ------------------------------------------------------------------ configure and start
# As an operator does: the packaged config, with plugins added at its end.
cat >>"$CONF" <<EOF

[[plugin]]
name = "echo"
binary = "$PLUGINS/echo"
handshake_timeout = "60s"

[[plugin]]
name = "zoo"
binary = "$PLUGINS/zoo"
handshake_timeout = "60s"
EOF
ok_if check-config "$(plugin-supervisor check-config "$CONF" 2>&1 | tail -n 3 | tr '\n' ' ')" \
    plugin-supervisor check-config "$CONF"

t=$(now)
systemctl enable --now "$UNIT"
rc=$?
FIG[start_s]=$(secs "$t" "$(now)")
# Straight after systemctl returns, with no retry: Type=notify made it wait for READY=1,
# which the daemon sends once its sockets answer and the autostart plugins run.
status_json=$(supervisorctl status --json 2>&1)
status_rc=$?
state=$(systemctl is-active "$UNIT")
ok_if start-ready "systemctl rc $rc in ${FIG[start_s]} s, then $state, supervisorctl status rc $status_rc: $(echo "$status_json" | tr -d '\n' | cut -c1-300)" \
    test "$rc" = 0 -a "$state" = active -a "$status_rc" = 0
enter=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$UNIT")
FIG[boot_to_active_s]=$(awk -v u="$enter" 'BEGIN { printf "%.2f", u / 1e6 }')

# ------------------------------------------------------------------ status
status=$(systemctl status "$UNIT" --no-pager -l 2>&1)
echo "$status"
status_line=$(grep -o 'Status: ".*"' <<<"$status" || true)
ok_if status-line "$status_line" grep -q 'Status: ".*running.*"' <<<"$status"
mapfile -t pids < <(plugin_pids echo zoo)
bad=
for p in "${pids[@]}"; do
    cg=$(sed -n 's/^0:://p' "/proc/$p/cgroup" 2>/dev/null)
    [[ $cg == /system.slice/$UNIT/* ]] || bad+=" $p:$cg"
    grep -q -- "$p " <<<"$status" || bad+=" $p:not-in-status"
done
ok_if plugins-in-unit-cgroup "pids ${pids[*]}${bad:+; wrong:$bad}" test "${#pids[@]}" -ge 2 -a -z "$bad"

# ------------------------------------------------------------------ reload
# Add a plugin and change a live key of another: echo and zoo keep their processes.
before="${pids[*]}"
cat >>"$CONF" <<EOF

[[plugin]]
name = "zoo2"
binary = "$PLUGINS/zoo"
args = ["--name", "zoo2"]
handshake_timeout = "60s"
EOF
sed -i '/^name = "echo"/a call_timeout = "7s"' "$CONF"
t=$(now)
systemctl reload "$UNIT"
rc=$?
FIG[reload_s]=$(secs "$t" "$(now)")
mapfile -t pids_after < <(plugin_pids echo zoo)
# update returns once the change is applied, an added plugin's start included: its
# process runs when the reload returns. Its figure is until it also serves (status 0).
zoo2=$(plugin_pids zoo2 2>/dev/null)
for _ in $(seq 1 600); do
    supervisorctl status zoo2 >/dev/null 2>&1 && break
    sleep 0.1
done
FIG[reload_added_running_s]=$(secs "$t" "$(now)")
echo_timeout=$(supervisorctl config echo 2>&1 | grep -m1 'call_timeout' || true)
ok_if reload "rc $rc in ${FIG[reload_s]} s; echo+zoo pids $before -> ${pids_after[*]}; zoo2 pid ${zoo2:-none}; echo $echo_timeout" \
    test "$rc" = 0 -a "$before" = "${pids_after[*]}" -a -n "$zoo2" -a "$(systemctl is-active "$UNIT")" = active
ok_if reload-live-key "$echo_timeout" grep -q '7s' <<<"$echo_timeout"

# ------------------------------------------------------------------ stop
mapfile -t pids < <(plugin_pids echo zoo zoo2)
main=$(systemctl show -p MainPID --value "$UNIT")
t=$(now)
systemctl stop "$UNIT"
rc=$?
FIG[stop_s]=$(secs "$t" "$(now)")
left=$(alive "$main" "${pids[@]}")
uid_procs=$(plugin_uid_processes)
ok_if stop "rc $rc in ${FIG[stop_s]} s; left: ${left:-none} ${uid_procs:+plugin-uid processes: $uid_procs}; cgroup $([[ -e $CG ]] && echo present || echo gone)" \
    test "$rc" = 0 -a -z "$left" -a -z "$uid_procs" -a ! -e "$CG"

# ------------------------------------------------------------------ kill the main process only
# How this shows the daemon's own mechanism at work, not systemd's: for this check a
# runtime drop-in sets KillMode=process, under which systemd signals the main process
# and nothing else of the unit, ever: not when it stops the unit, not when the main
# process dies (with the unit's KillMode=mixed, systemd SIGKILLs whatever is left of the
# cgroup as soon as the main process is gone, a backstop that would hide the daemon's
# work). So every process of the unit (the plugins, the daemon's dead man's switch)
# gone within seconds of the main process's death was ended by the daemon's mechanism:
# each plugin's parent-death signal and the switch's write to cgroup.kill. Had one been
# left, systemd would say "Found left-over process" when Restart=on-failure starts the
# unit again, and the journal check below fails on that.
dropin=/run/systemd/system/$UNIT.d
mkdir -p "$dropin"
printf '[Service]\nKillMode=process\n' >"$dropin/sdlane-kill-main.conf"
systemctl daemon-reload
systemctl start "$UNIT"
main=$(systemctl show -p MainPID --value "$UNIT")
mapfile -t plugin_pids < <(plugin_pids echo zoo zoo2)
# Every process of the unit's cgroup tree, main, plugins and helpers alike.
mapfile -t unit_pids < <(find "$CG" -name cgroup.procs -exec cat {} + 2>/dev/null)
t=$(now)
systemctl kill --kill-whom=main -s KILL "$UNIT"
gone=
for _ in $(seq 1 200); do
    if [[ -z $(alive "${unit_pids[@]}") ]]; then
        gone=$(secs "$t" "$(now)")
        break
    fi
    sleep 0.05
done
FIG[kill_main_plugins_gone_s]=${gone:-null}
ok_if kill-main "KillMode=process; main $main, plugins ${plugin_pids[*]}, all of the unit's ${unit_pids[*]} gone after ${gone:-more than 10} s; still there: $(alive "${unit_pids[@]}" | tr '\n' ' ')" \
    test -n "$gone" -a "${#plugin_pids[@]}" -ge 3 -a "${#unit_pids[@]}" -gt "${#plugin_pids[@]}"
# Restart=on-failure brings it back, into an empty cgroup (no left-over process).
t=$(now)
for _ in $(seq 1 900); do
    new_main=$(systemctl show -p MainPID --value "$UNIT")
    [[ $new_main != 0 && $new_main != "$main" && $(systemctl is-active "$UNIT") == active ]] && break
    sleep 0.1
done
FIG[restart_after_kill_s]=$(secs "$t" "$(now)")
ok_if restart-after-kill "$(systemctl is-active "$UNIT") after ${FIG[restart_after_kill_s]} s; $(supervisorctl status 2>&1 | awk '{ print $1, $2, $4, $5 }' | tr '\n' ';')" \
    supervisorctl status
systemctl stop "$UNIT"
rm -r "$dropin"
systemctl daemon-reload

# ------------------------------------------------------------------ the journal, whole
# What systemd said about the unit over every step: never a left-over process, a kill
# of remaining processes or a timeout; the one SIGKILL is ours, to the main process.
journalctl --sync 2>/dev/null || true
said=$(systemd_says)
bad=$(grep -E 'left-over process|Killing process|SIGKILL|timed out|[Ww]atchdog' <<<"$said" |
    grep -v 'Sent signal SIGKILL to main process' | grep -v 'status=9/KILL' || true)
started=$(grep -c '^Started ' <<<"$said" || true)
ok_if journal "$(grep -c . <<<"$said") lines from systemd, $started 'Started'${bad:+; unexpected: $(echo "$bad" | tr '\n' ';')}" \
    test -z "$bad" -a "$started" -ge 3
echo "----- journalctl -u $UNIT -----"
journalctl -u "$UNIT" -o short-monotonic --no-pager | tail -n 100
