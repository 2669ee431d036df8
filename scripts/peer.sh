#!/usr/bin/env bash
# containerd 1.6.20's own integration/client suite (../shared/peer) against our shim, gated BY TEST
# NAME: on the crun path (default config) and on the pct path (PVELXC_CONFIG with backend = "pct"
# and the Proxmox double on PATH), every test's result is compared with the path's expected-results
# file, tests/peer-expected/<path>.txt, and a per-test table is printed.
#
# Expected-results file: one line per test of the suite, `TestName KIND  # reason` (reason required
# for every KIND but pass). KIND:
#   pass   must pass;
#   fail   known to fail (reason says why); a pass is an unexpected pass;
#   skip   skipped by the suite itself (reason says why);
#   flaky  a known race (reason says which): a failure reruns JUST that test, at most
#          PEER_FLAKY_RETRIES times (default 2), each result printed; it passes if a rerun passes.
# The gate fails on any regression (expected pass/flaky -> fail, skip or no result), on any other
# change (fail -> skip, ...), on a test missing from the file, and on an unexpected pass (then
# update the file: PEER_ALLOW_IMPROVEMENT=1 reports it without failing). The suite's result is never
# retried as a whole; only a harness that did not come up at all ("harness error:") is started again.
#
# usage: scripts/peer.sh [crun|pct|all]   (default all)
# env: PVELXC_SHIM_DIR  directory with containerd-shim-pvelxc-v2 and the double (pct, pvesh, pveversion, pve-shape; default
#                       target/release); PVE_PROFILE the PVE version the double plays (pve9.1)
#      PVELXC_INIT_BIN  the static pvelxc-init (default target/x86_64-unknown-linux-gnu/dist/pvelxc-init)
#      PEER_LIB (default ../shared/peer), PEER_EXPECTED_DIR (default tests/peer-expected),
#      PEER_ONLY=TestName (run just that test, PEER_REPEAT times (default 1), print each result,
#      no gate: for chasing one test), PEER_FLAKY_RETRIES, PEER_ALLOW_IMPROVEMENT,
#      PEER_LOG_ONLY=<go test -v log> (gate an existing
#      log of the path given as $1 without running anything: for checking this script and the files)
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER_LIB:-$REPO_ROOT/../shared/peer}
EXPECTED_DIR=${PEER_EXPECTED_DIR:-$REPO_ROOT/tests/peer-expected}
BIN_DIR=${PVELXC_SHIM_DIR:-$REPO_ROOT/target/release}
FLAKY_RETRIES=${PEER_FLAKY_RETRIES:-2}
WHAT=${1:-all}
case $WHAT in crun | pct | all) ;; *) echo "usage: scripts/peer.sh [crun|pct|all]" >&2; exit 2 ;; esac
case $FLAKY_RETRIES in '' | *[!0-9]*) echo "PEER_FLAKY_RETRIES must be a number" >&2; exit 2 ;; esac

# shellcheck source=scripts/peer-gate.sh
. "$REPO_ROOT/scripts/peer-gate.sh"

if [ -n "${PEER_LOG_ONLY:-}" ]; then
    [ "$WHAT" != all ] || { echo "PEER_LOG_ONLY needs the path (crun or pct) as argument" >&2; exit 2; }
    results_of "$PEER_LOG_ONLY" >"${TMPDIR:-/tmp}/peer-got.$$"
    rc=0
    gate "$WHAT" "$EXPECTED_DIR/$WHAT.txt" "${TMPDIR:-/tmp}/peer-got.$$" || rc=$?
    rm -f "${TMPDIR:-/tmp}/peer-got.$$"
    exit "$rc"
fi

[ -f "$PEER/run.sh" ] || { echo "peer harness not found at $PEER" >&2; exit 1; }
[ -x "$BIN_DIR/containerd-shim-pvelxc-v2" ] || { echo "no shim at $BIN_DIR/containerd-shim-pvelxc-v2" >&2; exit 1; }

WORK=$(mktemp -d /tmp/peer-gate-XXXXXX)
SHIM_DIR=$WORK/shim
mkdir -p "$SHIM_DIR"
trap 'rm -rf "$WORK"' EXIT
cp "$BIN_DIR/containerd-shim-pvelxc-v2" "$SHIM_DIR/"

bash "$PEER/build.sh"

# run_suite LABEL OUT [HARNESS_DIR]: runs the suite (or, with a harness copy from only_test_harness,
# one test) and writes the per-test results ("TestName PASS|FAIL|SKIP" lines) to OUT. Only a harness
# that did not come up is started again; the tests' results never are.
run_suite() {
    local label=$1 out=$2 lib=${3:-$PEER} raw last log try others
    raw=$WORK/raw.txt
    # TestContainerKillInit* grep the whole host's `ps ax` for "sleep 1": say so when one runs.
    others=$(pgrep -a -f '^(/[^ ]*/)?sleep 1' || true)
    [ -z "$others" ] || echo "peer[$label]: warning: 'sleep 1...' running on this host, TestContainerKillInit* will see it: $others"
    for try in 1 2 3 4 5; do
        ${SHAPE[@]+"${SHAPE[@]}"} bash "$lib/run.sh" io.containerd.pvelxc.v2 "$SHIM_DIR" >"$raw" 2>&1 || true
        last=$(tail -n 1 "$raw")
        case $last in
            "harness error:"*) echo "peer[$label]: harness did not come up (try $try): $last"; reset ;;
            *) break ;;
        esac
    done
    grep -E '^(log|suite|failed|did not finish|note):' "$raw" | sed "s/^/peer[$label]: /" || true
    echo "peer[$label]: $last"
    case $last in
        "harness error:"*) echo "peer[$label]: the harness never came up" >&2; return 1 ;;
    esac
    log=$(sed -n 's/^log: //p' "$raw" | tail -n 1)
    [ -f "$log" ] || { echo "peer[$label]: run.sh named no log" >&2; return 1; }
    results_of "$log" >"$out"
    # What each failed test said: go test -v streams a test's own lines (indented, after its
    # `=== RUN/CONT` header) among the others', so collect them per test; containerd's debug
    # lines (log_hook) are left out. A CI log alone then tells why.
    local t
    for t in $(awk '$2 == "FAIL" {print $1}' "$out"); do
        awk -v t="$t" '
            $0 ~ "^=== (RUN|CONT|NAME) +" t "$" { on = 1; next }
            /^(===|---) / { on = 0 }
            on && /^    / && !/log_hook/ && n < 20 { print; n++ }' "$log" |
            sed "s/^/peer[$label]: $t | /" || true
    done
}

# A copy of the harness whose managed mode runs only TEST (run.sh has no selection of its own in
# that mode): the one `ARGS=()` line becomes `ARGS=(-test.run '^TEST$')`; anything else is an error.
only_test_harness() {
    local test=$1 dir=$WORK/lib-$1 n
    case $test in Test*) ;; *) return 1 ;; esac
    case $test in *[!A-Za-z0-9_]*) return 1 ;; esac
    rm -rf "$dir"
    cp -r "$PEER" "$dir"
    chmod -R u+w "$dir"
    n=$(grep -c '^  ARGS=()$' "$dir/run.sh" || true)
    [ "$n" = 1 ] || { echo "peer: cannot select one test in $PEER/run.sh (its managed-mode ARGS line changed)" >&2; return 1; }
    sed -i "s/^  ARGS=()\$/  ARGS=(-test.run '^$test\$')/" "$dir/run.sh"
    echo "$dir"
}

# rerun_flaky LABEL GOT: for each `flaky` test that failed in GOT, rerun just that test up to
# FLAKY_RETRIES times; every result is printed and GOT gets the first pass (or the last failure),
# with the history kept for the table.
rerun_flaky() {
    local label=$1 got=$2 exp=$3 t first r i lib one hist
    local flaky
    flaky=$(awk '$2 == "flaky" {print $1}' "$exp")
    for t in $flaky; do # test names: one word each (check_expected_file)
        first=$(awk -v t="$t" '$1 == t {print $2}' "$got")
        [ "$first" = FAIL ] || continue
        lib=$(only_test_harness "$t") || return 1
        hist=FAIL
        for i in $(seq 1 "$FLAKY_RETRIES"); do
            reset
            one=$WORK/one.txt
            run_suite "$label $t rerun $i of $FLAKY_RETRIES" "$one" "$lib" || return 1
            r=$(awk -v t="$t" '$1 == t {print $2}' "$one")
            r=${r:-NONE}
            hist="$hist,$r"
            echo "peer[$label]: flaky $t: run 1 FAIL, rerun $i $r"
            [ "$r" = PASS ] && break
        done
        awk -v t="$t" -v r="${r:-FAIL}" -v h="$hist" '$1 == t {$2 = r; $3 = h} {print}' "$got" >"$got.new"
        mv "$got.new" "$got"
    done
}

# reset: what a previous run left behind must not fail the next one. A test that fails before its
# cleanup (TestKillContainerDeletedByRunc on the pct path leaves its task running) leaves a
# container in the managed daemon's store, and TestContainerList, the suite's first test, then
# sees it. So: destroy the double's CTs, then drop the managed daemon's root/state (nothing runs
# between two suite runs: run.sh has stopped its daemons).
# On the pct path all of it happens inside the host shape, where the suite's mounts are.
reset() {
    local m ct
    if [ -n "${PVE_DOUBLE_ROOT:-}" ] && [ -x "$SHIM_DIR/pct" ]; then
        for ct in $(${SHAPE[@]+"${SHAPE[@]}"} "$SHIM_DIR/pct" list 2>/dev/null | awk 'NR>1{print $1}'); do
            ${SHAPE[@]+"${SHAPE[@]}"} "$SHIM_DIR/pct" destroy "$ct" --force 1 --purge 1 >/dev/null 2>&1 || true
        done
    fi
    m=${PEER_DIR:-/tmp/peer-cache}/managed
    [ -d "$m" ] || return 0
    # shellcheck disable=SC2016 # an awk program
    ${SHAPE[@]+"${SHAPE[@]}"} awk -v d="$m/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r mp; do
            ${SHAPE[@]+"${SHAPE[@]}"} umount -l "$mp" 2>/dev/null || true
        done
    ${SHAPE[@]+"${SHAPE[@]}"} rm -rf --one-file-system "$m/root" "$m/state"
}

# path NAME [LABEL]: one suite run of the path (expected results tests/peer-expected/NAME.txt),
# flaky reruns, the gate.
path() {
    local label=${2:-$1} exp=$EXPECTED_DIR/$1.txt got=$WORK/got-${2:-$1}.txt
    [ -f "$exp" ] || { echo "peer[$label]: no expected-results file $exp" >&2; return 1; }
    check_expected_file "$exp" || return 1
    if [ -n "${PEER_ONLY:-}" ]; then
        local lib i r fails=0
        lib=$(only_test_harness "$PEER_ONLY") || { echo "PEER_ONLY: not a test name: $PEER_ONLY" >&2; return 1; }
        for i in $(seq 1 "${PEER_REPEAT:-1}"); do
            reset
            run_suite "$label $PEER_ONLY $i" "$got" "$lib" || return 1
            r=$(awk -v t="$PEER_ONLY" '$1 == t {print $2}' "$got")
            echo "peer[$label]: $PEER_ONLY run $i: ${r:-NONE}"
            [ "$r" = PASS ] || fails=$((fails + 1))
        done
        echo "peer[$label]: $PEER_ONLY failed $fails of ${PEER_REPEAT:-1} runs (no gate: PEER_ONLY)"
        [ "$fails" = 0 ]
        return
    fi
    reset
    run_suite "$label" "$got" || return 1
    rerun_flaky "$label" "$got" "$exp" || return 1
    gate "$label" "$exp" "$got"
}

SHAPE=() # command prefix the harness runs under (the pct path: pve-shape ... exec --)
rc=0
if [ "$WHAT" = crun ] || [ "$WHAT" = all ]; then
    path crun || rc=1
fi

if [ "$WHAT" = pct ] || [ "$WHAT" = all ]; then
    for b in pct pvesh pveversion pve-shape; do
        [ -x "$BIN_DIR/$b" ] || { echo "peer[pct]: the Proxmox double is not built ($BIN_DIR/$b; cargo build --release -p pve-double)" >&2; exit 1; }
        cp "$BIN_DIR/$b" "$SHIM_DIR/"
    done
    init=${PVELXC_INIT_BIN:-$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist/pvelxc-init}
    [ -x "$init" ] || { echo "peer[pct]: static pvelxc-init missing at $init (scripts/setup.sh builds it)" >&2; exit 1; }
    cp "$init" "$SHIM_DIR/pvelxc-init"
    # The suite (harness, containerd, shims) runs inside a host shaped like a Proxmox VE node
    # (pve-shape: /etc/pve the double's cluster tree, /run noexec, pct start through its service
    # manager), as tests/pct_ctr.rs does, once per Proxmox VE version in PEER_PCT_PROFILES
    # (default: PVE_PROFILE, else pve9.1). Ten foreign guests of other nodes hold the first
    # VMIDs of the shim's range, as on a busy cluster; they must come out untouched.
    for prof in ${PEER_PCT_PROFILES:-${PVE_PROFILE:-pve9.1}}; do
        PCT_ROOT=$(mktemp -d /tmp/peer-pve-XXXXXX)
        chmod 755 "$PCT_ROOT"
        printf 'backend = "pct"\n[pct]\nvmid_min = 700000\nvmid_max = 709999\nstate_dir = "%s/ct"\n' \
            "$PCT_ROOT" >"$PCT_ROOT/pvelxc.toml"
        export PVELXC_CONFIG=$PCT_ROOT/pvelxc.toml PVE_DOUBLE_ROOT=$PCT_ROOT
        SHAPE=("$SHIM_DIR/pve-shape" --root "$PCT_ROOT" --profile "$prof" --foreign-from 700000 --foreign 10 exec --)
        echo "peer[pct-$prof]: Proxmox VE profile $prof"
        path pct "pct-$prof" || rc=1
        reset
        foreign=$(find "$PCT_ROOT/etc/pve/nodes" -path '*/pve[23]/*' -name '70000?.conf' | wc -l)
        if [ "$foreign" -ne 10 ]; then
            echo "peer[pct-$prof]: foreign guests touched: $foreign of 10 configs left" >&2
            rc=1
        fi
        SHAPE=()
        "$SHIM_DIR/pve-shape" --root "$PCT_ROOT" stop || rc=1
        rm -rf --one-file-system "$PCT_ROOT"
    done
    unset PVELXC_CONFIG PVE_DOUBLE_ROOT
fi
exit "$rc"
