# shellcheck shell=bash
# Helpers shared by scripts/demo.sh, bench.sh, bench-cri.sh and bench-pct.sh (sourced, not executed).
# A private containerd (own root/state/socket under a temp dir, CRI disabled) with the shim build
# directory first on its PATH, and a busybox-static rootfs. Never touches the system containerd.
# For the pct path, start_shape first: containerd, ctr and the double then run inside a host
# shaped like a Proxmox VE node (pve-shape, see crates/pve-double/README.md).

REPO_ROOT=${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SHIM_DIR=${PVELXC_SHIM_DIR:-$REPO_ROOT/target/release}
# shellcheck disable=SC2034 # used by the scripts that source this file
CONTAINER_PATH_ENV="PATH=/bin:/sbin:/usr/bin:/usr/sbin"

die() { echo "error: $*" >&2; exit 1; }

# prefer_installed_build: unless PVELXC_SHIM_DIR says otherwise, measure the build that
# scripts/setup.sh installs (static, profile `dist`) when it has been built.
prefer_installed_build() {
    local dist=$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist
    if [ -z "${PVELXC_SHIM_DIR:-}" ] && [ -x "$dist/containerd-shim-pvelxc-v2" ]; then
        SHIM_DIR=$dist
    fi
}

# hugetlb fix for crun on cgroup v1/hybrid hosts (crun refuses hybrid mode without it).
hugetlb_fix() {
    if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
        mkdir -p /sys/fs/cgroup/hugetlb
        mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
    fi
}

# make_rootfs DIR: busybox-static rootfs with root/nobody.
make_rootfs() {
    local r=$1 bb
    bb=$(command -v busybox || true)
    [ -x /bin/busybox ] && bb=/bin/busybox
    [ -n "$bb" ] || die "busybox not found (apt-get install busybox-static)"
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,etc,tmp,root,run,var}
    cp "$bb" "$r/bin/busybox"
    chroot "$r" /bin/busybox --install -s
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
    chmod 1777 "$r/tmp"
}

# Command prefix running a command inside the host shape (empty: no shape; set by start_shape).
SHAPE=()
SHAPE_START=()

# start_shape PROFILE [FOREIGN_FROM FOREIGN]: a fresh double root SHAPE_ROOT (0755, under /tmp)
# whose shape the next start_containerd starts containerd in (pve-shape initialises it at its
# first exec with the profile pve8|pve9.0|pve9.1 and FOREIGN guests of other nodes from VMID
# FOREIGN_FROM up). Sets SHAPE_ROOT, SHAPE (prefix for later commands) and PVE_DOUBLE_ROOT.
start_shape() {
    local profile=$1 from=${2:-} n=${3:-0}
    case $profile in pve8 | pve9.0 | pve9.1) ;; *) die "unknown PVE profile '$profile' (pve8, pve9.0, pve9.1)" ;; esac
    [ -x "$SHIM_DIR/pve-shape" ] || die "no $SHIM_DIR/pve-shape (cargo build --release -p pve-double)"
    SHAPE_ROOT=$(mktemp -d /tmp/pvs-XXXXXX)
    chmod 755 "$SHAPE_ROOT"
    export PVE_DOUBLE_ROOT=$SHAPE_ROOT
    SHAPE=("$SHIM_DIR/pve-shape" --root "$SHAPE_ROOT" exec --)
    SHAPE_START=("$SHIM_DIR/pve-shape" --root "$SHAPE_ROOT" --profile "$profile")
    [ -z "$from" ] || SHAPE_START+=(--foreign-from "$from" --foreign "$n")
    SHAPE_START+=(exec --)
}

# stop_shape: destroy the double's CTs still there, stop the shape (pve-shape stop: its CTs and
# service manager, its namespace), remove SHAPE_ROOT. Call after stop_containerd.
stop_shape() {
    [ -n "${SHAPE_ROOT:-}" ] || return 0
    local v rc=0
    if [ -e "$SHAPE_ROOT/ns/mnt" ]; then
        for v in $(timeout 60 "${SHAPE[@]}" "$SHIM_DIR/pct" list 2>/dev/null | awk 'NR > 1 {print $1}'); do
            timeout 60 "${SHAPE[@]}" "$SHIM_DIR/pct" destroy "$v" --force 1 --purge 1 >/dev/null 2>&1 || true
        done
    fi
    "$SHIM_DIR/pve-shape" --root "$SHAPE_ROOT" stop || rc=$?
    if [ -n "${PVELXC_KEEP:-}" ]; then
        echo "kept $SHAPE_ROOT" >&2
    elif [ "$rc" = 0 ]; then
        rm -rf --one-file-system "$SHAPE_ROOT"
    else
        echo "pve-shape stop failed ($rc): left $SHAPE_ROOT" >&2
    fi
    SHAPE=() SHAPE_START=() SHAPE_ROOT=
    unset PVE_DOUBLE_ROOT
    return "$rc"
}

# start_containerd: sets PC_DIR, PC_SOCK, PC_NS, PC_PID and CTR (an array: ctr --address .. -n ..).
# After start_shape, containerd (PC_PID: pve-shape execs it) and CTR run inside the shape.
start_containerd() {
    PC_DIR=$(mktemp -d /tmp/pvc-XXXXXX)
    PC_SOCK=$PC_DIR/c.sock
    PC_NS=${PC_NS:-pvc-$$}
    cat >"$PC_DIR/config.toml" <<TOML
version = 2
root = "$PC_DIR/root"
state = "$PC_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]
[grpc]
  address = "$PC_SOCK"
[ttrpc]
  address = ""
TOML
    ${SHAPE_START[@]+"${SHAPE_START[@]}"} env PATH="$SHIM_DIR:$PATH" \
        containerd --config "$PC_DIR/config.toml" >"$PC_DIR/containerd.log" 2>&1 &
    PC_PID=$!
    CTR=(${SHAPE[@]+"${SHAPE[@]}"} ctr --address "$PC_SOCK" -n "$PC_NS")
    for _ in $(seq 200); do
        if [ -S "$PC_SOCK" ] && "${CTR[@]}" version >/dev/null 2>&1; then return 0; fi
        kill -0 "$PC_PID" 2>/dev/null || { tail -20 "$PC_DIR/containerd.log" >&2; die "containerd exited"; }
        sleep 0.1
    done
    tail -20 "$PC_DIR/containerd.log" >&2
    die "containerd socket $PC_SOCK not ready after 20s"
}

# stop_containerd: delete every task/container of PC_NS, stop containerd, remove PC_DIR.
stop_containerd() {
    [ -n "${PC_DIR:-}" ] || return 0
    if [ -n "${PC_PID:-}" ] && kill -0 "$PC_PID" 2>/dev/null; then
        local t c
        for t in $(timeout 20 "${CTR[@]}" task ls -q 2>/dev/null); do
            timeout 20 "${CTR[@]}" task kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
            timeout 20 "${CTR[@]}" task rm -f "$t" >/dev/null 2>&1 || true
        done
        for c in $(timeout 20 "${CTR[@]}" containers ls -q 2>/dev/null); do
            timeout 20 "${CTR[@]}" containers rm "$c" >/dev/null 2>&1 || true
        done
        kill -TERM "$PC_PID" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$PC_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PC_PID" 2>/dev/null || true
        wait "$PC_PID" 2>/dev/null || true
    fi
    # unmount leftovers (deepest first; inside the shape, where containerd mounted), then remove
    # shellcheck disable=SC2016 # an awk program
    ${SHAPE[@]+"${SHAPE[@]}"} awk -v d="$PC_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo |
        sort -r | while read -r m; do
            ${SHAPE[@]+"${SHAPE[@]}"} umount -l "$m" 2>/dev/null || true
        done
    # per-namespace runtime roots (runc.v2: /run/containerd/runc/NS, ours: /run/pvelxc/crun/NS)
    local d
    for d in /run/*/"$PC_NS" /run/*/*/"$PC_NS"; do
        [ -d "$d" ] && rm -rf "$d"
    done
    if [ -n "${PVELXC_KEEP:-}" ]; then echo "kept $PC_DIR" >&2; else rm -rf --one-file-system "$PC_DIR"; fi
    PC_DIR=
}

# remove_container ID: SIGKILL its task, wait (bounded) until it no longer runs, remove the
# task and the container. Needs CTR (start_containerd).
remove_container() {
    local id=$1
    timeout 20 "${CTR[@]}" task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    for _ in $(seq 100); do
        timeout 10 "${CTR[@]}" task ls 2>/dev/null | grep -q "^$id .*RUNNING" || break
        sleep 0.1
    done
    timeout 20 "${CTR[@]}" task rm -f "$id" >/dev/null 2>&1 || true
    timeout 20 "${CTR[@]}" containers rm "$id" >/dev/null 2>&1 || true
}

# shim_pids: pids of shim processes serving our private containerd.
shim_pids() {
    local p
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $PC_SOCK "; then
            basename "$p"
        fi
    done
}
