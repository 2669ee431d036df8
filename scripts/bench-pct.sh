#!/usr/bin/env bash
# pct backend benchmark: Proxmox CLI invocations (pct, pvesh, pveversion) per `ctr run --rm`
# (run -> exit -> delete), the latency the rest of the stack (shim + containerd + ctr) adds
# over those calls, the shim's own time in Create outside its pct calls, and the rootfs bytes
# each create writes (the double's rootfs-writes.log) — with linked clones of a template CT
# (lvmthin storage `local-lvm`) and with extraction (a dir storage), side by side with ratios.
# Drives the pve-double (real LXC) through a timing wrapper, with a private containerd running
# inside a host shaped like a Proxmox VE node (pve-shape), per PVE profile.
#
#   scripts/bench-pct.sh [all|pve8|pve9.0|pve9.1] [RUNS]    (RUNS default 10)
#     no profile: PVE_PROFILE (default pve9.1); all: pve8 then pve9.1; a number alone is RUNS.
# env: PVE_DOUBLE_LATENCY_MS  the double sleeps this long at the start of every call, modelling
#                             Perl's start-up cost of the real CLIs (default 0)
#      PVELXC_SHIM_DIR        use the shim and double binaries there and build nothing (default:
#                             build them, release, into ${CARGO_TARGET_DIR:-target})
#      PVELXC_INIT_BIN        the static pvelxc-init (default: the --target release build)
#
# Needs: root, containerd, lxc, busybox-static.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO_ROOT/scripts/lib.sh"

usage() { echo "usage: scripts/bench-pct.sh [all|pve8|pve9.0|pve9.1] [RUNS]" >&2; exit 2; }
WHAT=${PVE_PROFILE:-pve9.1}
case ${1:-} in
    '') ;;
    all | pve8 | pve9.0 | pve9.1) WHAT=$1; shift ;;
    *[!0-9]*) usage ;;
esac
RUNS=${1:-10}
case $RUNS in '' | *[!0-9]* | 0) usage ;; esac
[ $# -le 1 ] || usage
LATENCY=${PVE_DOUBLE_LATENCY_MS:-0}
case $LATENCY in '' | *[!0-9]*) die "PVE_DOUBLE_LATENCY_MS must be a number of milliseconds" ;; esac
case $WHAT in all) PROFILES=(pve8 pve9.1) ;; *) PROFILES=("$WHAT") ;; esac

[ "$(id -u)" = 0 ] || die "run as root"
for b in containerd ctr lxc-start; do command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh)"; done

TGT=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
if [ -z "${PVELXC_SHIM_DIR:-}" ]; then
    # shellcheck source=/dev/null
    command -v cargo >/dev/null || . "$HOME/.cargo/env"
    cd "$REPO_ROOT"
    echo "== building (release): shim, pve-double, static pvelxc-init" >&2
    cargo build --release --bin containerd-shim-pvelxc-v2 >&2
    cargo build --release -p pve-double >&2
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p pvelxc-init \
        --target x86_64-unknown-linux-gnu >&2
    SHIM_DIR=$TGT/release
fi
INIT=${PVELXC_INIT_BIN:-$TGT/x86_64-unknown-linux-gnu/release/pvelxc-init}
for b in containerd-shim-pvelxc-v2 pct pvesh pveversion pve-shape; do
    [ -x "$SHIM_DIR/$b" ] || die "no $SHIM_DIR/$b (cargo build --release -p pve-double)"
done
[ -x "$INIT" ] || die "no static init at $INIT (PVELXC_INIT_BIN)"

VMID_LO=982000 VMID_HI=982099 FOREIGN=4
WORK=
cleanup() {
    stop_containerd || true
    stop_shape || true
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
SUMMARY=()

# bench PROFILE MODE (linked|extract): one shape, one containerd, a warm-up run, RUNS runs.
bench() {
    local profile=$1 mode=$2 tool i t0 t1 total pct n storage=local-lvm
    local totals=() pcts=() calls=() added=() bytes=()
    WORK=$(mktemp -d /tmp/pvpb-XXXXXX)
    mkdir -p "$WORK/wrap"
    start_shape "$profile" "$VMID_LO" "$FOREIGN"
    # The double reads its per-call latency from the root's `latency` file (and the env var).
    echo "$LATENCY" >"$SHAPE_ROOT/latency"
    if [ "$mode" = extract ]; then
        # A dir storage for CTs: no linked clones, every container is extracted.
        storage=ctdir
        mkdir -p "$SHAPE_ROOT/etc/pve"
        printf 'dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n%s\n\n%s\n' \
            "$(printf 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images')" \
            "$(printf 'dir: ctdir\n\tpath /var/lib/ctdir\n\tcontent rootdir')" \
            >"$SHAPE_ROOT/etc/pve/storage.cfg"
    fi
    # Timing wrapper: one line per call, "<start_ns> <end_ns> <tool> <argv1> <argv2>".
    for tool in pct pvesh pveversion; do
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
pveversion = "$WORK/wrap/pveversion"
vmid_min = $VMID_LO
vmid_max = $VMID_HI
init_path = "$INIT"
state_dir = "$SHAPE_ROOT/ct"
template_dir = "$SHAPE_ROOT/storage/local/template/cache"
storage = "$storage"
TOML
    export PVELXC_CONFIG=$WORK/config.toml
    make_rootfs "$WORK/rootfs"
    PC_NS=bench-pct-$$
    start_containerd
    # The client runs on the host (the socket, rootfs and stdio FIFOs are the same files in the
    # shape), so that pve-shape's own exec is not in the figures.
    local ctr=(ctr --address "$PC_SOCK" -n "$PC_NS")

    local writes=$SHAPE_ROOT/rootfs-writes.log first
    echo "== $profile, $mode: warm-up (packs the template, makes the template CT, asks pveversion)" >&2
    "${ctr[@]}" run --rm --runtime io.containerd.pvelxc.v2 --rootfs "$WORK/rootfs" warm /bin/true
    echo "   calls of the warm-up:" >&2
    awk '{printf "    %-32s %5d ms\n", $3 " " $4 " " $5, ($2 - $1) / 1000000}' "$WORK/timing.log" >&2
    # Rootfs bytes of the first container: everything written so far (the template CT's
    # extraction + its clone, or its own extraction).
    first=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' "$writes" | awk '{s += $1} END {print s + 0}')
    for i in $(seq "$RUNS"); do
        : >"$WORK/timing.log"
        t0=$(date +%s%N)
        : >"$writes"
        "${ctr[@]}" run --rm --runtime io.containerd.pvelxc.v2 --rootfs "$WORK/rootfs" "b$i" /bin/true
        t1=$(date +%s%N)
        bytes+=("$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' "$writes" | awk '{s += $1} END {print s + 0}')")
        total=$(((t1 - t0) / 1000000))
        pct=$(awk '{s += $2 - $1} END {printf "%d", s / 1000000}' "$WORK/timing.log")
        n=$(wc -l <"$WORK/timing.log")
        totals+=("$total") pcts+=("$pct") calls+=("$n") added+=($((total - pct)))
        if [ "$i" = 1 ]; then
            echo "   calls of run 1:" >&2
            awk '{printf "    %-32s %5d ms\n", $3 " " $4 " " $5, ($2 - $1) / 1000000}' "$WORK/timing.log" >&2
        fi
    done
    local mt mp mc ma mb own
    mt=$(median "${totals[@]}") mp=$(median "${pcts[@]}") mc=$(median "${calls[@]}") ma=$(median "${added[@]}")
    mb=$(median "${bytes[@]}")
    # The shim logs, per Create, its own time outside its pct calls (shim-own-us=N).
    own=$(sed -n 's/.*shim-own-us=\([0-9]*\).*/\1/p' "$PC_DIR/containerd.log" | tail -n "$RUNS")
    own=$( [ -n "$own" ] && median $own || echo -)
    SUMMARY+=("$(printf '%-7s %-8s %5s %6s %9s %11s %11s %12s %14s %12s' "$profile" "$mode" "$LATENCY" \
        "$mc" "$mt" "$mp" "$ma" "$own" "$first" "$mb")")
    R_TOTAL[$profile.$mode]=$mt R_FIRST[$profile.$mode]=$first R_BYTES[$profile.$mode]=$mb
    R_CALLS[$profile.$mode]=$mc
    stop_containerd
    stop_shape
    rm -rf "$WORK"
    WORK=
}

declare -A R_TOTAL R_FIRST R_BYTES R_CALLS
for p in "${PROFILES[@]}"; do
    bench "$p" linked
    bench "$p" extract
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.3f", a / b; else printf "-" }'; }
echo "runs per profile: $RUNS; PVE_DOUBLE_LATENCY_MS (the double's sleep per call): $LATENCY"
echo "mode: linked = lvmthin, containers are linked clones of the image's template CT;"
echo "      extract = dir storage, the image is extracted into every container."
echo "calls = pct/pvesh/pveversion calls per run->exit->delete (target <= 4); times in ms, medians:"
echo "total = ctr run --rm /bin/true; in-calls = sum of the calls' durations; stack = total -"
echo "in-calls (shim + containerd + ctr); shim-own-us = the shim's own time in Create outside its"
echo "pct calls (µs, target <= 10000); first-B = rootfs bytes written for the first container"
echo "(template CT + clone, or its extraction); later-B = per later container (target < 1 MB)"
printf '%-7s %-8s %5s %6s %9s %11s %11s %12s %14s %12s\n' profile mode lat calls total in-calls \
    stack shim-own-us first-B later-B
printf '%s\n' "${SUMMARY[@]}"
echo
echo "ratios linked/extract (below 1: linked clones win)"
printf '%-7s %10s %10s %14s\n' profile total calls "rootfs-bytes"
for p in "${PROFILES[@]}"; do
    printf '%-7s %10s %10s %14s\n' "$p" "$(ratio "${R_TOTAL[$p.linked]}" "${R_TOTAL[$p.extract]}")" \
        "$(ratio "${R_CALLS[$p.linked]}" "${R_CALLS[$p.extract]}")" \
        "$(ratio "${R_BYTES[$p.linked]}" "${R_BYTES[$p.extract]}")"
done
