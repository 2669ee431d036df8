#!/usr/bin/env bash
# Kubernetes-path benchmark: pod start latency (RunPodSandbox + CreateContainer + StartContainer,
# median of RUNS) and per-pod shim RSS through containerd's CRI plugin, our shim (handler
# `pvelxc`, io.containerd.pvelxc.v2, crun backend) side by side with the stock Go shim (handler
# `runc-crun`, io.containerd.runc.v2 with BinaryName = /usr/bin/crun), in one run, on a private
# containerd (own root/state/socket, private CNI bridge). Never touches the system containerd.
#
#   scripts/bench-cri.sh [RUNS]        (RUNS >= 10, default 15)
#
# Driver: examples/cri-bench.rs (a CRI client; one warm-up run per handler is not counted).
# Needs: root, containerd, crun, containernetworking-plugins, gcc (static libc), umoci,
# busybox-static, protobuf-compiler (to build the example), a Rust toolchain.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO_ROOT/scripts/lib.sh"

RUNS=${1:-15}
[ "$RUNS" -ge 10 ] || die "RUNS must be >= 10"
[ "$(id -u)" = 0 ] || die "run as root"
for b in containerd ctr crun umoci gcc ip; do command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh)"; done
[ -x /usr/lib/cni/bridge ] || die "CNI plugins missing in /usr/lib/cni (apt-get install containernetworking-plugins)"
command -v cargo >/dev/null || . "$HOME/.cargo/env"

hugetlb_fix
cd "$REPO_ROOT"
echo "== building the shim and examples/cri-bench (release)" >&2
cargo build --release --bin containerd-shim-pvelxc-v2 >&2
cargo build --release --example cri-bench >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$REPO_ROOT/target}
BENCH=$TARGET_DIR/release/examples/cri-bench
[ -x "$BENCH" ] || die "no $BENCH"
[ -x "$SHIM_DIR/containerd-shim-pvelxc-v2" ] || die "no shim binary in $SHIM_DIR"

WORK=$(mktemp -d /tmp/pvcb-XXXXXX)
BRIDGE=pvbb$(printf '%x' $(($$ & 0xffff)))
CD_PID=
SOCK=$WORK/c.sock

cleanup() {
    set +e
    if [ -n "$CD_PID" ] && kill -0 "$CD_PID" 2>/dev/null; then
        # the driver removes its pods; anything left goes with the namespace's tasks
        for t in $(timeout 20 ctr --address "$SOCK" -n k8s.io task ls -q 2>/dev/null); do
            timeout 20 ctr --address "$SOCK" -n k8s.io task kill -a -s SIGKILL "$t" >/dev/null 2>&1
            timeout 20 ctr --address "$SOCK" -n k8s.io task rm -f "$t" >/dev/null 2>&1
        done
        kill -TERM "$CD_PID"
        for _ in $(seq 150); do kill -0 "$CD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$CD_PID" 2>/dev/null
        wait "$CD_PID" 2>/dev/null
    fi
    # shims of this private containerd (argv carries -address $SOCK)
    for p in $(pgrep -f "containerd-shim.*-address $SOCK" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    awk -v d="$WORK" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    ip link del "$BRIDGE" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- images: the static pause image (as registry.k8s.io/pause:3.6) and busybox ----
FIX=$TARGET_DIR/fixtures/v1
mkdir -p "$FIX"
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
if [ ! -f "$FIX/pause-oci.tar" ]; then
    echo "== building the pause image" >&2
    w=$WORK/pause-work; mkdir -p "$w"
    cat >"$w/pause.c" <<'C'
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction a; memset(&a, 0, sizeof a); a.sa_handler = down;
    sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
    memset(&a, 0, sizeof a); a.sa_handler = reap; a.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &a, NULL);
    for (;;) pause();
}
C
    gcc -static -Os -s -o "$w/pause" "$w/pause.c"
    umoci init --layout "$w/img" && umoci new --image "$w/img:3.6"
    umoci unpack --image "$w/img:3.6" "$w/b" && cp "$w/pause" "$w/b/rootfs/pause"
    umoci repack --image "$w/img:3.6" "$w/b"
    umoci config --image "$w/img:3.6" --config.entrypoint /pause --architecture "$ARCH" --os linux
    tar -cf "$FIX/pause-oci.tar.tmp" -C "$w/img" . && mv "$FIX/pause-oci.tar.tmp" "$FIX/pause-oci.tar"
fi
if [ ! -f "$FIX/busybox-oci.tar" ]; then
    echo "== building the busybox image" >&2
    w=$WORK/bb-work; mkdir -p "$w"
    make_rootfs "$w/r"
    umoci init --layout "$w/img" && umoci new --image "$w/img:latest"
    umoci unpack --image "$w/img:latest" "$w/b" && cp -a "$w/r/." "$w/b/rootfs/"
    umoci repack --image "$w/img:latest" "$w/b"
    umoci config --image "$w/img:latest" --config.cmd /bin/sh --config.env "$CONTAINER_PATH_ENV" \
        --architecture "$ARCH" --os linux
    tar -cf "$FIX/busybox-oci.tar.tmp" -C "$w/img" . && mv "$FIX/busybox-oci.tar.tmp" "$FIX/busybox-oci.tar"
fi

# ---- private containerd with CRI, both handlers, a private CNI bridge (no gateway, no NAT) ----
mkdir -p "$WORK/net.d" "$WORK/logs"
cat >"$WORK/net.d/10-bench.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "pvt-bench-$$", "plugins": [{"type": "bridge", "bridge": "$BRIDGE",
 "isGateway": false, "ipMasq": false,
 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.250.0/24"}]], "dataDir": "$WORK/ipam"}}]}
JSON
CRI='plugins."io.containerd.grpc.v1.cri"'
cat >"$WORK/config.toml" <<TOML
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.internal.v1.opt"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = ""
[$CRI]
  sandbox_image = "registry.k8s.io/pause:3.6"
  restrict_oom_score_adj = true
  [$CRI.containerd]
    default_runtime_name = "runc-crun"
    [$CRI.containerd.runtimes.pvelxc]
      runtime_type = "io.containerd.pvelxc.v2"
    [$CRI.containerd.runtimes.runc-crun]
      runtime_type = "io.containerd.runc.v2"
      [$CRI.containerd.runtimes.runc-crun.options]
        BinaryName = "/usr/bin/crun"
  [$CRI.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/net.d"
    max_conf_num = 1
TOML
PATH="$SHIM_DIR:$PATH" containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CD_PID=$!
for i in $(seq 200); do
    [ -S "$SOCK" ] && ctr --address "$SOCK" version >/dev/null 2>&1 && break
    kill -0 "$CD_PID" 2>/dev/null || { tail -20 "$WORK/containerd.log" >&2; die "containerd exited"; }
    [ "$i" -lt 200 ] || die "containerd not ready after 20s"
    sleep 0.1
done
ctr --address "$SOCK" -n k8s.io images import --base-name registry.k8s.io/pause "$FIX/pause-oci.tar" >/dev/null
ctr --address "$SOCK" -n k8s.io images import --base-name localhost/test/busybox "$FIX/busybox-oci.tar" >/dev/null

# ---- measure, both handlers in one run ----
declare -A LINE
for h in pvelxc runc-crun; do
    echo "== $h: $RUNS pods (+1 warm-up)" >&2
    if ! LINE[$h]=$("$BENCH" --socket "$SOCK" --handler "$h" --runs "$RUNS" --log-dir "$WORK/logs"); then
        tail -30 "$WORK/containerd.log" >&2
        die "cri-bench failed for handler $h"
    fi
done

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"${LINE[$1]}"; }
echo
echo "CRI pod start (RunPodSandbox+CreateContainer+StartContainer), $RUNS pods each, $(nproc) cores:"
printf '%-34s %12s %12s %12s %16s\n' handler median_ms min_ms max_ms shim_rss_kB
for h in pvelxc runc-crun; do
    label=$h; [ "$h" = pvelxc ] && label="pvelxc (io.containerd.pvelxc.v2)"
    [ "$h" = runc-crun ] && label="runc-crun (runc.v2 + crun)"
    printf '%-34s %12s %12s %12s %16s\n' "$label" "$(field "$h" start_median_ms)" \
        "$(field "$h" start_min_ms)" "$(field "$h" start_max_ms)" "$(field "$h" shim_rss_kb_median)"
done
a=$(field pvelxc start_median_ms); b=$(field runc-crun start_median_ms)
ra=$(field pvelxc shim_rss_kb_median); rb=$(field runc-crun shim_rss_kb_median)
awk -v a="$a" -v b="$b" -v ra="$ra" -v rb="$rb" \
    'BEGIN { if (b > 0 && rb > 0) printf "ratio pvelxc/runc-crun: start %.2fx, shim RSS %.2fx\n", a / b, ra / rb }'
