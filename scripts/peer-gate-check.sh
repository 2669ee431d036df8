#!/usr/bin/env bash
# Checks the per-test gate of containerd's suite (scripts/peer-gate.sh) and the expected-results
# files, without running the suite (so it runs everywhere, the GitHub workflow too):
#   * each file is well-formed, and results exactly as expected pass the gate;
#   * for EVERY test expected to pass (or flaky), a run where it fails, where it skips, and where
#     it reports nothing each fail the gate;
#   * an unexpected pass fails the gate, and passes it only with PEER_ALLOW_IMPROVEMENT=1;
#   * README.md's results table lists exactly the tests not expected to pass, with both kinds.
# usage: scripts/peer-gate-check.sh   (exit 0 when the gate holds for every test)
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/peer-gate.sh
. "$REPO_ROOT/scripts/peer-gate.sh"
W=$(mktemp -d /tmp/peer-gate-check-XXXXXX)
trap 'rm -rf "$W"' EXIT

bad=0
for exp in "$REPO_ROOT"/tests/peer-expected/*.txt; do
    label=$(basename "$exp" .txt)
    check_expected_file "$exp"
    # the results the file expects, as a go test -v log would give them
    awk '/^Test/ { r = ($2 == "pass" || $2 == "flaky") ? "PASS" : ($2 == "fail") ? "FAIL" : "SKIP"
                   printf "--- %s: %s (0.00s)\n", r, $1 }' "$exp" >"$W/log"
    results_of "$W/log" >"$W/got"
    gate "$label" "$exp" "$W/got" >"$W/out" || { cat "$W/out"; echo "$label: expected results fail the gate" >&2; exit 1; }
    n=0
    passes=$(awk '/^Test/ && ($2 == "pass" || $2 == "flaky") {print $1}' "$exp")
    for t in $passes; do # one word each (check_expected_file)
        for how in FAIL SKIP NONE; do
            if [ "$how" = NONE ]; then
                grep -v "^--- PASS: $t " "$W/log" >"$W/log2" || true
            else
                sed "s/^--- PASS: $t /--- $how: $t /" "$W/log" >"$W/log2"
            fi
            results_of "$W/log2" >"$W/got2"
            if gate "$label" "$exp" "$W/got2" >/dev/null; then
                echo "$label: $t reported as $how passes the gate" >&2
                bad=$((bad + 1))
            fi
        done
        n=$((n + 1))
    done
    # an unexpected pass
    t=$(awk '/^Test/ && $2 == "fail" {print $1; exit}' "$exp")
    if [ -n "$t" ]; then
        sed "s/^--- FAIL: $t /--- PASS: $t /" "$W/log" >"$W/log2"
        results_of "$W/log2" >"$W/got2"
        if gate "$label" "$exp" "$W/got2" >/dev/null; then
            echo "$label: unexpected pass of $t passes the gate" >&2
            bad=$((bad + 1))
        fi
        PEER_ALLOW_IMPROVEMENT=1 gate "$label" "$exp" "$W/got2" >/dev/null ||
            { echo "$label: PEER_ALLOW_IMPROVEMENT=1 does not let an unexpected pass through" >&2; bad=$((bad + 1)); }
    fi
    echo "peer-gate-check[$label]: each of $n expected passes, failing, skipping or missing, fails the gate"
done

# The README's results table (rows `| TestX | crun | pct | why |` after "Expected results") must
# say what the files say: every test either file does not expect to pass, with both kinds.
awk '/^Expected results/ {on = 1; next} on && /^## / {exit} on && /^\| Test/ {gsub(/ /, ""); split($0, f, "|"); print f[2], f[3], f[4]}' \
    "$REPO_ROOT/README.md" | sort >"$W/readme"
join -a1 -a2 -e pass -o 0,1.2,2.2 \
    <(awk '/^Test/ {print $1, $2}' "$REPO_ROOT/tests/peer-expected/crun.txt" | sort) \
    <(awk '/^Test/ {print $1, $2}' "$REPO_ROOT/tests/peer-expected/pct.txt" | sort) |
    awk '$2 != "pass" || $3 != "pass"' | sort >"$W/files"
if ! diff "$W/files" "$W/readme" >"$W/diff"; then
    echo "README.md's results table differs from tests/peer-expected/*.txt (< files, > README):" >&2
    cat "$W/diff" >&2
    bad=$((bad + 1))
else
    echo "peer-gate-check: README.md's results table matches tests/peer-expected/*.txt"
fi
[ "$bad" -eq 0 ] || { echo "peer-gate-check: $bad problems" >&2; exit 1; }
