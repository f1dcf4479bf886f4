#!/bin/sh
# shellcheck shell=sh
#
# /init of the vmlane initramfs (integration/vm/run.sh copies this file to /init).
#
# Runs as PID 1 under busybox ash inside the VM.  Sets up a minimal pure
# cgroup v2 system, runs every test binary listed in /vmlane/tests (one
# "NAME GUEST_PATH" per line) with the arguments and environment from
# /vmlane/config.sh, prints one machine-readable line per binary on the
# serial console, and powers the VM off.  Whatever goes wrong, it prints a
# result and powers off; if even that fails, PID 1 exits, the kernel panics
# and `panic=-1` + qemu's `-no-reboot` end the VM.
#
# Lines for the host (TOKEN is a per-run random value, so test output cannot
# fake them):
#   VMLANE-BOOTED TOKEN UPTIME_SECONDS KERNEL_RELEASE
#   VMLANE-INFO   TOKEN KEY VALUE...
#   VMLANE-BEGIN  TOKEN NAME
#   VMLANE-NOTE   TOKEN NAME TEXT...
#   VMLANE-RESULT TOKEN NAME PASS|FAIL|TIMEOUT EXIT_CODE SECONDS
#   VMLANE-DONE   TOKEN PASSED FAILED

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

VMLANE_TOKEN=unknown
VMLANE_TEST_TIMEOUT=900
VMLANE_WORKDIR=/tmp
VMLANE_CGROUP=
VMLANE_MODULES=
VMLANE_REQUIRED_CONTROLLERS="cpu memory pids"
VMLANE_OPTIONAL_CONTROLLERS="io"
passed=0
failed=0
finished=0

say() { echo "vmlane-init: $*"; }

# poweroff; never returns.
finish() {
    finished=1
    echo "VMLANE-DONE $VMLANE_TOKEN $passed $failed"
    sync
    # Let the UART drain before the machine goes away.
    sleep 0.3
    poweroff -f
    echo o >/proc/sysrq-trigger 2>/dev/null
    # Last resort: PID 1 exits -> kernel panic -> panic=-1 reboots -> -no-reboot ends qemu.
    exit 1
}

# An error of the lane itself (not of a test): report it as the pseudo-test "init".
init_fail() {
    say "FATAL: $*"
    echo "VMLANE-RESULT $VMLANE_TOKEN init FAIL 1 0"
    failed=$((failed + 1))
    finish
}

# shellcheck disable=SC2317  # invoked by trap
on_exit() {
    if [ "$finished" = 0 ]; then
        init_fail "init script ended unexpectedly"
    fi
}
trap on_exit EXIT

must() {
    "$@" || init_fail "command failed (exit $?): $*"
}

uptime_s() {
    read -r _up _ </proc/uptime
    echo "$_up"
}

# ---------------------------------------------------------------- stage 1: leave the initramfs
# The initramfs root (rootfs) cannot be left with pivot_root, so a test that
# builds a mount namespace with pivot_root would fail there. Unless the host
# said --no-switch-root, move the image onto a tmpfs (file by file, so memory
# use does not double) and switch_root to it; this script then runs again as
# PID 1 with the argument "stage2".
if [ "${1:-}" != stage2 ] && [ -e /vmlane/switch-root ]; then
    mkdir -p /.newroot
    if mount -t tmpfs -o mode=0755 tmpfs /.newroot; then
        # switch_root insists on a regular /init in the old root: copy that one.
        cp -p /init /.newroot/init || say "warning: copying /init to the new root failed"
        set --
        for e in /*; do [ "$e" = /init ] || set -- "$@" "$e"; done
        mv "$@" /.newroot/ || say "warning: moving the image to the new root failed"
        if [ -x /.newroot/bin/busybox ] && [ -e /.newroot/init ]; then
            exec /.newroot/bin/busybox switch_root /.newroot /init stage2
        fi
        say "warning: switch_root failed; staying on the initramfs root"
    else
        say "warning: cannot mount a tmpfs for the new root; staying on the initramfs root"
    fi
fi

# ---------------------------------------------------------------- file systems
must mount -t proc -o nosuid,nodev,noexec proc /proc
must mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
must mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts || say "warning: devpts not mounted"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm || say "warning: /dev/shm not mounted"
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

# tmpfs on /tmp and /run; keep whatever the image placed there (for example
# files added with --add under /tmp).
for d in /tmp /run; do
    mode=1777
    [ "$d" = /run ] && mode=0755
    if [ -d "$d" ] && [ -n "$(ls -A "$d" 2>/dev/null)" ]; then
        must mv "$d" "$d.vmlane-image"
        must mkdir -p "$d"
        must mount -t tmpfs -o "nosuid,nodev,mode=$mode" tmpfs "$d"
        must cp -a "$d.vmlane-image/." "$d/"
        rm -rf "$d.vmlane-image"
    else
        mkdir -p "$d"
        must mount -t tmpfs -o "nosuid,nodev,mode=$mode" tmpfs "$d"
    fi
done
mkdir -p /run/vmlane

mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || say "warning: securityfs not mounted"

# Pure cgroup v2: the unified hierarchy on /sys/fs/cgroup and nothing else.
must mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup

# The host's settings.
if [ -r /vmlane/config.sh ]; then
    # shellcheck disable=SC1091
    . /vmlane/config.sh
else
    init_fail "/vmlane/config.sh is missing from the initramfs"
fi

echo "VMLANE-BOOTED $VMLANE_TOKEN $(uptime_s) $(uname -r)"

# ---------------------------------------------------------------- modules
for m in $VMLANE_MODULES; do
    insmod "$m" || init_fail "insmod $m failed"
done

# ---------------------------------------------------------------- cgroups
CG=/sys/fs/cgroup
read -r controllers <"$CG/cgroup.controllers" || controllers=
echo "VMLANE-INFO $VMLANE_TOKEN cgroup.controllers $controllers"
for c in $VMLANE_REQUIRED_CONTROLLERS $VMLANE_OPTIONAL_CONTROLLERS; do
    case " $controllers " in
    *" $c "*)
        echo "+$c" >"$CG/cgroup.subtree_control" || {
            case " $VMLANE_REQUIRED_CONTROLLERS " in
            *" $c "*) init_fail "cannot enable the $c controller in $CG/cgroup.subtree_control" ;;
            *) say "warning: cannot enable the $c controller" ;;
            esac
        }
        ;;
    *)
        case " $VMLANE_REQUIRED_CONTROLLERS " in
        *" $c "*) init_fail "the kernel offers no $c controller in $CG/cgroup.controllers ($controllers)" ;;
        *) say "warning: the kernel offers no $c controller" ;;
        esac
        ;;
    esac
done
read -r subtree <"$CG/cgroup.subtree_control" || subtree=
echo "VMLANE-INFO $VMLANE_TOKEN cgroup.subtree_control $subtree"

# Optional: run the tests in a non-root cgroup, like a systemd service with
# Delegate=yes (controllers available there, its subtree_control empty).
if [ -n "$VMLANE_CGROUP" ]; then
    path=$CG
    rest=$VMLANE_CGROUP
    while [ -n "$rest" ]; do
        part=${rest%%/*}
        if [ "$part" = "$rest" ]; then rest=; else rest=${rest#*/}; fi
        [ -n "$part" ] || continue
        if [ -n "$rest" ]; then
            must mkdir -p "$path/$part"
            for c in $subtree; do
                echo "+$c" >"$path/$part/cgroup.subtree_control" || init_fail "cannot enable $c in $path/$part"
            done
        else
            must mkdir -p "$path/$part"
        fi
        path=$path/$part
    done
    echo "VMLANE-INFO $VMLANE_TOKEN test-cgroup /$VMLANE_CGROUP"
fi

if [ -r /sys/kernel/security/lsm ]; then
    lsm=$(cat /sys/kernel/security/lsm)
    echo "VMLANE-INFO $VMLANE_TOKEN lsm $lsm"
fi

# ---------------------------------------------------------------- network, host name
must ip link set lo up
hostname vmlane 2>/dev/null || true

# ---------------------------------------------------------------- environment
HOME=/root
TMPDIR=/tmp
TERM=dumb
export HOME TMPDIR TERM
: "${RUST_BACKTRACE:=1}"
export RUST_BACKTRACE
# Code runs about 20x slower under TCG: the tests' daemons get longer
# handshake and call timeouts (integration/src/daemon.rs).
PLUGIN_TEST_TIMEOUT_FACTOR=6
export PLUGIN_TEST_TIMEOUT_FACTOR
[ -d "$VMLANE_WORKDIR" ] || mkdir -p "$VMLANE_WORKDIR" || init_fail "cannot create the work directory $VMLANE_WORKDIR"

# ---------------------------------------------------------------- helpers for the run
# Set $leftover to the user-space processes other than PID 1 (kernel threads
# have no exe). Runs in PID 1 itself (no command substitution), so the only
# other processes are what the tests left.
leftover_processes() {
    _l=
    for _d in /proc/[0-9]*; do
        _p=${_d#/proc/}
        [ "$_p" = 1 ] && continue
        _exe=$(readlink "$_d/exe" 2>/dev/null) || continue
        [ -n "$_exe" ] || continue
        read -r _comm <"$_d/comm" 2>/dev/null || _comm='?'
        _l="$_l $_p:$_comm"
    done
    leftover=$_l
}

# Remove child cgroups a test left behind (except the configured test cgroup
# and its ancestors), deepest first.
cleanup_cgroups() {
    _name=$1
    _keep=
    if [ -n "$VMLANE_CGROUP" ]; then
        _p=$CG
        _r=$VMLANE_CGROUP
        while [ -n "$_r" ]; do
            _part=${_r%%/*}
            if [ "$_part" = "$_r" ]; then _r=; else _r=${_r#*/}; fi
            [ -n "$_part" ] || continue
            _p=$_p/$_part
            _keep="$_keep $_p"
        done
    fi
    _left=
    for _d in $(find "$CG" -mindepth 1 -type d 2>/dev/null | sort -r); do
        case " $_keep " in *" $_d "*) continue ;; esac
        _left="$_left ${_d#"$CG"}"
        _i=0
        while ! rmdir "$_d" 2>/dev/null && [ -d "$_d" ] && [ "$_i" -lt 20 ]; do
            sleep 0.1
            _i=$((_i + 1))
        done
    done
    if [ -n "$_left" ]; then
        echo "VMLANE-NOTE $VMLANE_TOKEN $_name left cgroups (removed):$_left"
    fi
    # Put the root's controllers back in case a test changed them.
    for _c in $subtree; do
        echo "+$_c" >"$CG/cgroup.subtree_control" 2>/dev/null
    done
}

run_one() {
    name=$1
    bin=$2
    shift 2
    echo "VMLANE-BEGIN $VMLANE_TOKEN $name"
    rm -f /run/vmlane/timeout
    t0=$(uptime_s)
    (
        cd "$VMLANE_WORKDIR" || exit 126
        if [ -n "$VMLANE_CGROUP" ]; then
            echo 0 >"$CG/$VMLANE_CGROUP/cgroup.procs" || {
                echo "vmlane-init: cannot move $name into /$VMLANE_CGROUP" >&2
                exit 126
            }
        fi
        exec "$bin" "$@"
    ) </dev/null &
    tpid=$!
    # The watchdog. SIGTERM stops it quietly (with its sleep).
    (
        sp=
        trap 'kill -KILL $sp 2>/dev/null; exit 0' TERM
        sleep "$VMLANE_TEST_TIMEOUT" &
        sp=$!
        if wait "$sp"; then
            : >/run/vmlane/timeout
            echo "vmlane-init: $name exceeded its timeout of ${VMLANE_TEST_TIMEOUT}s; killing it"
            kill -KILL "$tpid"
        fi
    ) &
    wpid=$!
    wait "$tpid"
    rc=$?
    kill -TERM "$wpid" 2>/dev/null
    wait "$wpid" 2>/dev/null
    t1=$(uptime_s)

    leftover_processes
    if [ -n "$leftover" ]; then
        echo "VMLANE-NOTE $VMLANE_TOKEN $name left processes (killed):$leftover"
        kill -KILL -1 2>/dev/null
        wait
    fi
    cleanup_cgroups "$name"

    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    if [ -e /run/vmlane/timeout ]; then
        status=TIMEOUT
    elif [ "$rc" = 0 ]; then
        status=PASS
    else
        status=FAIL
    fi
    if [ "$status" = PASS ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    echo "VMLANE-RESULT $VMLANE_TOKEN $name $status $rc $secs"
}

# ---------------------------------------------------------------- run
[ -r /vmlane/tests ] || init_fail "/vmlane/tests is missing from the initramfs"
# Read the list first: the loop body must not share stdin with the tests.
tests=$(cat /vmlane/tests)
[ -n "$tests" ] || init_fail "no test binaries listed in /vmlane/tests"
old_ifs=$IFS
IFS='
'
for line in $tests; do
    IFS=$old_ifs
    name=${line%% *}
    path=${line#* }
    run_one "$name" "$path" "$@"
done
IFS=$old_ifs

finish
