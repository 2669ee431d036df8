# shellcheck shell=bash
# Helpers shared by scripts/demo.sh and scripts/bench.sh (sourced, not executed).
# A private containerd (own root/state/socket under a temp dir, CRI disabled) with the shim build
# directory first on its PATH, and a busybox-static rootfs. Never touches the system containerd.

REPO_ROOT=${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SHIM_DIR=${PVELXC_SHIM_DIR:-$REPO_ROOT/target/release}
CONTAINER_PATH_ENV="PATH=/bin:/sbin:/usr/bin:/usr/sbin"

die() { echo "error: $*" >&2; exit 1; }

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

# start_containerd: sets PC_DIR, PC_SOCK, PC_NS, PC_PID and CTR (an array: ctr --address .. -n ..).
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
    PATH="$SHIM_DIR:$PATH" containerd --config "$PC_DIR/config.toml" >"$PC_DIR/containerd.log" 2>&1 &
    PC_PID=$!
    CTR=(ctr --address "$PC_SOCK" -n "$PC_NS")
    local i
    for i in $(seq 200); do
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
    # unmount leftovers (deepest first), then remove
    awk -v d="$PC_DIR" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    # per-namespace runtime roots (runc.v2: /run/containerd/runc/NS, ours: /run/pvelxc/crun/NS)
    local d
    for d in /run/*/"$PC_NS" /run/*/*/"$PC_NS"; do
        [ -d "$d" ] && rm -rf "$d"
    done
    if [ -n "${PVELXC_KEEP:-}" ]; then echo "kept $PC_DIR" >&2; else rm -rf "$PC_DIR"; fi
    PC_DIR=
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
