#!/usr/bin/env bash
# Where the time of a `ctr run --rm /bin/true` (or a `ctr task exec /bin/true`) goes, our shim
# and the stock shim side by side: RUNS back-to-back runs of each under `perf record` of the
# scheduler's exec/exit/fork events (cheap tracepoints, no syscall tracing), split into phases by
# the processes that start and end.
#
#   scripts/bench-trace.sh [RUNS] [run|exec]    (default 20 run; needs perf, python3, root)
#
# run phases (medians, ms): ctr start → shim `start` action (containerd's work before the shim);
# the start action; → runtime create; runtime create; create's exit → the user's program;
# program exit → containerd's `delete` action; the delete action; → ctr's exit.
# exec phases: ctr start → runtime exec; runtime exec → the program; program exit → ctr's exit.
# Runtime calls are counted per run (create, start, exec, delete, ... each an exec of the
# runtime binary).
# Same private containerd and build selection as scripts/bench.sh.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO_ROOT/scripts/lib.sh"
prefer_installed_build

RUNS=${1:-20}
MODE=${2:-run}
case $MODE in run | exec) ;; *) die "mode: run or exec" ;; esac
CRUN=${CRUN:-$(command -v crun || echo /usr/bin/crun)}
[ "$(id -u)" = 0 ] || die "run as root"
for b in containerd ctr perf python3 "$CRUN"; do command -v "$b" >/dev/null || die "$b not found"; done
[ -x "$SHIM_DIR/containerd-shim-pvelxc-v2" ] || die "no shim binary in $SHIM_DIR"

hugetlb_fix
# shellcheck disable=SC2034 # read by start_containerd
PC_NS=trace-$$
start_containerd
trap stop_containerd EXIT
ROOTFS=$PC_DIR/rootfs
make_rootfs "$ROOTFS"

declare -A FLAGS=(
    [pvelxc]="--runtime io.containerd.pvelxc.v2"
    [runc-crun]="--runtime io.containerd.runc.v2 --runc-binary $CRUN"
)
for name in pvelxc runc-crun; do
    # shellcheck disable=SC2086
    for i in 1 2 3; do "${CTR[@]}" run --rm ${FLAGS[$name]} --env "$CONTAINER_PATH_ENV" --rootfs "$ROOTFS" "warm-$name-$i" /bin/true; done
    loop=$PC_DIR/loop-$name.sh
    if [ "$MODE" = exec ]; then
        # shellcheck disable=SC2086
        "${CTR[@]}" run -d ${FLAGS[$name]} --env "$CONTAINER_PATH_ENV" --rootfs "$ROOTFS" "idle-$name" /bin/sleep 100000
        for i in 1 2 3; do "${CTR[@]}" task exec --exec-id "warm-$i" "idle-$name" /bin/true; done
        cmd="${CTR[*]} task exec --exec-id x-\$i idle-$name /bin/true"
    else
        cmd="${CTR[*]} run --rm ${FLAGS[$name]} --env $CONTAINER_PATH_ENV --rootfs $ROOTFS t-$name-\$i /bin/true"
    fi
    printf 'for i in $(seq %s); do\n  %s\ndone\n' "$RUNS" "$cmd" >"$loop"
    perf record -q -o "$PC_DIR/$name.data" -a \
        -e sched:sched_process_exec,sched:sched_process_exit,sched:sched_process_fork -- bash "$loop" >/dev/null
    perf script -F comm,pid,tid,cpu,time,event,trace -i "$PC_DIR/$name.data" >"$PC_DIR/$name.txt" 2>/dev/null
    [ "$MODE" != exec ] || remove_container "idle-$name"
done

python3 - "$PC_DIR/pvelxc.txt" "$PC_DIR/runc-crun.txt" "$(readlink -f "$CRUN")" "$MODE" <<'PY'
import re, statistics, sys

def runs(path, crun):
    ev = []
    for line in open(path):
        m = re.match(r'\s*(.+?)\s+(\d+)/\d+\s+\[\d+\]\s+([\d.]+):\s+\S+:(\S+):\s*(.*)', line)
        if m:
            comm, pid, t, e, rest = m.groups()
            ev.append((float(t) * 1000, comm, int(pid), e, rest))
    out, cur = [], None
    for t, comm, pid, e, rest in ev:
        if e == 'sched_process_exec' and rest.startswith('filename=/usr/bin/ctr '):
            cur = {'t0': t, 'ctr': pid, 'x': []}
            out.append(cur)
        elif cur is None:
            continue
        elif e == 'sched_process_exec':
            f = rest.split()[0][len('filename='):]
            # crun's own re-exec from a memfd (/dev/fd/N) is not a new call
            if not f.startswith('/dev/fd/'):
                kind = ('shim' if 'containerd-shim' in f else
                        'rt' if f == crun or f.startswith('/proc/self/fd/') else
                        'true' if f.endswith('/true') else 'other')
                cur['x'].append((t, 'exec', kind, pid))
        elif e == 'sched_process_exit' and 'group_dead=true' in rest:
            cur['x'].append((t, 'exit', comm, pid))
            if pid == cur['ctr']:
                cur['end'] = t
    phases = []
    for r in out:
        if 'end' not in r:
            continue
        ends = {p: t for t, k, _, p in r['x'] if k == 'exit'}
        ex = [(kind, p, t) for t, k, kind, p in r['x'] if k == 'exec']
        sh = [e for e in ex if e[0] == 'shim']
        rt = [e for e in ex if e[0] == 'rt']
        tr = [e for e in ex if e[0] == 'true']
        if mode == 'run' and (len(sh) < 3 or not rt or not tr
                              or any(e[1] not in ends for e in sh + rt[:1] + tr)):
            continue
        if mode == 'exec':
            if not rt or not tr or rt[0][1] not in ends or tr[0][1] not in ends:
                continue
            phases.append({
                'ctr start -> runtime exec': rt[0][2] - r['t0'],
                'runtime exec -> program exec': tr[0][2] - rt[0][2],
                'program exit -> ctr exit': r['end'] - ends[tr[0][1]],
                'total': r['end'] - r['t0'],
                'runtime calls': len(rt),
            })
            continue
        start, _daemon, delete = sh[0], sh[1], sh[-1]
        phases.append({
            'ctr start -> shim start action': start[2] - r['t0'],
            'shim start action': ends[start[1]] - start[2],
            '-> runtime create': rt[0][2] - ends[start[1]],
            'runtime create': ends[rt[0][1]] - rt[0][2],
            'create exit -> program exec': tr[0][2] - ends[rt[0][1]],
            'program exit -> delete action': delete[2] - ends[tr[0][1]],
            'delete action': ends[delete[1]] - delete[2],
            '-> ctr exit': r['end'] - ends[delete[1]],
            'total': r['end'] - r['t0'],
            'runtime calls': len(rt),
        })
    return phases

mode = sys.argv[4]
a, b = runs(sys.argv[1], sys.argv[3]), runs(sys.argv[2], sys.argv[3])
if not a or not b:
    sys.exit("bench-trace: no complete run traced")
print(f"{len(a)} / {len(b)} traced runs, medians (ms; runtime calls: count)")
print(f"{'phase':34} {'pvelxc':>9} {'runc-crun':>10}")
for k in a[0]:
    ma = statistics.median(p[k] for p in a)
    mb = statistics.median(p[k] for p in b)
    print(f"{k:34} {ma:9.1f} {mb:10.1f}")
PY
