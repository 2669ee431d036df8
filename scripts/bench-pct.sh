#!/usr/bin/env bash
# pct backend benchmark: pct/pvesh invocations per `ctr run --rm` (run -> exit -> delete) and the
# latency the rest of the stack (shim + containerd + ctr) adds over the pct calls themselves.
# Drives the pve-double `pct` (real LXC) through a timing wrapper on a private containerd.
#
#   scripts/bench-pct.sh [RUNS]     (default 10)
#
# Needs: root, containerd, lxc, busybox-static; builds the shim, the double and the static init.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO_ROOT/scripts/lib.sh"

RUNS=${1:-10}
[ "$(id -u)" = 0 ] || die "run as root"
for b in containerd ctr lxc-start; do command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh)"; done
command -v cargo >/dev/null || . "$HOME/.cargo/env"

cd "$REPO_ROOT"
echo "== building (release): shim, pve-double, static pvelxc-init" >&2
cargo build --release --bin containerd-shim-pvelxc-v2 >&2
cargo build --release -p pve-double >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p pvelxc-init \
    --target x86_64-unknown-linux-gnu >&2
INIT=$REPO_ROOT/target/x86_64-unknown-linux-gnu/release/pvelxc-init
[ -x "$SHIM_DIR/pct" ] || die "no $SHIM_DIR/pct"

WORK=$(mktemp -d /tmp/pvpb-XXXXXX)
export PVE_DOUBLE_ROOT=$WORK/pve
mkdir -p "$PVE_DOUBLE_ROOT" "$WORK/wrap"
cleanup() {
    stop_containerd || true
    for v in $("$SHIM_DIR/pct" list 2>/dev/null | awk 'NR>1 {print $1}'); do
        "$SHIM_DIR/pct" destroy "$v" --force 1 --purge 1 >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Timing wrapper: one line per call, "<start_ns> <end_ns> <argv...>".
for tool in pct pvesh; do
    cat >"$WORK/wrap/$tool" <<SH
#!/bin/sh
s=\$(date +%s%N)
"$SHIM_DIR/$tool" "\$@"
rc=\$?
e=\$(date +%s%N)
echo "\$s \$e $tool \$1 \$2" >>"$WORK/timing.log"
exit \$rc
SH
    chmod 755 "$WORK/wrap/$tool"
done

cat >"$WORK/config.toml" <<TOML
backend = "pct"
[pct]
pct = "$WORK/wrap/pct"
pvesh = "$WORK/wrap/pvesh"
vmid_min = 399900
vmid_max = 399999
init_path = "$INIT"
template_dir = "$PVE_DOUBLE_ROOT/storage/local/template/cache"
TOML
export PVELXC_CONFIG=$WORK/config.toml
make_rootfs "$WORK/rootfs"
start_containerd

ns() { date +%s%N; }
echo "== warm-up (packs the template)" >&2
"${CTR[@]}" run --rm --runtime io.containerd.pvelxc.v2 --rootfs "$WORK/rootfs" warm /bin/true
: >"$WORK/timing.log"

totals=() pcts=() calls=()
for i in $(seq "$RUNS"); do
    : >"$WORK/timing.log"
    t0=$(ns)
    "${CTR[@]}" run --rm --runtime io.containerd.pvelxc.v2 --rootfs "$WORK/rootfs" "b$i" /bin/true
    t1=$(ns)
    totals+=($(((t1 - t0) / 1000000)))
    pcts+=($(awk '{s += $2 - $1} END {printf "%d", s / 1000000}' "$WORK/timing.log"))
    calls+=($(wc -l <"$WORK/timing.log"))
    [ "$i" = 1 ] && { echo "calls of run 1:" >&2; awk '{$1=$2=""; print "   " $0}' "$WORK/timing.log" >&2; }
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mt=$(median "${totals[@]}") mp=$(median "${pcts[@]}") mc=$(median "${calls[@]}")
echo "runs:                                   $RUNS"
echo "pct/pvesh calls per run->exit->delete:  $mc (target <= 4)"
echo "ctr run --rm /bin/true, median:         ${mt} ms"
echo "sum of pct call durations, median:      ${mp} ms"
echo "added by shim+containerd+ctr, median:   $((mt - mp)) ms"
