#!/usr/bin/env bash
# The ctr suite (tests/crun_ctr.rs, tests/logging.rs) against other containerd releases than the
# host's 1.6.20: Debian 13's containerd 1.7 (what Proxmox VE 9 hosts run) and the 2.x of
# Debian unstable. Their packages come through apt with a private sources list (signatures
# checked against debian-archive-keyring, nothing installed: dpkg-deb -x into a cache), their
# containerd and ctr go first on PATH, and each lane runs our shim and, for comparison, that
# release's own runc shim (the harness self-check). Prints a results table; exit 1 when our
# shim fails a test on any lane.
#
# usage: scripts/containerd-lanes.sh [1.7|2.x|all]   (default all)
# env:   LANES_CACHE (default /var/cache/pvelxc/lanes), DEBIAN_MIRROR (default: the host's)
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"
WHAT=${1:-all}
case $WHAT in 1.7 | 2.x | all) ;; *) echo "usage: scripts/containerd-lanes.sh [1.7|2.x|all]" >&2; exit 2 ;; esac
CACHE=${LANES_CACHE:-/var/cache/pvelxc/lanes}
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/* *$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
export PVELXC_INIT_BIN=${PVELXC_INIT_BIN:-$REPO_ROOT/target/x86_64-unknown-linux-gnu/dist/pvelxc-init}

# fetch SUITE: containerd from SUITE into $CACHE/SUITE/root; prints the bin directory.
fetch() {
    local suite=$1 a=$CACHE/$1 apt deb
    mkdir -p "$a/lists/partial" "$a/archives/partial"
    echo "deb [signed-by=$KEYRING] $MIRROR $suite main" >"$a/sources.list"
    apt=(apt-get -q -o "Dir::Etc::SourceList=$a/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$a/lists" -o "Dir::Cache::Archives=$a/archives" -o Debug::NoLocking=1
        -o APT::Sandbox::User=root)
    "${apt[@]}" update >"$a/update.log" 2>&1 || { echo "lanes: apt update of $suite failed (see $a/update.log)" >&2; return 1; }
    (cd "$a" && rm -f containerd_*.deb && "${apt[@]}" download containerd >"$a/download.log" 2>&1) ||
        { echo "lanes: download of containerd from $suite failed (see $a/download.log)" >&2; return 1; }
    deb=$(ls "$a"/containerd_*.deb)
    rm -rf "$a/root"
    dpkg-deb -x "$deb" "$a/root"
    echo "$a/root/usr/bin"
}

# run LABEL BINDIR RUNTIME: the two test files with BINDIR first on PATH; prints "passed failed".
run() {
    local label=$1 bin=$2 rt=$3 log=$CACHE/$1-$3.log
    PATH="$bin:$PATH" PVELXC_TEST_RUNTIME=$rt cargo test --release --test crun_ctr --test logging \
        -- --test-threads 2 >"$log" 2>&1 || true
    awk '/^test result:/ {p += $4; f += $6} END {printf "%d %d", p, f}' "$log"
}

rows=()
rc=0
for lane in 1.7 2.x; do
    [ "$WHAT" = all ] || [ "$WHAT" = "$lane" ] || continue
    case $lane in 1.7) suite=trixie ;; 2.x) suite=sid ;; esac
    bin=$(fetch "$suite") || { rc=1; continue; }
    ver=$("$bin/containerd" --version | awk '{print $3}')
    read -r ours_p ours_f <<<"$(run "$lane" "$bin" io.containerd.pvelxc.v2)"
    read -r stock_p stock_f <<<"$(run "$lane" "$bin" io.containerd.runc.v2)"
    rows+=("$(printf '%-6s %-22s %-22s %s' "$lane" "$ver" "$ours_p passed, $ours_f failed" "$stock_p passed, $stock_f failed")")
    if [ "$ours_f" != 0 ] || [ "$ours_p" = 0 ]; then
        echo "lanes: our shim failed on containerd $ver; log: $CACHE/$lane-io.containerd.pvelxc.v2.log" >&2
        grep -E '^test .* FAILED|panicked' "$CACHE/$lane-io.containerd.pvelxc.v2.log" | head -n 20 >&2 || true
        rc=1
    fi
done
printf '%-6s %-22s %-22s %s\n' lane containerd "io.containerd.pvelxc.v2" "its own io.containerd.runc.v2"
printf '%s\n' "${rows[@]}"
exit "$rc"
