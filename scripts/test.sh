#!/usr/bin/env bash
# Everything CI runs: setup, fmt, clippy, the whole workspace's tests (release: the integration
# tests drive the release shim binary through a private containerd), containerd's own suite.
#
# Leaving a suite out is an explicit decision, never a guess from what is missing:
#   PVELXC_SKIP_SUITES=a,b   (comma-separated, of these names)
#     vm    the micro-VM tests (tests/vm_ctr.rs, crates/pvelxc-agent boot and QEMU tests): need
#           bookworm-backports' QEMU and the guest kernel cache (crates/pvelxc-agent/setup-host.sh)
#     lxc   the tests on real LXC of crates/pve-double and crates/pvelxc-init (tests/lxc.rs)
#     root  crates/pvelxc-init's host tests that need root
#     peer  containerd's integration/client suite (scripts/peer.sh): needs ../shared/peer
#     lab   the Proxmox-9-shaped lab host (scripts/lab.sh short: Debian 13, systemd, cgroup v2,
#           booted under QEMU): needs mmdebstrap, QEMU and Debian's mirror
#   The GitHub workflow sets vm,peer,lab; .ci/run on these machines sets nothing.
# Each left-out suite is printed as `NOT RUN: <what> (<why>)`. Anything else a test needs and
# cannot find is a skip: printed as `SKIP: <test>: <reason>` (tests/common/skip.rs), counted
# here through PVELXC_SKIP_LOG, and a failure of that test under CI=true.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"

SKIP_SUITES=${PVELXC_SKIP_SUITES:-}
for s in ${SKIP_SUITES//,/ }; do
    case $s in
        vm | lxc | root | peer | lab) ;;
        *) echo "PVELXC_SKIP_SUITES: unknown suite '$s' (known: vm, lxc, root, peer, lab)" >&2; exit 2 ;;
    esac
done
excluded() { case ",$SKIP_SUITES," in *",$1,"*) return 0 ;; esac; return 1; }
if excluded vm && [ -n "${PVELXC_VM_REQUIRED:-}" ]; then
    echo "PVELXC_SKIP_SUITES names vm but PVELXC_VM_REQUIRED is set" >&2; exit 2
fi
if excluded lxc && [ -n "${PVELXC_REQUIRE_LXC:-}" ]; then
    echo "PVELXC_SKIP_SUITES names lxc but PVELXC_REQUIRE_LXC is set" >&2; exit 2
fi
if excluded peer && [ -n "${PEER_REQUIRED:-}" ]; then
    echo "PVELXC_SKIP_SUITES names peer but PEER_REQUIRED is set" >&2; exit 2
fi
export PVELXC_SKIP_SUITES=$SKIP_SUITES

NOT_RUN=()
not_run() { NOT_RUN+=("NOT RUN: $1 ($2)"); echo "NOT RUN: $1 ($2)"; }
excluded vm && not_run "vm suite: tests/vm_ctr.rs, crates/pvelxc-agent boot/QEMU tests" \
    "PVELXC_SKIP_SUITES=vm: no bookworm-backports QEMU and no guest kernel cache on this runner"
excluded lxc && not_run "lxc suite: crates/pve-double and crates/pvelxc-init tests on real LXC" \
    "PVELXC_SKIP_SUITES=lxc"
excluded root && not_run "root suite: crates/pvelxc-init host tests that need root" "PVELXC_SKIP_SUITES=root"
excluded peer && not_run "containerd's integration/client suite (scripts/peer.sh)" \
    "PVELXC_SKIP_SUITES=peer: the peer harness ../shared/peer is not part of this repository"
excluded lab && not_run "lab host suite (scripts/lab.sh short: Debian 13, systemd, cgroup v2 under QEMU)" \
    "PVELXC_SKIP_SUITES=lab"

"$REPO_ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
command -v cargo >/dev/null || . "$HOME/.cargo/env"

step() { echo; echo "=== $* ($(date +%T))"; }

# The static helpers the pct and vm backends put into guests (built by setup.sh).
export PVELXC_INIT_BIN="$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist/pvelxc-init"
export PVELXC_AGENT_BIN="$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist/pvelxc-agent"

TAB=$(printf '\t')
LOGS=$(mktemp -d /tmp/pvelxc-test-XXXXXX)
trap 'rm -rf "$LOGS"' EXIT
SELF_SKIPS=$LOGS/self-check.skips
MAIN_SKIPS=$LOGS/main.skips
: >"$SELF_SKIPS"
: >"$MAIN_SKIPS"

# test_totals LOG: the sum of cargo's "test result:" lines.
test_totals() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) g += $(i-1) } }
         END { printf "%d passed, %d failed, %d ignored", p, f, g }' "$1"
}

# print_skips FILE: the recorded skips, one per line, with a count per kind.
print_skips() {
    awk -F'\t' '{ n++; k[$1]++; printf "  SKIP: %s: %s [%s]\n", $2, $3, $1 }
        END { printf "skipped: %d", n; for (x in k) printf " (%s: %d)", x, k[x]; printf "\n" }' "$1"
}

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

# Harness self-check: the same ctr tests against the stock Go shim. A failure here is a harness or
# machine problem, not a shim bug. Tests only our shim can pass are skipped here as
# `not-applicable` (they run in the main run below, where nothing may skip under CI).
step "harness self-check against io.containerd.runc.v2"
# From here on a failing step does not stop the others; the summary names every failed step.
FAILED=()
PVELXC_SKIP_LOG=$SELF_SKIPS PVELXC_TEST_RUNTIME=io.containerd.runc.v2 \
    cargo test --release --test crun_ctr -- --test-threads "${TEST_THREADS:-2}" 2>&1 | tee "$LOGS/self-check.log" ||
    FAILED+=("harness self-check")
if grep -qv "^not-applicable$TAB" "$SELF_SKIPS"; then
    echo "self-check: a skip other than not-applicable (see the summary)" >&2
    FAILED+=("harness self-check skips")
fi

step "cargo test --workspace --release"
PVELXC_SKIP_LOG=$MAIN_SKIPS cargo test --workspace --release --no-fail-fast -- --test-threads "${TEST_THREADS:-2}" 2>&1 | tee "$LOGS/main.log" ||
    FAILED+=("cargo test --workspace")

# containerd's own integration/client suite (../shared/peer), gated test by test against
# tests/peer-expected/{crun,pct}.txt.
# The gate itself, on synthetic results (no harness needed): every expected pass that fails,
# skips or goes missing must fail it.
# The pct backend on every Proxmox VE version the double plays (the workspace run above used
# the default, pve9.1): tests/pct_ctr.rs and tests/hostile_pct.rs inside a host shape each, and
# the CRI tests of pods as CTs (tests/cri.rs, names with `pct`).
for prof in ${PCT_PROFILES:-pve8 pve9.0}; do
    step "pct tests on profile $prof"
    (
        rc=0
        PVE_PROFILE=$prof PVELXC_SKIP_LOG=$MAIN_SKIPS cargo test --release --no-fail-fast --test pct_ctr --test hostile_pct \
            -- --test-threads "${TEST_THREADS:-2}" 2>&1 || rc=1
        PVE_PROFILE=$prof PVELXC_SKIP_LOG=$MAIN_SKIPS cargo test --release --no-fail-fast --test cri pct \
            -- --test-threads "${TEST_THREADS:-2}" 2>&1 || rc=1
        exit $rc
    ) | tee "$LOGS/pct-$prof.log" || FAILED+=("pct tests on $prof")
done

# The crun and pct tests on a Proxmox-9-shaped host: Debian 13, systemd as PID 1 (`pct start`
# a real `systemctl start pve-container@<vmid>`), cgroup v2 only, /run noexec; booted under
# QEMU from a cached image (README "Lab host").
step "lab host: scripts/lab.sh short"
if excluded lab; then
    echo "NOT RUN: lab host suite (PVELXC_SKIP_SUITES=lab)"
else
    "$REPO_ROOT/scripts/lab.sh" short 2>&1 | tee "$LOGS/lab.log" || FAILED+=("lab host")
fi

step "Debian package: build, install/reinstall/remove/purge in a scratch root, a container run"
"$REPO_ROOT/scripts/package-test.sh" || FAILED+=("Debian package")

step "containerd 1.7 (Debian 13) and 2.x (unstable) lanes: the ctr suite, gated against their own runc shim"
if [ -n "${PVELXC_SKIP_LANES:-}" ]; then
    echo "NOT RUN: containerd 1.7/2.x lanes (PVELXC_SKIP_LANES set)"
else
    "$REPO_ROOT/scripts/containerd-lanes.sh" all 2>&1 | tee "$LOGS/lanes.log" || FAILED+=("containerd 1.7/2.x lanes")
fi

step "containerd suite gate check"
"$REPO_ROOT/scripts/peer-gate-check.sh" || FAILED+=("containerd suite gate check")

step "containerd integration suite (peer)"
if excluded peer; then
    echo "NOT RUN: containerd's integration/client suite (PVELXC_SKIP_SUITES=peer)"
elif [ ! -f "$REPO_ROOT/../shared/peer/run.sh" ] && [ -z "${PEER_LIB:-}" ]; then
    echo "the peer harness (../shared/peer) is not next to this checkout; set PVELXC_SKIP_SUITES=peer to leave the suite out" >&2
    FAILED+=("containerd suite: no harness")
else
    "$REPO_ROOT/scripts/peer.sh" "${PEER_PATHS:-all}" 2>&1 | tee "$LOGS/peer.log" || FAILED+=("containerd suite (peer)")
fi

step "summary"
# why LOG REGEX: at most 40 lines of LOG matching REGEX, under the log's name.
why() {
    [ -f "$1" ] || return 0
    grep -qE "$2" "$1" || return 0
    echo "--- why, from ${1##*/}:"
    grep -E "$2" "$1" | tail -n 40
}
echo "self-check (stock shim): $(test_totals "$LOGS/self-check.log"); tests only our shim can pass, not applicable there:"
print_skips "$SELF_SKIPS"
echo "workspace tests: $(test_totals "$LOGS/main.log")"
for f in "$LOGS"/pct-*.log; do
    [ -f "$f" ] && { p=${f##*/pct-}; echo "pct tests on ${p%.log}: $(test_totals "$f")"; }
done
print_skips "$MAIN_SKIPS"
for l in ${NOT_RUN[@]+"${NOT_RUN[@]}"}; do echo "$l"; done
if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
    # Under CI a test skips only for a suite PVELXC_SKIP_SUITES leaves out (tests/common/skip.rs
    # panics otherwise; this catches a skip that bypassed it).
    if grep -qv "^excluded$TAB" "$MAIN_SKIPS"; then
        echo "CI: tests skipped that this machine must run (see above)" >&2
        FAILED+=("skips under CI")
    fi
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    # CI keeps only the tail of this output: say here, for each failed step, the lines that say why.
    failed() { case " ${FAILED[*]} " in *"$1"*) return 0 ;; esac; return 1; }
    ! failed lanes || why "$LOGS/lanes.log" 'REGRESSION|failed \(see|no test passed'
    ! failed lab || why "$LOGS/lab.log" ' FAILED$|^lab: |^lab-guest: '
    ! failed peer || why "$LOGS/peer.log" 'REGRESSION|UNEXPECTED PASS|CHANGED|NOT IN FILE|: FAILED|never came up|touched|run\.sh named|harness not found|missing at|not built'
    for f in "$LOGS"/main.log "$LOGS"/pct-*.log "$LOGS"/self-check.log; do why "$f" '^test .* FAILED$|^failures:$|panicked at'; done
    printf 'FAILED: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
step "done"
