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
