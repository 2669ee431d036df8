#!/usr/bin/env bash
# Runs INSIDE the lab host (scripts/lab.sh), as root, started by the image's pvelxc-lab.service
# with the run's 9p share at /lab: bin/ (shim, static init, the pct double), tests/ (the test
# executables), env (TARGET, TESTS, FILTER, PVE_PROFILE, CI), pve-container@.service; results
# go to /lab/out (one log per test file, the skips, this script's own log).
set -euo pipefail
# shellcheck disable=SC1091
. /lab/env
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C
say() { echo "lab-guest: $*"; }

# The host as the tests will see it.
say "kernel $(uname -r); $(systemctl --version | head -n 1); PID 1 $(cat /proc/1/comm)"
say "cgroup: $(stat -fc %T /sys/fs/cgroup) ($(cat /sys/fs/cgroup/cgroup.controllers))"
say "/run: $(findmnt -no FSTYPE,OPTIONS /run)"
say "containerd $(containerd --version | awk '{print $3}'), $(crun --version | head -n 1), lxc $(lxc-start --version), $(runc --version | head -n 1)"
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || { say "not a cgroup v2 host"; exit 1; }
findmnt -no OPTIONS /run | grep -qw noexec || { say "/run is not noexec"; exit 1; }

# The binaries where the test executables look for them: the shim and the double in cargo's
# target directory of the host build (compiled into the tests), the static init beside them.
mkdir -p "$TARGET/release"
cp /lab/bin/containerd-shim-pvelxc-v2 /lab/bin/pct /lab/bin/pvesh /lab/bin/pveversion \
    /lab/bin/pve-shape "$TARGET/release/"
mkdir -p /usr/local/lib/pvelxc
cp /lab/bin/pvelxc-init /usr/local/lib/pvelxc/pvelxc-init
export PVELXC_INIT_BIN=/usr/local/lib/pvelxc/pvelxc-init

# `pct start` as on Proxmox: `systemctl start pve-container@<vmid>` (the double's unit; the
# double uses systemd when it runs as PID 1 and this unit is installed).
cp /lab/pve-container@.service /etc/systemd/system/
ln -sf "$TARGET/release/pve-shape" /usr/local/bin/pve-shape
systemctl daemon-reload

export PVE_PROFILE CI PVELXC_SKIP_LOG=/lab/out/skips
: >/lab/out/skips
rc=0
for t in $TESTS; do
    say "running $t${FILTER:+ (filter: $FILTER)}"
    # shellcheck disable=SC2086 # FILTER is a list of test names
    if ! (cd /tmp && "/lab/tests/$t" --test-threads 2 $FILTER) >"/lab/out/$t.log" 2>&1; then
        rc=1
    fi
    say "$t: $(grep '^test result:' "/lab/out/$t.log" | tail -n 1)"
done
while IFS=$'\t' read -r kind test reason; do say "SKIP ($kind): $test: $reason"; done </lab/out/skips
journalctl -b --no-pager -o short-monotonic >/lab/out/journal.log 2>&1 || true
# Evidence that `pct start` went through systemd here, not through the double's stand-in.
say "pve-container@<vmid> units systemd started: $(grep -c 'Started pve-container@' /lab/out/journal.log || true)"
exit "$rc"
