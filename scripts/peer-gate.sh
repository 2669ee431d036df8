# shellcheck shell=bash
# The per-test gate of containerd's suite, sourced by scripts/peer.sh (no side effects here).
#   results_of LOG              "TestName PASS|FAIL|SKIP" for every top-level test of a go test -v log
#   check_expected_file FILE    syntax of an expected-results file (see scripts/peer.sh)
#   gate LABEL EXPECTED GOT     per-test table; returns 1 on a regression, a change, a test missing
#                               from EXPECTED, or an unexpected pass (unless PEER_ALLOW_IMPROVEMENT=1)

# Top-level results are the `--- PASS|FAIL|SKIP: TestX (1.23s)` lines at column 0 (subtests are
# indented), as the harness counts them.
results_of() {
    grep -E '^--- (PASS|FAIL|SKIP): Test[A-Za-z0-9_]+ ' "$1" | awk '{sub(":", "", $2); print $3, $2}' | sort -u -k1,1
}

check_expected_file() {
    local file=$1 bad dup
    bad=$(grep -vE '^[[:space:]]*(#.*)?$' "$file" |
        grep -vE '^Test[A-Za-z0-9_]+[[:space:]]+(pass([[:space:]]+#.*)?|(fail|skip|flaky)[[:space:]]+#[[:space:]]*[^[:space:]].*)$' || true)
    if [ -n "$bad" ]; then
        echo "$file: malformed lines (want \`TestName pass|fail|skip|flaky  # reason\`, reason required but for pass):" >&2
        echo "$bad" >&2
        return 1
    fi
    dup=$(grep -E '^Test' "$file" | awk '{print $1}' | sort | uniq -d)
    if [ -n "$dup" ]; then
        echo "$file: tests listed twice: $dup" >&2
        return 1
    fi
}

gate() {
    local label=$1 exp=$2 got=$3
    awk -v label="$label" -v expfile="$exp" -v allow="${PEER_ALLOW_IMPROVEMENT:-}" '
        FNR == NR {
            if ($0 ~ /^Test/) {
                e[$1] = $2
                r = $0; sub(/^[^#]*#?[[:space:]]*/, "", r); why[$1] = r
                all[$1] = 1
            }
            next
        }
        { g[$1] = $2; h[$1] = $3; all[$1] = 1 }
        END {
            n = 0
            for (t in all) names[++n] = t
            # insertion sort: portable awk has no sort
            for (i = 2; i <= n; i++) { v = names[i]; j = i - 1; while (j > 0 && names[j] > v) { names[j + 1] = names[j]; j-- } names[j + 1] = v }
            printf "peer[%s]: per-test results (expected: %s)\n", label, expfile
            printf "  %-46s %-9s %-22s %s\n", "test", "expected", "got", "verdict"
            reg = 0; imp = 0; chg = 0; new = 0; ok = 0
            for (i = 1; i <= n; i++) {
                t = names[i]; x = (t in e) ? e[t] : "-"; r = (t in g) ? g[t] : "NONE"
                shown = (h[t] != "") ? r " (" h[t] ")" : r
                if (x == "-") { v = "NOT IN FILE: add it"; new++ }
                else if (x == "pass" || x == "flaky") {
                    if (r == "PASS") { v = (h[t] != "") ? "ok (flaky: " why[t] ")" : "ok"; ok++ }
                    else { v = "REGRESSION"; reg++ }
                } else if (x == "fail") {
                    if (r == "FAIL") { v = "ok (known: " why[t] ")"; ok++ }
                    else if (r == "PASS") { v = "UNEXPECTED PASS"; imp++ }
                    else { v = "CHANGED"; chg++ }
                } else if (x == "skip") {
                    if (r == "SKIP") { v = "ok (skip: " why[t] ")"; ok++ }
                    else if (r == "PASS") { v = "UNEXPECTED PASS"; imp++ }
                    else if (r == "FAIL") { v = "REGRESSION"; reg++ }
                    else { v = "CHANGED"; chg++ }
                }
                if (length(v) > 90) v = substr(v, 1, 87) "..."
                printf "  %-46s %-9s %-22s %s\n", t, x, shown, v
            }
            printf "peer[%s]: %d tests: %d as expected, %d regressions, %d unexpected passes, %d changed, %d not in the file\n", label, n, ok, reg, imp, chg, new
            bad = reg + chg + new
            if (imp > 0 && allow != "1") bad += imp
            if (imp > 0) printf "peer[%s]: %d test(s) now pass that %s expects not to: update that file (PEER_ALLOW_IMPROVEMENT=1 to report without failing)\n", label, imp, expfile
            if (bad > 0) { printf "peer[%s]: FAILED (results differ from %s)\n", label, expfile; exit 1 }
            printf "peer[%s]: ok (every test as expected)\n", label
        }' "$exp" "$got"
}
