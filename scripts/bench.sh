#!/usr/bin/env bash
# Side-by-side: our shim (io.containerd.pvelxc.v2, crun by default) vs the stock Go shim
# (io.containerd.runc.v2) driving the SAME crun binary, on a private containerd.
#
#   scripts/bench.sh [RUNS]        (RUNS >= 20, default 30)
#
# Measures: median `ctr run --rm /bin/true` latency, median `ctr task exec /bin/true` latency
# (hyperfine, --export-json), and the memory of idle shims: VmRSS of the shim holding one
# container, and private memory (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup: what
# each further shim really adds; code pages are shared) per shim with 10 idle containers.
# The stock shim is pointed at crun with runc options BinaryName=/usr/bin/crun — that is what
# `ctr run --runc-binary` sends (the same field as `[...runtimes.runc-crun.options]
# BinaryName = "/usr/bin/crun"` in a CRI config; ctr does not read CRI runtime sections).
# Our shim: the installed build (static, profile `dist`, scripts/setup.sh) when it has been
# built, else target/release; PVELXC_SHIM_DIR overrides. The build measured is printed.
# Needs: containerd, crun, hyperfine, python3.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO_ROOT/scripts/lib.sh"
prefer_installed_build

RUNS=${1:-30}
[ "$RUNS" -ge 20 ] || die "RUNS must be >= 20"
CRUN=${CRUN:-$(command -v crun || echo /usr/bin/crun)}
[ "$(id -u)" = 0 ] || die "run as root"
for b in containerd ctr hyperfine python3 "$CRUN"; do command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh)"; done
[ -x "$SHIM_DIR/containerd-shim-pvelxc-v2" ] || die "no shim binary in $SHIM_DIR (cargo build --release)"
IDLE=10

hugetlb_fix
PC_NS=bench-$$
start_containerd
trap stop_containerd EXIT
ROOTFS=$PC_DIR/rootfs
make_rootfs "$ROOTFS"
RESULTS=$PC_DIR/results
mkdir -p "$RESULTS"

# name -> extra ctr run flags
declare -A FLAGS=(
    [pvelxc]="--runtime io.containerd.pvelxc.v2"
    [runc-crun]="--runtime io.containerd.runc.v2 --runc-binary $CRUN"
)
ORDER=(pvelxc runc-crun)

median_ms() { # hyperfine json -> median in ms
    python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$1"
}

declare -A RUN_MS EXEC_MS RSS_KB PRIV_KB STATUS
for name in "${ORDER[@]}"; do
    flags=${FLAGS[$name]}
    STATUS[$name]=ok
    base="${CTR[*]}"
    # smoke test first: a broken runtime must give a clear message, not a hyperfine error wall
    # shellcheck disable=SC2086
    if ! out=$(timeout 60 "${CTR[@]}" run --rm $flags --env "$CONTAINER_PATH_ENV" --rootfs "$ROOTFS" "smoke-$name" /bin/true 2>&1); then
        echo "== $name: ctr run failed, skipping its measurements:" >&2
        echo "$out" | tail -5 >&2
        STATUS[$name]="FAILED"
        timeout 20 "${CTR[@]}" task rm -f "smoke-$name" >/dev/null 2>&1 || true
        timeout 20 "${CTR[@]}" containers rm "smoke-$name" >/dev/null 2>&1 || true
        continue
    fi
    echo "== $name: ctr run --rm /bin/true x $RUNS" >&2
    hyperfine -N --warmup 3 --runs "$RUNS" --style basic --export-json "$RESULTS/run-$name.json" \
        "$base run --rm $flags --env $CONTAINER_PATH_ENV --rootfs $ROOTFS b-$name /bin/true" >&2 \
        || { STATUS[$name]="FAILED(run)"; continue; }
    RUN_MS[$name]=$(median_ms "$RESULTS/run-$name.json")

    # idle containers: exec into the first, memory of all
    for i in $(seq "$IDLE"); do
        # shellcheck disable=SC2086
        timeout 60 "${CTR[@]}" run -d $flags --env "$CONTAINER_PATH_ENV" --rootfs "$ROOTFS" "idle-$name-$i" /bin/sleep 100000 >/dev/null
    done
    for _ in $(seq 100); do
        [ "$(timeout 10 "${CTR[@]}" task ls 2>/dev/null | grep -c "^idle-$name-.* RUNNING")" = "$IDLE" ] && break
        sleep 0.1
    done
    echo "== $name: ctr task exec /bin/true x $RUNS" >&2
    hyperfine -N --warmup 3 --runs "$RUNS" --style basic --export-json "$RESULTS/exec-$name.json" \
        "$base task exec --exec-id bx idle-$name-1 /bin/true" >&2 \
        || { STATUS[$name]="FAILED(exec)"; }
    [ -f "$RESULTS/exec-$name.json" ] && EXEC_MS[$name]=$(median_ms "$RESULTS/exec-$name.json")
    # after the exec churn: VmRSS of the shim holding idle-1, private memory of each idle shim
    rss=0 private=0 n=0
    for p in $(shim_pids); do
        cmd=$(tr '\0' ' ' <"/proc/$p/cmdline")
        case $cmd in *" -id idle-$name-"*) ;; *) continue ;; esac
        case $cmd in *" -id idle-$name-1 "*) rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status") ;; esac
        private=$((private + $(awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s + 0}' "/proc/$p/smaps_rollup")))
        n=$((n + 1))
    done
    RSS_KB[$name]=$rss
    [ "$n" = "$IDLE" ] || STATUS[$name]="FAILED(found $n of $IDLE idle shims)"
    PRIV_KB[$name]=$((private / (n > 0 ? n : 1)))
    for i in $(seq "$IDLE"); do
        remove_container "idle-$name-$i"
    done
done

mb() { [ -n "${1:-}" ] && [ "$1" != 0 ] && python3 -c "print('%.1f' % ($1 / 1024))" || echo -; }
ratio() { # a b -> a/b
    python3 -c 'import sys
a,b=sys.argv[1],sys.argv[2]
try: print("%.2f" % (float(a)/float(b)))
except Exception: print("-")' "${1:--}" "${2:--}"
}
a=pvelxc b=runc-crun
echo
echo "our shim: $SHIM_DIR/containerd-shim-pvelxc-v2 ($("$SHIM_DIR/containerd-shim-pvelxc-v2" -v | awk '/Revision/ {print $2}'))"
echo "containerd $(containerd --version | awk '{print $3}'), crun $("$CRUN" --version | head -1 | awk '{print $3}'), $RUNS runs, medians"
printf '%-32s %14s %14s %8s\n' "metric" "$a" "$b(crun)" "ratio"
printf '%-32s %14s %14s %8s\n' "ctr run --rm /bin/true (ms)" "${RUN_MS[$a]:--}" "${RUN_MS[$b]:--}" "$(ratio "${RUN_MS[$a]:-}" "${RUN_MS[$b]:-}")"
printf '%-32s %14s %14s %8s\n' "ctr task exec /bin/true (ms)" "${EXEC_MS[$a]:--}" "${EXEC_MS[$b]:--}" "$(ratio "${EXEC_MS[$a]:-}" "${EXEC_MS[$b]:-}")"
printf '%-32s %14s %14s %8s\n' "idle shim VmRSS, 1 ctr (MB)" "$(mb "${RSS_KB[$a]:-}")" "$(mb "${RSS_KB[$b]:-}")" "$(ratio "${RSS_KB[$a]:-}" "${RSS_KB[$b]:-}")"
printf '%-32s %14s %14s %8s\n' "private MB per shim, $IDLE idle" "$(mb "${PRIV_KB[$a]:-}")" "$(mb "${PRIV_KB[$b]:-}")" "$(ratio "${PRIV_KB[$a]:-}" "${PRIV_KB[$b]:-}")"
printf '%-32s %14s %14s\n' "status" "${STATUS[$a]}" "${STATUS[$b]}"
[ "${STATUS[$a]}" = ok ] && [ "${STATUS[$b]}" = ok ]
