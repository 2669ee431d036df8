#!/usr/bin/env bash
# shellcheck disable=SC2016 # the containers' shell expands what is single-quoted here
# One command: set the machine up, start a private containerd with our runtime on its PATH and
# run a busybox container through it with `ctr run --runtime io.containerd.pvelxc.v2`; then the
# same container as a Proxmox VE CT (pct backend) inside a host shaped like a PVE node.
#   scripts/demo.sh            (SKIP_SETUP=1 to skip scripts/setup.sh)
# env: PVELXC_SHIM_DIR  shim and double binaries (default target/release)
#      PVELXC_INIT_BIN  the static pvelxc-init (default target/x86_64-unknown-linux-gnu/dist/pvelxc-init)
#      PVE_PROFILE      the PVE version the double plays: pve8, pve9.0, pve9.1 (default)
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
# (real LXC underneath) inside pve-shape (/etc/pve, /run/lock/lxc, /run noexec, pct start through
# a service manager, as on a PVE node), since Proxmox itself is not installed. On a Proxmox host,
# drop the double and the shape: the shim calls the real pct.
INIT=${PVELXC_INIT_BIN:-$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist/pvelxc-init}
PROFILE=${PVE_PROFILE:-pve9.1}
missing=
for b in pct pvesh pveversion pve-shape; do [ -x "$SHIM_DIR/$b" ] || missing="$missing $SHIM_DIR/$b"; done
[ -x "$INIT" ] || missing="$missing $INIT"
if [ -n "$missing" ]; then
    echo "skipping the pct part, missing:$missing (scripts/setup.sh builds them)" >&2
    exit 0
fi
stop_containerd
trap - EXIT
start_shape "$PROFILE" 981000 4
trap 'stop_containerd; stop_shape' EXIT
export PVELXC_CONFIG=$SHAPE_ROOT/pvelxc.toml
cat >"$PVELXC_CONFIG" <<TOML
backend = "pct"
[pct]
vmid_min = 981000
vmid_max = 981099
init_path = "$INIT"
state_dir = "$SHAPE_ROOT/ct"
template_dir = "$SHAPE_ROOT/storage/local/template/cache"
TOML
PC_NS=demo-pct-$$
start_containerd
make_rootfs "$PC_DIR/rootfs"
echo "+ pveversion (inside the shape, profile $PROFILE): $("${SHAPE[@]}" "$SHIM_DIR/pveversion")"
echo "+ ctr run --rm --runtime io.containerd.pvelxc.v2 --rootfs $PC_DIR/rootfs demo2 /bin/sh -c '...'"
"${CTR[@]}" run --rm --runtime io.containerd.pvelxc.v2 \
    --env "$CONTAINER_PATH_ENV" --rootfs "$PC_DIR/rootfs" demo2 \
    /bin/sh -c 'echo "hello from CT $(hostname), PID 1 is $(cat /proc/1/comm)"' </dev/null
echo "+ Proxmox calls it made (pct, pvesh, pveversion):"
grep -o '"argv":\[[^]]*\]' "$SHAPE_ROOT/calls.log" | sed 's/^/  /'
