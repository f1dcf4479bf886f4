# Shared by the VM lanes (run.sh: the busybox lane; systemd.sh: the systemd lane):
# their messages and timing, installing host packages without removing any, and
# finding (or fetching into $VMLANE_CACHE) the Debian cloud kernel both boot.
# Sourced first; expects $PROG, and by the time packages or the kernel are looked at,
# $TMP and, for find_kernel, $KERNEL_IMAGE (empty: the cloud kernel).
# shellcheck shell=bash
# shellcheck disable=SC2034  # KROOT, KVER, KCONFIG, LSM_APPEND are for the sourcing lane

# ------------------------------------------------------------------ messages
say() { echo "$PROG: $*" >&2; }
die() {
    echo "$PROG: error: $*" >&2
    exit 3
}
usage_error() {
    echo "$PROG: $*" >&2
    echo "$PROG: see '$0 --help'" >&2
    exit 2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ------------------------------------------------------------------ packages
# Installs never remove a host package (--no-remove): if one would have to go,
# the lane says so and stops.
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
APT_OPTS=()

apt_update() {
    [[ $APT_UPDATED == 1 ]] && return 0
    say "apt-get update"
    apt-get "${APT_OPTS[@]}" update -qq >>"$TMP/apt.log" 2>&1 || {
        tail -n 20 "$TMP/apt.log" >&2
        die "apt-get update failed (see above)"
    }
    APT_UPDATED=1
}

# apt_install [-t RELEASE] PACKAGE...
apt_install() {
    local target=()
    if [[ $1 == -t ]]; then
        target=(-t "$2")
        shift 2
    fi
    [[ $EUID == 0 ]] || die "missing packages: $*; run as root or install them first"
    say "installing: $*${target[*]:+ (from ${target[1]})}"
    local cmd=(apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends --no-remove "${target[@]}" "$@")
    if ! "${cmd[@]}" >>"$TMP/apt.log" 2>&1; then
        apt_update
        "${cmd[@]}" >>"$TMP/apt.log" 2>&1 || {
            tail -n 20 "$TMP/apt.log" >&2
            die "apt-get install $* failed (see above; the lane never removes host packages)"
        }
    fi
}

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

# Use the release's backports suite as well, from a private apt state (the
# host's sources and lists are left as they are).
use_backports() {
    local codename uri signed d f
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell the Debian release from /etc/os-release"
    # The Debian mirror the host already uses for its release.
    uri=$(awk -v c="$codename" '
        /^URIs:/ { u = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
        /^Signed-By:/ { k = $2 }
        /^[[:space:]]*$/ { if (s && u) { print u, k; exit } u = ""; s = 0; k = "" }
        END { if (s && u) print u, k }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    if [[ -z $uri ]]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v c="$codename" '$1 == "deb" { for (i = 2; i < NF; i++) if ($(i + 1) == c && $i !~ /^\[/) { print $i; exit } }')
    fi
    [[ -n $uri ]] || die "no apt source for Debian $codename found to derive $codename-backports from"
    read -r uri signed <<<"$uri"
    d=$TMP/apt-backports
    mkdir -p "$d/parts" "$d/lists/partial"
    : >"$d/sources.list"
    [[ -f /etc/apt/sources.list ]] && cp /etc/apt/sources.list "$d/sources.list"
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && cp "$f" "$d/parts/"
    done
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: $codename-backports"
        echo "Components: main"
        [[ -z $signed ]] || echo "Signed-By: $signed"
    } >"$d/parts/vmlane-backports.sources"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$d/sources.list" -o "Dir::Etc::sourceparts=$d/parts" -o "Dir::State::lists=$d/lists")
    APT_UPDATED=0
    apt_update
    BACKPORTS=$codename-backports
}

# Installs qemu-system-x86 when missing.
ensure_qemu() {
    if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
        utils_version=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
        if pkg_installed qemu-utils && [[ $utils_version == *~bpo* ]]; then
            # The host has qemu-utils from backports, which Breaks the release's own
            # qemu-system-common: take qemu-system-x86 from backports too.
            use_backports
            apt_install -t "$BACKPORTS" qemu-system-x86
        else
            apt_install qemu-system-x86
        fi
    fi
    command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 not found after installing qemu-system-x86"
}

# Unpack a package's files under $CACHE without installing it; prints the directory.
fetch_package() {
    local pkg=$1 ver dest deb
    ver=$(apt-cache "${APT_OPTS[@]}" policy "$pkg" | awk '$1 == "Candidate:" { print $2; exit }')
    if [[ -z $ver || $ver == "(none)" ]]; then
        apt_update
        ver=$(apt-cache "${APT_OPTS[@]}" policy "$pkg" | awk '$1 == "Candidate:" { print $2; exit }')
    fi
    [[ -n $ver && $ver != "(none)" ]] || die "no installable version of $pkg"
    dest=$CACHE/${pkg}_${ver}
    if [[ ! -f $dest/.complete ]]; then
        say "fetching $pkg $ver into $CACHE"
        mkdir -p "$CACHE" "$TMP/deb" || die "cannot create $CACHE"
        rm -f "$TMP"/deb/*.deb
        (cd "$TMP/deb" && apt-get "${APT_OPTS[@]}" download -q "$pkg=$ver" >>"$TMP/apt.log" 2>&1) || {
            tail -n 20 "$TMP/apt.log" >&2
            die "apt-get download $pkg=$ver failed (see above)"
        }
        deb=$(find "$TMP/deb" -name '*.deb' -print -quit)
        [[ -n $deb ]] || die "apt-get download $pkg left no .deb file"
        local partial=$dest.partial.$$
        rm -rf "$partial"
        dpkg-deb -x "$deb" "$partial" || die "dpkg-deb -x $deb failed"
        touch "$partial/.complete"
        if [[ -f $dest/.complete ]]; then
            rm -rf "$partial" # another run was quicker
        else
            rm -rf "$dest"
            mv "$partial" "$dest"
        fi
        rm -f "$deb"
    fi
    printf '%s\n' "$dest"
}

# Remove cached unpacked packages matching GLOB other than KEEP.
prune_cache() {
    local keep=$1 glob=$2 d
    for d in "$CACHE"/$glob; do
        [[ -d $d && $d != "$keep" && $d != *.partial.* ]] && rm -rf "$d"
    done
    return 0
}
CACHE=${VMLANE_CACHE:-/var/cache/vmlane}

# ------------------------------------------------------------------ kernel
KROOT=        # a tree with boot/ and lib/modules/ (/ for an installed kernel)
KVER=
KCONFIG=

fetch_cloud_kernel() {
    # Debian's linux-image-cloud-amd64 is a metapackage; fetch the image
    # package it points to and unpack it under $CACHE, so the host's own
    # /boot, initramfs-tools and boot loader are left alone.
    local pkg
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    if [[ -z $pkg ]]; then
        apt_update
        pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    fi
    [[ -n $pkg ]] || die "apt-cache knows no linux-image-cloud-amd64 (is this Debian amd64 with main enabled?)"
    KROOT=$(fetch_package "$pkg")
    prune_cache "$KROOT" 'linux-image-*-cloud-amd64_*'
}

# Sets KERNEL_IMAGE (the cloud kernel unless given), KROOT, KVER, KCONFIG and
# LSM_APPEND, and checks the kernel's configuration for what the lanes rely on.
find_kernel() {
    if [[ -n $KERNEL_IMAGE ]]; then
        [[ -f $KERNEL_IMAGE ]] || die "--kernel: $KERNEL_IMAGE does not exist"
        KERNEL_IMAGE=$(cd "$(dirname "$KERNEL_IMAGE")" && pwd -P)/$(basename "$KERNEL_IMAGE")
        KVER=$(basename "$KERNEL_IMAGE")
        KVER=${KVER#vmlinuz-}
        KROOT=$(dirname "$(dirname "$KERNEL_IMAGE")")
    else
        shopt -s nullglob
        installed=(/boot/vmlinuz-*-cloud-amd64)
        shopt -u nullglob
        if [[ ${#installed[@]} -gt 0 ]]; then
            KERNEL_IMAGE=$(printf '%s\n' "${installed[@]}" | sort -V | tail -n 1)
            KROOT=/
        else
            fetch_cloud_kernel
            shopt -s nullglob
            images=("$KROOT"/boot/vmlinuz-*)
            shopt -u nullglob
            [[ ${#images[@]} -gt 0 ]] || die "the kernel package unpacked in $KROOT has no boot/vmlinuz-*"
            KERNEL_IMAGE=$(printf '%s\n' "${images[@]}" | sort -V | tail -n 1)
        fi
        KVER=$(basename "$KERNEL_IMAGE")
        KVER=${KVER#vmlinuz-}
    fi
    KROOT=${KROOT%/}
    [[ -f $KROOT/boot/config-$KVER ]] && KCONFIG=$KROOT/boot/config-$KVER
    [[ -r $KERNEL_IMAGE ]] || die "cannot read the kernel image $KERNEL_IMAGE"

    # Check the kernel's configuration for what the lane relies on.
    LSM_APPEND=
    if [[ -n $KCONFIG ]]; then
        kconf() { sed -n "s/^$1=//p" "$KCONFIG" | tr -d '"'; }
        for opt in CGROUPS MEMCG CGROUP_PIDS CGROUP_SCHED CFS_BANDWIDTH BLK_CGROUP SECCOMP SECCOMP_FILTER \
            USER_NS PID_NS NET_NS IPC_NS UTS_NS SECURITY_LANDLOCK DEVTMPFS TMPFS BLK_DEV_INITRD RD_GZIP \
            SERIAL_8250_CONSOLE BINFMT_SCRIPT UNIX; do
            val=$(kconf "CONFIG_$opt")
            case $val in
            y) ;;
            m) die "$KERNEL_IMAGE: CONFIG_$opt is a module; the lane needs it built in" ;;
            *) die "$KERNEL_IMAGE: CONFIG_$opt is not set ($KCONFIG); the lane needs it" ;;
            esac
        done
        default_lsm=$(kconf CONFIG_LSM)
        case ",$default_lsm," in
        *,landlock,*) ;;
        *) LSM_APPEND="lsm=landlock${default_lsm:+,$default_lsm}" ;;
        esac
    else
        say "warning: no config-$KVER beside $KERNEL_IMAGE; not checking the kernel's options"
    fi
}
