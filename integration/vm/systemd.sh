#!/usr/bin/env bash
# The systemd lane: boots Debian bookworm (a debootstrap root filesystem, systemd
# as PID 1, Debian's cloud kernel) under qemu TCG, installs the plugin-supervisor
# .deb there with dpkg, and checks the service as systemd runs it (systemd-check.sh
# in the guest). Prints the figures as JSON. See README.md beside this file.
set -euo pipefail

PROG=sdlane
umask 022
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=integration/vm/lib.sh
source "$SCRIPT_DIR/lib.sh"

usage() {
    cat <<'EOF'
usage: integration/vm/systemd.sh [OPTIONS] --deb PACKAGE --echo BINARY --zoo BINARY

Boots Debian bookworm with systemd as PID 1 in a qemu VM (TCG, pure cgroup v2),
installs PACKAGE (the plugin-supervisor .deb) with dpkg -i, configures the echo
and zoo plugins, and checks the plugin-supervisor service: start reaches active
only after readiness, status shows STATUS= and the plugins in the unit's cgroup,
reload applies a config change without restarting untouched plugins, stop leaves
nothing behind, and killing only the main process takes the plugins with it.

options:
      --deb PATH           the package (scripts/package-deb.sh makes it)
      --echo PATH          the echo example plugin (plugin-sdk)
      --zoo PATH           the zoo test plugin (integration)
  -t, --timeout SECONDS    overall limit, qemu is killed after it (default 900)
  -m, --memory MIB         guest memory (default 2048)
      --smp N              guest CPUs (default 2)
      --prepare            only build (or find) the cached root filesystem, then exit
      --log FILE           also save the VM console log to FILE
  -k, --keep               keep the temporary directory and print its path
  -v, --verbose            stream the VM console while it runs
  -h, --help               this text

exit status: 0 every check passed; 1 a check failed; 2 usage error; 3 the lane
itself failed (packages, debootstrap, kernel, boot, timeout, missing results).

environment: VMLANE_CACHE (default /var/cache/vmlane) holds the kernel and the
root filesystem (a cpio archive, rebuilt only when this script's recipe changes).
EOF
}


TIMEOUT=900
MEMORY=2048
SMP=2
DEB=
ECHO_BIN=
ZOO_BIN=
PREPARE=0
SAVE_LOG=
KEEP=0
VERBOSE=0
need_arg() { [[ $# -ge 2 ]] || usage_error "option $1 needs an argument"; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --deb) need_arg "$@"; DEB=$2; shift 2 ;;
    --echo) need_arg "$@"; ECHO_BIN=$2; shift 2 ;;
    --zoo) need_arg "$@"; ZOO_BIN=$2; shift 2 ;;
    -t | --timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
    -m | --memory) need_arg "$@"; MEMORY=$2; shift 2 ;;
    --smp) need_arg "$@"; SMP=$2; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    --log) need_arg "$@"; SAVE_LOG=$2; shift 2 ;;
    -k | --keep) KEEP=1; shift ;;
    -v | --verbose) VERBOSE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
    esac
done
[[ $TIMEOUT =~ ^[0-9]+$ && $TIMEOUT -ge 60 ]] || usage_error "--timeout must be a number of seconds >= 60, not '$TIMEOUT'"
[[ $MEMORY =~ ^[0-9]+$ && $MEMORY -ge 1024 ]] || usage_error "--memory must be a number of MiB >= 1024, not '$MEMORY'"
[[ $SMP =~ ^[0-9]+$ && $SMP -ge 1 ]] || usage_error "--smp must be a number >= 1, not '$SMP'"
if [[ $PREPARE == 0 ]]; then
    [[ -n $DEB && -n $ECHO_BIN && -n $ZOO_BIN ]] || usage_error "--deb, --echo and --zoo are required"
    [[ -f $DEB ]] || usage_error "--deb: $DEB does not exist (scripts/package-deb.sh makes it)"
    [[ -x $ECHO_BIN ]] || usage_error "--echo: $ECHO_BIN is not an executable file"
    [[ -x $ZOO_BIN ]] || usage_error "--zoo: $ZOO_BIN is not an executable file"
fi
[[ $EUID == 0 ]] || die "run as root: debootstrap, device nodes in the image"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sdlane.XXXXXX") || die "cannot create a temporary directory"
QEMU_PID=
BG_PIDS=()
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    local rc=$? p
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$QEMU_PID" 2>/dev/null || true
    fi
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # A debootstrap interrupted halfway leaves its mounts (proc, sys) in the tree.
    if [[ -d $TMP/rootfs ]]; then
        for p in proc sys dev/pts dev; do
            mountpoint -q "$TMP/rootfs/$p" 2>/dev/null && umount -l "$TMP/rootfs/$p"
        done
    fi
    if [[ $KEEP == 1 ]]; then say "kept the temporary directory: $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

T_START=$(now)

# ------------------------------------------------------------------ packages and kernel
missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
ensure_qemu
KERNEL_IMAGE=
find_kernel

# ------------------------------------------------------------------ the root filesystem
# Debian bookworm, minbase plus systemd (as /sbin/init) and procps (ps, pgrep for the
# checks). No udev, dbus or getty: systemctl reaches PID 1 over its private socket, and
# each unit left out is a second less of boot under TCG.
SUITE=bookworm
ROOTFS_PACKAGES=systemd,systemd-sysv,procps
# Units a minimal VM has no use for (no udev for the getty's device, no dbus for logind).
MASKED=(serial-getty@ttyS0.service getty@tty1.service console-getty.service systemd-logind.service
    systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
    e2scrub_all.timer fstrim.timer)
ROOTFS_RECIPE="1 $SUITE $ROOTFS_PACKAGES ${MASKED[*]}"
ROOTFS_KEY=$(printf '%s' "$ROOTFS_RECIPE" | sha256sum | cut -c1-12)
ROOTFS_CPIO=$CACHE/systemd-rootfs-$SUITE-$ROOTFS_KEY.cpio

debian_mirror() {
    # The mirror the host already uses for Debian (deb.debian.org otherwise).
    local uri
    uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ && $2 !~ /security/ { print $2; exit }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*debian\/?$/) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_rootfs() {
    local root=$TMP/rootfs mirror u
    mirror=$(debian_mirror)
    say "debootstrap $SUITE from $mirror (once; cached as $ROOTFS_CPIO)"
    if ! debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$SUITE" "$root" "$mirror" \
        >"$TMP/debootstrap.log" 2>&1; then
        tail -n 30 "$TMP/debootstrap.log" >&2
        die "debootstrap failed (see above; full log in $TMP/debootstrap.log with --keep)"
    fi
    for u in "${MASKED[@]}"; do ln -sf /dev/null "$root/etc/systemd/system/$u"; done
    # A fixed machine id: not a first boot (no systemd-firstboot, no machine-id commit).
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
    echo >>"$root/etc/machine-id"
    echo sdlane >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tsdlane\n' >"$root/etc/hosts"
    : >"$root/etc/fstab"
    # Smaller image, faster boot: docs, man pages and apt's lists are never read here.
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
        "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
    mkdir -p "$CACHE"
    (cd "$root" && find . -print0 | LC_ALL=C sort -z |
        cpio --null --create --format=newc --owner=0:0 --quiet) >"$ROOTFS_CPIO.partial.$$" ||
        die "cannot write the root filesystem archive"
    mv "$ROOTFS_CPIO.partial.$$" "$ROOTFS_CPIO"
    rm -rf "$root"
    local old
    for old in "$CACHE"/systemd-rootfs-*.cpio; do
        [[ $old == "$ROOTFS_CPIO" ]] || rm -f "$old"
    done
}

T_ROOTFS=$(now)
[[ -f $ROOTFS_CPIO ]] || build_rootfs
ROOTFS_MB=$(du -m "$ROOTFS_CPIO" | cut -f1)
say "root filesystem: $ROOTFS_CPIO (${ROOTFS_MB} MiB, ready in $(elapsed "$T_ROOTFS" "$(now)") s)"
[[ $PREPARE == 0 ]] || exit 0

# ------------------------------------------------------------------ this run's files
# A second cpio archive appended to the cached one (the kernel unpacks both, later
# entries over earlier ones): the init, the checks, the package and the plugins.
STAGE=$TMP/extra
mkdir -p "$STAGE"/{dev,newroot,vmlane,opt/vmlane/plugins,etc/systemd/system/multi-user.target.wants}
mknod -m 600 "$STAGE/dev/console" c 5 1
TOKEN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
# The guest's /init: copy the image from the initramfs onto a tmpfs and switch_root to
# systemd there, so / is a real mount (pivot_root, mount namespaces as on a host).
cat >"$STAGE/init" <<'EOF'
#!/bin/sh
mount -t tmpfs -o mode=0755 root /newroot || exec /bin/sh
for e in /* /.[!.]*; do
    case $e in /newroot | /init | /proc | /sys | /dev | '/.[!.]*') ;; *) cp -a "$e" /newroot/ ;; esac
done
mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp
chmod 1777 /newroot/tmp
exec switch_root /newroot /lib/systemd/systemd
EOF
chmod 0755 "$STAGE/init"
install -m 0755 "$SCRIPT_DIR/systemd-check.sh" "$STAGE/vmlane/check.sh"
printf 'TOKEN=%s\n' "$TOKEN" >"$STAGE/vmlane/config"
cp "$DEB" "$STAGE/vmlane/plugin-supervisor.deb"
cp "$ECHO_BIN" "$STAGE/opt/vmlane/plugins/echo"
cp "$ZOO_BIN" "$STAGE/opt/vmlane/plugins/zoo"
chmod 0755 "$STAGE/opt/vmlane/plugins/echo" "$STAGE/opt/vmlane/plugins/zoo"
cat >"$STAGE/etc/systemd/system/sdlane-check.service" <<'EOF'
[Unit]
Description=systemd lane: the plugin-supervisor service checks
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/vmlane/check.sh
# Straight to the serial line: output through journald may not reach the console
# before the immediate poweroff that ends the checks.
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
ln -s ../sdlane-check.service "$STAGE/etc/systemd/system/multi-user.target.wants/sdlane-check.service"
INITRD=$TMP/initrd.cpio
cp "$ROOTFS_CPIO" "$INITRD"
(cd "$STAGE" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) >>"$INITRD" || die "cannot build the initramfs"
INITRD_MB=$(du -m "$INITRD" | cut -f1)

# ------------------------------------------------------------------ boot
LOG=$TMP/console.log
APPEND="console=ttyS0 panic=-1 loglevel=4 rdinit=/init${LSM_APPEND:+ $LSM_APPEND}"
QEMU=(qemu-system-x86_64 -accel tcg -cpu max -m "$MEMORY" -smp "$SMP"
    -kernel "$KERNEL_IMAGE" -initrd "$INITRD" -append "$APPEND"
    -nodefaults -no-user-config -display none -serial stdio -no-reboot)
say "booting $KVER with systemd (tcg, $SMP vCPUs, $MEMORY MiB, initramfs ${INITRD_MB} MiB; timeout ${TIMEOUT}s)"
T_BOOT=$(now)
: >"$LOG"
timeout --kill-after=10 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$LOG" 2>"$TMP/qemu.stderr" &
QEMU_PID=$!
if [[ $VERBOSE == 1 ]]; then
    (tail -n +1 -f --pid="$QEMU_PID" "$LOG" | tr -d '\r') &
    BG_PIDS+=($!)
fi
QEMU_RC=0
wait "$QEMU_PID" || QEMU_RC=$?
QEMU_PID=
T_END=$(now)
for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
BG_PIDS=()

# ------------------------------------------------------------------ results
# The guest prints, each line carrying this run's token:
#   SDLANE-CHECK TOKEN NAME PASS|FAIL DETAIL...
#   SDLANE-FIGURES TOKEN {json}
#   SDLANE-DONE TOKEN PASSED FAILED
tr -d '\r' <"$LOG" >"$TMP/console.txt"
[[ -z $SAVE_LOG ]] || cp "$TMP/console.txt" "$SAVE_LOG" || say "warning: cannot save the console log to $SAVE_LOG"
lines() { grep -a -o "$1 $TOKEN .*" "$TMP/console.txt" | sed "s/^$1 $TOKEN //" || true; }
CHECKS=$(lines SDLANE-CHECK)
FIGURES=$(lines SDLANE-FIGURES | head -n 1)
DONE=$(lines SDLANE-DONE | head -n 1)

echo
echo "sdlane: kernel $KVER, systemd in Debian $SUITE, qemu tcg ${SMP} vCPU ${MEMORY} MiB, initramfs ${INITRD_MB} MiB"
N_PASS=0
N_FAIL=0
while IFS= read -r c; do
    [[ -n $c ]] || continue
    read -r name status detail <<<"$c"
    printf 'sdlane: %-4s %s%s\n' "$status" "$name" "${detail:+: $detail}"
    if [[ $status == PASS ]]; then N_PASS=$((N_PASS + 1)); else N_FAIL=$((N_FAIL + 1)); fi
done <<<"$CHECKS"
# Every check must have reported: the guest's script ends early (and still prints
# DONE) when, say, the package does not install.
for name in install unit-loaded package-files check-config start-ready status-line plugins-in-unit-cgroup \
    reload reload-live-key stop kill-main restart-after-kill journal; do
    if ! grep -q "^$name " <<<"$CHECKS"; then
        echo "sdlane: NOTRUN $name"
        N_FAIL=$((N_FAIL + 1))
    fi
done
[[ -z $FIGURES ]] || echo "sdlane: figures (seconds): $FIGURES"
echo "sdlane: total $(elapsed "$T_START" "$T_END") s (VM $(elapsed "$T_BOOT" "$T_END") s)"

LANE_ERROR=0
if [[ $QEMU_RC == 124 || $QEMU_RC == 137 ]]; then
    LANE_ERROR=1
    echo "sdlane: the VM did not finish within --timeout ${TIMEOUT}s; qemu was killed"
elif [[ $QEMU_RC != 0 ]]; then
    LANE_ERROR=1
    echo "sdlane: qemu exited with status $QEMU_RC:"
    sed 's/^/    /' "$TMP/qemu.stderr" | tail -n 20
fi
if [[ -z $DONE ]]; then
    LANE_ERROR=1
    echo "sdlane: the guest's checks did not finish; last console lines:"
    tail -n 60 "$TMP/console.txt" | sed 's/^/    /'
fi
if [[ $N_FAIL -gt 0 && $VERBOSE == 0 ]]; then
    echo "----- the checks' console output (last 150 lines) -----"
    grep -a -v "SDLANE-CHECK $TOKEN" "$TMP/console.txt" | grep -a -A100000 -m1 'sdlane-check:' | tail -n 150 || true
    echo "-----"
fi
echo "sdlane: $N_PASS passed, $N_FAIL failed"
[[ $LANE_ERROR == 0 ]] || exit 3
[[ $N_FAIL == 0 ]] || exit 1
exit 0
