#!/usr/bin/env bash
# One command: set the machine up, start a private containerd with our runtime on its PATH and
# run a busybox container through it with `ctr run --runtime io.containerd.pvelxc.v2`.
#   scripts/demo.sh            (SKIP_SETUP=1 to skip scripts/setup.sh)
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${SKIP_SETUP:-}" ] || "$REPO_ROOT/scripts/setup.sh"
# shellcheck source=scripts/lib.sh
. "$REPO_ROOT/scripts/lib.sh"

PC_NS=demo-$$
start_containerd
trap stop_containerd EXIT
make_rootfs "$PC_DIR/rootfs"
echo "+ ctr run --rm --runtime io.containerd.pvelxc.v2 --rootfs $PC_DIR/rootfs demo1 /bin/sh -c '...'"
"${CTR[@]}" run --rm --runtime io.containerd.pvelxc.v2 --env "$CONTAINER_PATH_ENV" \
    --rootfs "$PC_DIR/rootfs" demo1 \
    /bin/sh -c 'echo "hello from $(hostname) (pid $$), kernel $(uname -r)"; id; ls /' </dev/null

# The same container as a Proxmox VE CT, through `pct` — here the project's pct/pvesh double
# (real LXC underneath), since Proxmox itself is not installed. On a Proxmox host, drop the double
# and PVE_DOUBLE_ROOT: the shim calls the real pct.
INIT=$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist/pvelxc-init
if [ -x "$SHIM_DIR/pct" ] && [ -x "$INIT" ]; then
    stop_containerd
    trap - EXIT
    export PVE_DOUBLE_ROOT
    PVE_DOUBLE_ROOT=$(mktemp -d /tmp/pvd-XXXXXX)
    export PVELXC_CONFIG=$PVE_DOUBLE_ROOT/pvelxc.toml
    printf '[pct]\ninit_path = "%s"\n' "$INIT" >"$PVELXC_CONFIG"
    PC_NS=demo-pct-$$
    start_containerd
    trap 'stop_containerd; rm -rf "$PVE_DOUBLE_ROOT"' EXIT
    make_rootfs "$PC_DIR/rootfs"
    echo "+ ctr run --rm --runtime io.containerd.pvelxc.v2 --annotation io.pvelxc.backend=pct ... demo2"
    "${CTR[@]}" run --rm --runtime io.containerd.pvelxc.v2 --annotation io.pvelxc.backend=pct \
        --env "$CONTAINER_PATH_ENV" --rootfs "$PC_DIR/rootfs" demo2 \
        /bin/sh -c 'echo "hello from CT $(hostname), PID 1 is $(cat /proc/1/comm)"' </dev/null
    echo "+ pct calls it made:"
    grep -o '"argv":\[[^]]*\]' "$PVE_DOUBLE_ROOT/calls.log" | sed 's/^/  /'
fi
