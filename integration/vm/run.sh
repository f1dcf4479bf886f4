#!/usr/bin/env bash
# The pure cgroup v2 lane: boot a qemu VM (TCG) from a generated busybox
# initramfs holding the given test binaries, run them there, and report.
# See README.md beside this file.
set -euo pipefail

PROG=vmlane
umask 022 # the image's directories must be traversable by the tests' unprivileged users
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=integration/vm/lib.sh
source "$SCRIPT_DIR/lib.sh"

usage() {
    cat <<'EOF'
usage: integration/vm/run.sh [OPTIONS] TEST_BINARY [TEST_BINARY ...] [-- TEST_ARGS...]

Boots a qemu VM (TCG, pure cgroup v2, Debian cloud kernel) from a busybox
initramfs holding TEST_BINARY... (at their host paths) and their shared
libraries, runs each binary there (as root, in the root cgroup, with
--test-threads=1 and TEST_ARGS), and exits 0 only if every binary exited 0.

options:
  -t, --timeout SECONDS    overall limit for the VM, qemu is killed after it (default 1800)
      --test-timeout SECONDS
                           limit for each binary inside the VM (default: the overall limit
                           less 60 s, or 3/4 of it when it is 240 s or less)
  -a, --add HOST[:GUEST]   copy a file or directory (recursively) into the image, at GUEST
                           or, without it, at HOST's absolute path; shared libraries of the
                           ELF files in it are added too (repeatable; paths cannot contain ':')
  -e, --env NAME=VALUE     set an environment variable for the tests (repeatable)
  -w, --workdir DIR        working directory of the tests in the VM (default /tmp)
      --cgroup PATH        run the tests in /sys/fs/cgroup/PATH (created, controllers
                           enabled on its ancestors) instead of the root cgroup
      --user NAME:UID:GID  add a passwd/group entry (repeatable; root and nobody/nogroup
                           65534 are always there)
  -m, --memory MIB         guest memory (default 2048)
      --smp N              guest CPUs (default 2)
      --module NAME        load this kernel module (and what it depends on) before the tests
      --append ARGS        extra kernel command line (e.g. 'loglevel=7' to see the boot)
      --kernel PATH        use this kernel image instead of Debian's cloud kernel
      --compress gzip|none initramfs compression (default gzip; none boots faster for big images)
      --no-strip           keep the test binaries' debug info (default: strip --strip-debug on
                           the copies; files from --add are always copied unchanged)
      --no-switch-root     stay on the initramfs root (rootfs) instead of moving the image to a
                           tmpfs root first (pivot_root does not work on rootfs)
      --no-libtest         do not add --test-threads=1 (binaries that are not libtest harnesses)
      --log FILE           also save the VM console log to FILE
  -k, --keep               keep the temporary directory (image, console log) and print its path
  -v, --verbose            stream the VM console to stdout while it runs
  -h, --help               this text

exit status: 0 all binaries passed; 1 a binary failed or timed out; 2 usage error;
3 the lane itself failed (setup, VM boot, init, overall timeout, missing results).

environment: VMLANE_CACHE (default /var/cache/vmlane) holds the extracted kernel package.
EOF
}

# ------------------------------------------------------------------ options
TIMEOUT=1800
TEST_TIMEOUT=
MEMORY=2048
SMP=2
WORKDIR=/tmp
TEST_CGROUP=
KERNEL_IMAGE=
EXTRA_APPEND=
STRIP=1
COMPRESS=gzip
SWITCH_ROOT=1
LIBTEST=1
KEEP=0
VERBOSE=0
SAVE_LOG=
ADDS=()
ENVS=()
USERS=()
MODULES=()
BINARIES=()
TEST_ARGS=()

need_arg() { [[ $# -ge 2 ]] || usage_error "option $1 needs an argument"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [[ $# -gt 0 ]]; do
    case $1 in
    -t | --timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
    --test-timeout) need_arg "$@"; TEST_TIMEOUT=$2; shift 2 ;;
    -a | --add) need_arg "$@"; ADDS+=("$2"); shift 2 ;;
    -e | --env) need_arg "$@"; ENVS+=("$2"); shift 2 ;;
    -w | --workdir) need_arg "$@"; WORKDIR=$2; shift 2 ;;
    --cgroup) need_arg "$@"; TEST_CGROUP=$2; shift 2 ;;
    --user) need_arg "$@"; USERS+=("$2"); shift 2 ;;
    -m | --memory) need_arg "$@"; MEMORY=$2; shift 2 ;;
    --smp) need_arg "$@"; SMP=$2; shift 2 ;;
    --module) need_arg "$@"; MODULES+=("$2"); shift 2 ;;
    --append) need_arg "$@"; EXTRA_APPEND=$2; shift 2 ;;
    --kernel) need_arg "$@"; KERNEL_IMAGE=$2; shift 2 ;;
    --log) need_arg "$@"; SAVE_LOG=$2; shift 2 ;;
    --compress) need_arg "$@"; COMPRESS=$2; shift 2 ;;
    --no-strip) STRIP=0; shift ;;
    --no-libtest) LIBTEST=0; shift ;;
    --no-switch-root) SWITCH_ROOT=0; shift ;;
    -k | --keep) KEEP=1; shift ;;
    -v | --verbose) VERBOSE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; TEST_ARGS=("$@"); break ;;
    -*) usage_error "unknown option: $1" ;;
    *) BINARIES+=("$1"); shift ;;
    esac
done

[[ ${#BINARIES[@]} -gt 0 ]] || usage_error "no test binary given"
if ! is_uint "$TIMEOUT" || [[ $TIMEOUT -lt 1 ]]; then
    usage_error "--timeout must be a positive number of seconds, not '$TIMEOUT'"
fi
# By default a binary gets the overall limit less a minute (a quarter of it for
# short limits), so a hung binary is reported as TIMEOUT by the guest before
# the host has to kill the whole VM.
if [[ -z $TEST_TIMEOUT ]]; then
    if [[ $TIMEOUT -gt 240 ]]; then TEST_TIMEOUT=$((TIMEOUT - 60)); else TEST_TIMEOUT=$((TIMEOUT * 3 / 4 + 1)); fi
fi
if ! is_uint "$TEST_TIMEOUT" || [[ $TEST_TIMEOUT -lt 1 ]]; then
    usage_error "--test-timeout must be a positive number of seconds, not '$TEST_TIMEOUT'"
fi
if ! is_uint "$MEMORY" || [[ $MEMORY -lt 256 ]]; then
    usage_error "--memory must be a number of MiB >= 256, not '$MEMORY'"
fi
if ! is_uint "$SMP" || [[ $SMP -lt 1 ]]; then
    usage_error "--smp must be a number >= 1, not '$SMP'"
fi
[[ $COMPRESS == gzip || $COMPRESS == none ]] || usage_error "--compress must be gzip or none, not '$COMPRESS'"
[[ $WORKDIR == /* ]] || usage_error "--workdir must be an absolute guest path, not '$WORKDIR'"
if [[ -n $TEST_CGROUP ]]; then
    TEST_CGROUP=${TEST_CGROUP#/sys/fs/cgroup}
    TEST_CGROUP=${TEST_CGROUP#/}
    TEST_CGROUP=${TEST_CGROUP%/}
    [[ $TEST_CGROUP =~ ^[A-Za-z0-9._@-]+(/[A-Za-z0-9._@-]+)*$ ]] ||
        usage_error "--cgroup must be a relative cgroup path like 'system.slice/tests.service', not '$TEST_CGROUP'"
fi
for e in "${ENVS[@]}"; do
    [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || usage_error "--env wants NAME=VALUE, not '$e'"
done
for u in "${USERS[@]}"; do
    [[ $u =~ ^[a-z_][a-z0-9_-]*:[0-9]+:[0-9]+$ ]] || usage_error "--user wants NAME:UID:GID, not '$u'"
done

# ------------------------------------------------------------------ temp dir, cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vmlane.XXXXXX") || die "cannot create a temporary directory"
QEMU_PID=
BG_PIDS=()

# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    local rc=$?
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$QEMU_PID" 2>/dev/null || true
    fi
    local p
    for p in "${BG_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then
        say "kept the temporary directory: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
# shellcheck disable=SC2317  # invoked by trap
on_signal() {
    say "interrupted (signal $1); stopping"
    exit $((128 + $1))
}
trap cleanup EXIT
trap 'on_signal 2' INT
trap 'on_signal 15' TERM
trap 'on_signal 1' HUP

T_START=$(now)

# ------------------------------------------------------------------ 1. packages
BACKPORTS=
BUSYBOX_FROM_PACKAGE=0

missing=()
pkg_installed busybox-static || missing+=(busybox-static)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
if [[ $STRIP == 1 || ${#MODULES[@]} -gt 0 ]]; then
    command -v objcopy >/dev/null 2>&1 || missing+=(binutils)
fi
if pkg_installed busybox && ! pkg_installed busybox-static; then
    # busybox-static would replace the host's busybox: fetch it for the image only.
    missing=("${missing[@]/busybox-static/}")
    BUSYBOX_FROM_PACKAGE=1
fi
read -r -a missing <<<"${missing[*]}"
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"

ensure_qemu

BUSYBOX=/bin/busybox
if [[ $BUSYBOX_FROM_PACKAGE == 1 ]]; then
    bb_dir=$(fetch_package busybox-static)
    prune_cache "$bb_dir" 'busybox-static_*'
    BUSYBOX=$bb_dir/bin/busybox
    [[ -x $BUSYBOX ]] || BUSYBOX=$bb_dir/usr/bin/busybox
fi
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found after installing busybox-static"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the package busybox-static must provide it"
fi
find_kernel

# ------------------------------------------------------------------ 2. the initramfs
STAGE=$TMP/root
mkdir -p "$STAGE"
declare -A HAVE_LIB=()

is_elf() {
    local magic=
    LC_ALL=C IFS= read -r -d '' -n 4 magic <"$1" 2>/dev/null || true
    [[ $magic == $'\x7fELF' ]]
}

# Add the shared libraries (and the dynamic loader) FILE needs, at the same paths.
add_libs_of() {
    local file=$1 out line lib
    if ! out=$(ldd "$file" 2>&1); then
        # Static, foreign-architecture or otherwise not loadable here: nothing to add.
        return 0
    fi
    while IFS= read -r line; do
        line=${line#"${line%%[![:space:]]*}"}
        case $line in
        *"=> not found"*)
            die "$file needs ${line%% =>*}, which ldd did not find on the host"
            ;;
        *"=> /"*)
            lib=${line#*=> }
            lib=${lib%% (*}
            ;;
        /*)
            lib=${line%% (*}
            ;;
        *) continue ;;
        esac
        [[ $lib == "$STAGE"/* ]] && continue # found inside the image ($ORIGIN)
        [[ -n ${HAVE_LIB[$lib]:-} ]] && continue
        HAVE_LIB[$lib]=1
        mkdir -p "$STAGE$(dirname "$lib")"
        cp -L "$lib" "$STAGE$lib" || die "cannot copy $lib (needed by $file)"
    done <<<"$out"
}

# Add the libraries of an ELF file in the image; strip its debug info when
# asked (test binaries only: added files stay byte-for-byte, since the
# product checks digests and signatures of the binaries it launches).
process_elf() {
    local file=$1 strip=${2:-0}
    if [[ $strip == 1 && $STRIP == 1 ]]; then
        strip --strip-debug "$file" 2>/dev/null || true
    fi
    add_libs_of "$file"
}

check_guest_path() {
    case $1 in
    /) die "$2: cannot place anything at the guest's /" ;;
    /proc | /proc/* | /sys | /sys/* | /dev | /dev/*)
        die "$2: the guest path $1 would be hidden by a mount made at boot" ;;
    /init | /vmlane | /vmlane/*)
        die "$2: the guest path $1 is reserved for the lane" ;;
    /*) ;;
    *) die "$2: the guest path must be absolute, not '$1'" ;;
    esac
}

# Absolute host path with the directory resolved, the last component kept.
abs_path() {
    local d
    d=$(cd "$(dirname "$1")" && pwd -P) || return 1
    printf '%s/%s\n' "${d%/}" "$(basename "$1")"
}

# add HOST GUEST WHAT [STRIP]: copy a file or a directory tree into the image.
add_to_image() {
    local host=$1 guest=$2 what=$3 strip=${4:-0} f
    check_guest_path "$guest" "$what"
    if [[ -d $host ]]; then
        mkdir -p "$STAGE$guest"
        cp -a "$host/." "$STAGE$guest/" || die "$what: cannot copy the directory $host"
        while IFS= read -r -d '' f; do
            if is_elf "$f"; then
                process_elf "$f"
            fi
        done < <(find "$STAGE$guest" -type f -print0)
    elif [[ -e $host ]]; then
        [[ -d $STAGE$guest ]] && die "$what: $guest is already a directory in the image"
        mkdir -p "$STAGE$(dirname "$guest")"
        # --remove-destination: where the image has a symlink at $guest (a busybox
        # applet such as /bin/true -> /bin/busybox, an absolute link), cp would
        # otherwise write through it onto the host's own file.
        cp -L --remove-destination --preserve=mode,timestamps "$host" "$STAGE$guest" ||
            die "$what: cannot copy $host"
        if is_elf "$STAGE$guest"; then
            process_elf "$STAGE$guest" "$strip"
        fi
    else
        die "$what: $host does not exist"
    fi
}

T_BUILD=$(now)

# The skeleton; mirror the host's merged-/usr links so library paths agree.
for d in bin sbin lib lib32 lib64 libx32; do
    if [[ -L /$d ]]; then
        link_target=$(readlink "/$d")
        ln -s "${link_target#/}" "$STAGE/$d"
        mkdir -p "$STAGE/${link_target#/}"
    elif [[ $d == bin || $d == sbin ]]; then
        mkdir -p "$STAGE/$d"
    fi
done
mkdir -p "$STAGE"/{dev,proc,sys,tmp,run,etc,root,vmlane,usr/bin,usr/sbin,var/tmp}
chmod 1777 "$STAGE/tmp" "$STAGE/var/tmp"
chmod 0700 "$STAGE/root"
if [[ $EUID == 0 ]]; then
    mknod -m 600 "$STAGE/dev/console" c 5 1
    mknod -m 666 "$STAGE/dev/null" c 1 3
fi

# busybox and its applets.
cp "$BUSYBOX" "$STAGE/bin/busybox"
while IFS= read -r applet; do
    [[ -n $applet && $applet != linuxrc && $applet == */* ]] || continue
    [[ -e $STAGE/$applet || -L $STAGE/$applet ]] && continue
    mkdir -p "$STAGE/$(dirname "$applet")"
    ln -s /bin/busybox "$STAGE/$applet"
done < <("$BUSYBOX" --list-full)
for applet in sh mount ip poweroff insmod kill awk readlink find sort cp mv rmdir sleep hostname; do
    [[ -e $STAGE/bin/$applet || -e $STAGE/sbin/$applet || -e $STAGE/usr/bin/$applet || -e $STAGE/usr/sbin/$applet ]] ||
        die "busybox ($BUSYBOX) has no '$applet' applet"
done

# Users, groups and the other files programs look up.
{
    echo "root:x:0:0:root:/root:/bin/sh"
    echo "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"
} >"$STAGE/etc/passwd"
{
    echo "root:x:0:"
    echo "tty:x:5:"
    echo "nogroup:x:65534:"
} >"$STAGE/etc/group"
for u in "${USERS[@]}"; do
    IFS=: read -r uname uid gid <<<"$u"
    echo "$uname:x:$uid:$gid:$uname:/nonexistent:/usr/sbin/nologin" >>"$STAGE/etc/passwd"
    grep -q ":x:$gid:" "$STAGE/etc/group" || echo "$uname:x:$gid:" >>"$STAGE/etc/group"
done
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tvmlane\n' >"$STAGE/etc/hosts"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$STAGE/etc/nsswitch.conf"
echo vmlane >"$STAGE/etc/hostname"
: >"$STAGE/etc/fstab"

# Kernel modules asked for, with what they depend on, in load order.
MODULE_PATHS=()
if [[ ${#MODULES[@]} -gt 0 ]]; then
    MODDIR=$KROOT/lib/modules/$KVER
    [[ -d $MODDIR ]] || die "--module: no module tree $MODDIR for kernel $KVER"
    declare -A MOD_DONE=()
    find_module() {
        local n=${1//-/_} alt=${1//_/-}
        find "$MODDIR" \( -name "$n.ko" -o -name "$n.ko.xz" -o -name "$n.ko.zst" -o -name "$n.ko.gz" \
            -o -name "$alt.ko" -o -name "$alt.ko.xz" -o -name "$alt.ko.zst" -o -name "$alt.ko.gz" \) -print -quit
    }
    add_module() {
        local name=$1 file key plain deps d
        key=${name//-/_}
        [[ -n ${MOD_DONE[$key]:-} ]] && return 0
        MOD_DONE[$key]=1
        file=$(find_module "$name")
        if [[ -z $file ]]; then
            if grep -qE "/${key}\.ko|/${name}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
                say "module $name is built into $KVER; nothing to load"
                return 0
            fi
            die "--module: no module $name in $MODDIR"
        fi
        plain=$TMP/mod-$key.ko
        case $file in
        *.ko) cp "$file" "$plain" ;;
        *.ko.xz) xz -dc "$file" >"$plain" || die "cannot decompress $file (xz)" ;;
        *.ko.zst) zstd -qdc "$file" >"$plain" || die "cannot decompress $file (zstd)" ;;
        *.ko.gz) gzip -dc "$file" >"$plain" || die "cannot decompress $file (gzip)" ;;
        esac
        deps=$(objcopy -O binary --only-section=.modinfo "$plain" /dev/stdout 2>/dev/null |
            tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' ')
        for d in $deps; do add_module "$d"; done
        mkdir -p "$STAGE/vmlane/modules"
        cp "$plain" "$STAGE/vmlane/modules/$key.ko"
        MODULE_PATHS+=("/vmlane/modules/$key.ko")
    }
    for m in "${MODULES[@]}"; do add_module "$m"; done
fi

# Files and directories asked for.
for spec in "${ADDS[@]}"; do
    if [[ $spec == *:* ]]; then
        host=${spec%%:*}
        guest=${spec#*:}
        [[ -n $host && -n $guest ]] || usage_error "--add wants HOST[:GUEST], not '$spec'"
    else
        host=$spec
        [[ -e $host ]] || die "--add $spec: $host does not exist"
        guest=$(abs_path "$host") || die "--add $spec: cannot resolve $host"
    fi
    add_to_image "$host" "$guest" "--add $spec"
done

# The test binaries, at their host paths (so compiled-in paths such as
# env!("CARGO_BIN_EXE_...") or CARGO_MANIFEST_DIR stay valid).
declare -A NAME_USED=()
TEST_NAMES=()
TEST_GUEST_PATHS=()
for b in "${BINARIES[@]}"; do
    [[ -f $b ]] || die "test binary $b does not exist"
    [[ -x $b ]] || die "test binary $b is not executable"
    is_elf "$b" || die "test binary $b is not an ELF file"
    guest=$(abs_path "$b")
    name=$(basename "$b")
    name=${name//[^A-Za-z0-9._+-]/_}
    if [[ -n ${NAME_USED[$name]:-} ]]; then
        i=2
        while [[ -n ${NAME_USED[$name-$i]:-} ]]; do i=$((i + 1)); done
        name=$name-$i
    fi
    NAME_USED[$name]=1
    TEST_NAMES+=("$name")
    TEST_GUEST_PATHS+=("$guest")
    add_to_image "$b" "$guest" "test binary $b" 1
done

# The init and its settings.
TOKEN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
args=()
if [[ $LIBTEST == 1 ]]; then
    has_threads=0
    for a in "${TEST_ARGS[@]}"; do
        [[ $a == --test-threads || $a == --test-threads=* ]] && has_threads=1
    done
    [[ $has_threads == 1 ]] || args+=(--test-threads=1)
fi
args+=("${TEST_ARGS[@]}")
{
    echo "# generated by integration/vm/run.sh"
    echo "VMLANE_TOKEN=$(sq "$TOKEN")"
    echo "VMLANE_TEST_TIMEOUT=$(sq "$TEST_TIMEOUT")"
    echo "VMLANE_WORKDIR=$(sq "$WORKDIR")"
    echo "VMLANE_CGROUP=$(sq "$TEST_CGROUP")"
    echo "VMLANE_MODULES=$(sq "${MODULE_PATHS[*]}")"
    for e in "${ENVS[@]}"; do
        echo "export ${e%%=*}=$(sq "${e#*=}")"
    done
    printf 'set --'
    for a in "${args[@]}"; do printf ' %s' "$(sq "$a")"; done
    printf '\n'
} >"$STAGE/vmlane/config.sh"
for i in "${!TEST_NAMES[@]}"; do
    printf '%s %s\n' "${TEST_NAMES[$i]}" "${TEST_GUEST_PATHS[$i]}"
done >"$STAGE/vmlane/tests"
[[ $SWITCH_ROOT == 0 ]] || : >"$STAGE/vmlane/switch-root"
install -m 0755 "$SCRIPT_DIR/init.sh" "$STAGE/init"
chmod 0755 "$STAGE"

make_cpio() {
    (cd "$STAGE" && find . -print0 | LC_ALL=C sort -z |
        cpio --null --create --format=newc --owner=0:0 --quiet)
}
if [[ $COMPRESS == gzip ]]; then
    INITRD=$TMP/initrd.gz
    make_cpio | gzip -1 >"$INITRD" || die "building the initramfs (cpio | gzip) failed"
else
    INITRD=$TMP/initrd.cpio
    make_cpio >"$INITRD" || die "building the initramfs (cpio) failed"
fi
IMAGE_MB=$(du -sm "$STAGE" | cut -f1)
INITRD_MB=$(du -m "$INITRD" | cut -f1)
T_BOOT=$(now)
say "initramfs: ${IMAGE_MB} MiB unpacked, ${INITRD_MB} MiB as $(basename "$INITRD"), built in $(elapsed "$T_BUILD" "$T_BOOT") s"

# ------------------------------------------------------------------ 4. boot
LOG=$TMP/console.log
APPEND="console=ttyS0 panic=-1 loglevel=4 rdinit=/init${LSM_APPEND:+ $LSM_APPEND}${EXTRA_APPEND:+ $EXTRA_APPEND}"
QEMU=(qemu-system-x86_64 -accel tcg -cpu max -m "$MEMORY" -smp "$SMP"
    -kernel "$KERNEL_IMAGE" -initrd "$INITRD" -append "$APPEND"
    -nodefaults -no-user-config -display none -serial stdio -no-reboot)
say "booting $KVER (tcg, $SMP vCPUs, $MEMORY MiB; ${#TEST_NAMES[@]} binaries; timeout ${TIMEOUT}s)"
: >"$LOG"
timeout --kill-after=10 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$LOG" 2>"$TMP/qemu.stderr" &
QEMU_PID=$!

# Note when the guest's init starts (for the boot time), and stream if asked.
(
    set +o pipefail # tail ends on SIGPIPE once grep has seen the line
    if tail -n +1 -f --pid="$QEMU_PID" "$LOG" 2>/dev/null | grep -a -m1 -q "VMLANE-BOOTED $TOKEN"; then
        now >"$TMP/booted-at"
    fi
) &
BG_PIDS+=($!)
if [[ $VERBOSE == 1 ]]; then
    (tail -n +1 -f --pid="$QEMU_PID" "$LOG" | tr -d '\r') &
    BG_PIDS+=($!)
fi

QEMU_RC=0
wait "$QEMU_PID" || QEMU_RC=$?
QEMU_PID=
T_END=$(now)
for p in "${BG_PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
done
BG_PIDS=()

# ------------------------------------------------------------------ results
tr -d '\r' <"$LOG" >"$TMP/console.txt"
[[ -z $SAVE_LOG ]] || cp "$TMP/console.txt" "$SAVE_LOG" || say "warning: cannot save the console log to $SAVE_LOG"

field_line() { grep -a -o "$1 $TOKEN .*" "$TMP/console.txt" || true; }
RESULTS=$(grep -a -o "VMLANE-RESULT $TOKEN [^ ]* [A-Z]* -\{0,1\}[0-9]* [0-9.]*" "$TMP/console.txt" || true)
BOOTED=$(field_line VMLANE-BOOTED | head -n 1)
DONE=$(field_line VMLANE-DONE | head -n 1)

# Print a binary's console output (between its BEGIN and its RESULT).
show_output() {
    local name=$1
    echo "----- console output of $name (last 200 lines) -----"
    awk -v b="VMLANE-BEGIN $TOKEN $name" -v r="VMLANE-RESULT $TOKEN $name " '
        index($0, b) { on = 1; next }
        on && index($0, r) { exit }
        on { print }' "$TMP/console.txt" | tail -n 200
    echo "----- end of $name -----"
}

echo
echo "vmlane: kernel $KVER, qemu tcg ${SMP} vCPU ${MEMORY} MiB, initramfs ${INITRD_MB} MiB"
if [[ -n $BOOTED ]]; then
    read -r _ _ guest_uptime _ <<<"$BOOTED"
    boot_wall='?'
    [[ -s $TMP/booted-at ]] && boot_wall=$(elapsed "$T_BOOT" "$(cat "$TMP/booted-at")")
    echo "vmlane: guest init started ${boot_wall} s after qemu started (kernel uptime ${guest_uptime} s)"
fi
while IFS= read -r l; do
    [[ -n $l ]] && echo "vmlane: ${l#VMLANE-INFO "$TOKEN" }"
done < <(field_line VMLANE-INFO)
while IFS= read -r l; do
    [[ -n $l ]] && echo "vmlane: note: ${l#VMLANE-NOTE "$TOKEN" }"
done < <(field_line VMLANE-NOTE)

N_PASS=0
N_FAIL=0
LANE_ERROR=0
FAILED_NAMES=()
if grep -q "^VMLANE-RESULT $TOKEN init " <<<"$RESULTS"; then
    LANE_ERROR=1
    echo "vmlane: FAIL  the VM's init failed:"
    grep -a "vmlane-init: FATAL" "$TMP/console.txt" | sed 's/^/    /' || true
fi
for i in "${!TEST_NAMES[@]}"; do
    name=${TEST_NAMES[$i]}
    r=$(grep "^VMLANE-RESULT $TOKEN $name " <<<"$RESULTS" | head -n 1 || true)
    if [[ -z $r ]]; then
        N_FAIL=$((N_FAIL + 1))
        if grep -a -q "VMLANE-BEGIN $TOKEN $name\$" "$TMP/console.txt"; then
            FAILED_NAMES+=("$name")
            echo "vmlane: NORESULT $name (started, but the VM ended before it reported)"
        else
            echo "vmlane: NOTRUN $name (the VM ended before it started)"
        fi
        continue
    fi
    read -r _ _ _ status code secs <<<"$r"
    case $status in
    PASS) N_PASS=$((N_PASS + 1)); printf 'vmlane: PASS  %s (exit 0, %s s)\n' "$name" "$secs" ;;
    TIMEOUT) N_FAIL=$((N_FAIL + 1)); FAILED_NAMES+=("$name")
        printf 'vmlane: TIMEOUT %s (killed after %s s, --test-timeout %s)\n' "$name" "$secs" "$TEST_TIMEOUT" ;;
    *) N_FAIL=$((N_FAIL + 1)); FAILED_NAMES+=("$name")
        printf 'vmlane: FAIL  %s (exit %s, %s s)\n' "$name" "$code" "$secs" ;;
    esac
done

if [[ $QEMU_RC == 124 || $QEMU_RC == 137 ]]; then
    LANE_ERROR=1
    echo "vmlane: the VM did not finish within --timeout ${TIMEOUT}s; qemu was killed"
elif [[ $QEMU_RC != 0 ]]; then
    LANE_ERROR=1
    echo "vmlane: qemu exited with status $QEMU_RC:"
    sed 's/^/    /' "$TMP/qemu.stderr" | tail -n 20
elif [[ -z $BOOTED ]]; then
    LANE_ERROR=1
    echo "vmlane: the guest's init never started; last console lines:"
    tail -n 40 "$TMP/console.txt" | sed 's/^/    /'
elif [[ -z $DONE ]]; then
    LANE_ERROR=1
    echo "vmlane: the guest stopped before its init finished; last console lines:"
    tail -n 40 "$TMP/console.txt" | sed 's/^/    /'
fi

if [[ $VERBOSE == 0 ]]; then
    for name in "${FAILED_NAMES[@]}"; do
        show_output "$name"
    done
fi
[[ $KEEP == 1 ]] && echo "vmlane: console log: $LOG"

echo "vmlane: total $(elapsed "$T_START" "$T_END") s (image $(elapsed "$T_BUILD" "$T_BOOT") s, VM $(elapsed "$T_BOOT" "$T_END") s)"
echo "vmlane: $N_PASS passed, $N_FAIL failed"

if [[ $LANE_ERROR == 1 ]]; then
    exit 3
elif [[ $N_FAIL -gt 0 ]]; then
    exit 1
fi
exit 0
