#!/usr/bin/env bash
# A Proxmox-VE-9-shaped lab host (Debian 13 trixie, systemd as PID 1, cgroup v2 only, /run
# noexec, LXC 6, containerd 1.7.24, crun 1.21), booted in QEMU, running a suite of this
# project's tests inside it. These CI machines are Debian 12 with hybrid cgroups and no systemd:
# the lab is where the cgroup v2 code of the crun and pct backends and `pct start` as a systemd
# unit (`systemctl start pve-container@<vmid>`) run end to end.
#
# usage: scripts/lab.sh [short|full|image]     (default short)
#   short  the ctr tests of crun and pct that cover run, exec, kill, pause (cgroup v2 freeze),
#          pids, stats, OOM events, an admin's stop and CPU weight (CI runs this one)
#   full   every test of tests/crun_ctr.rs, tests/pct_ctr.rs, tests/hostile_pct.rs, tests/logging.rs
#   image  only build (or find) the cached lab image
#
# The image (a Debian 13 root made by mmdebstrap from Debian's packages, an ext4 disk image made
# without loop mounts, its kernel and initrd) is built once and cached under
# $LAB_CACHE/<key>, key = a hash of this script (package list, guest set-up). The project's
# binaries (shim, static init, the pct double, the test executables) are not in the image: they
# are shared in per run over 9p with scripts/lab-guest.sh, which runs the suite inside; a run
# writes to a copy-on-write overlay of the image, so every run starts from the same clean host.
# Results and logs come back on the share; the table of results is printed here.
#
# env: LAB_CACHE (default /var/cache/pvelxc/lab), DEBIAN_MIRROR (default: the host's),
#      LAB_ACCEL auto|kvm|tcg (default auto: KVM only when the shim's own probe says it works),
#      LAB_CPUS (2), LAB_MEM_MIB (4096), LAB_BOOT_TIMEOUT (600 s until the guest runs the suite),
#      LAB_SUITE_TIMEOUT (2400 s for the suite), LAB_OUT (where logs are kept; default
#      $LAB_CACHE/last), LAB_FILTER (a cargo test name filter instead of the suite's list),
#      PVE_PROFILE (the PVE version the pct double plays; default pve9.1).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"
SUITE=${1:-short}
case $SUITE in short | full | image) ;; *) echo "usage: scripts/lab.sh [short|full|image]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "lab: must run as root (mmdebstrap, QEMU, the tests inside)" >&2; exit 2; }

CACHE=${LAB_CACHE:-/var/cache/pvelxc/lab}
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/* *$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CPUS=${LAB_CPUS:-2}
MEM=${LAB_MEM_MIB:-4096}
BOOT_TIMEOUT=${LAB_BOOT_TIMEOUT:-600}
SUITE_TIMEOUT=${LAB_SUITE_TIMEOUT:-2400}
OUT=${LAB_OUT:-$CACHE/last}

# What a Proxmox VE 9 node runs, from Debian 13 (lxc-pve and Proxmox's own packages are not in
# Debian: Debian's lxc 6.0 stands in for lxc-pve 6.0), plus what the test harness needs.
PACKAGES=(
    systemd systemd-sysv dbus linux-image-amd64 initramfs-tools
    lxc containerd crun runc busybox-static iproute2 util-linux bsdutils procps
    umoci tar ca-certificates e2fsprogs uidmap
)

die() { echo "lab: $*" >&2; exit 1; }
now() { date +%s; }

# ---------------------------------------------------------------------------------------------
# The image
# ---------------------------------------------------------------------------------------------

# The guest's boot hook (in the image, generic): mount the run's 9p share, run its guest script
# (the suite), record its exit status, power off. The host bounds all of it.
boot_hook() {
    cat <<'EOF'
#!/bin/sh
# pvelxc lab: run the suite the host shared in (tag "lab"), then power off.
mkdir -p /lab
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 lab /lab; then
    mkdir -p /lab/out
    echo "lab: guest up at $(cat /proc/uptime)" >/lab/out/booted
    rc=0
    bash /lab/guest.sh >/lab/out/guest.log 2>&1 || rc=$?
    echo "$rc" >/lab/out/guest.rc
    sync
    umount /lab
else
    echo "lab: cannot mount the 9p share 'lab'" >/dev/console
fi
systemctl --no-block poweroff
EOF
}

boot_unit() {
    cat <<'EOF'
[Unit]
Description=pvelxc lab: run the shared suite, then power off
After=basic.target network.target
Wants=basic.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pvelxc-lab-boot
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
}

# customize ROOT: make the debootstrapped tree a lab host.
customize() {
    local r=$1
    echo lab >"$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 lab\n' >"$r/etc/hosts"
    # / is the virtio disk; /run as on a PVE node: tmpfs nosuid,nodev,noexec
    # (systemd-remount-fs applies fstab's options to the API file systems it lists).
    cat >"$r/etc/fstab" <<'EOF'
/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1
tmpfs /run tmpfs rw,nosuid,nodev,noexec,mode=0755,size=20% 0 0
EOF
    mkdir -p "$r/usr/local/sbin"
    boot_hook >"$r/usr/local/sbin/pvelxc-lab-boot"
    chmod 755 "$r/usr/local/sbin/pvelxc-lab-boot"
    boot_unit >"$r/etc/systemd/system/pvelxc-lab.service"
    systemctl --root="$r" enable pvelxc-lab.service >/dev/null 2>&1
    # Quiet, quick boot: the tests start their own private containerds; nothing else is wanted
    # (lxc-net would make a bridge, the timers would run apt and fstrim under the suite).
    # /tmp stays on the disk (a tmpfs /tmp would hold the tests' CT roots in guest RAM).
    local u
    for u in containerd.service lxc.service lxc-net.service lxc-monitord.service \
        apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
        fstrim.timer dpkg-db-backup.timer serial-getty@ttyS0.service getty@tty1.service \
        systemd-timesyncd.service tmp.mount; do
        systemctl --root="$r" mask "$u" >/dev/null 2>&1
    done
    # root:100000:65536 sub-ids as on a PVE node (unprivileged CTs)
    grep -q '^root:100000:65536$' "$r/etc/subuid" 2>/dev/null || echo 'root:100000:65536' >>"$r/etc/subuid"
    grep -q '^root:100000:65536$' "$r/etc/subgid" 2>/dev/null || echo 'root:100000:65536' >>"$r/etc/subgid"
    # the journal in RAM only (a disposable host)
    mkdir -p "$r/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\n' >"$r/etc/systemd/journald.conf.d/lab.conf"
}

# Cache key: what makes the image (the functions above and below that build it, the packages,
# the mirror); edits elsewhere in this script do not rebuild it.
image_key() {
    { declare -f boot_hook boot_unit customize build_image; printf '%s\n' "${PACKAGES[@]}" "$MIRROR"; } |
        sha256sum | cut -c1-16
}

# build_image: mmdebstrap, customize, ext4 image (mke2fs -d: no loop mount), kernel + initrd.
build_image() {
    local t0 work
    t0=$(now)
    command -v mmdebstrap >/dev/null || die "mmdebstrap missing (apt-get install mmdebstrap)"
    command -v mke2fs >/dev/null || die "mke2fs missing (apt-get install e2fsprogs)"
    mkdir -p "$CACHE"
    work=$(mktemp -d "$CACHE/.build-XXXXXX")
    echo "lab: building the image $IMAGE_KEY (Debian 13 from $MIRROR; log $work/mmdebstrap.log)"
    local incl
    incl=$(IFS=,; echo "${PACKAGES[*]}")
    if ! mmdebstrap --variant=apt --mode=root --include="$incl" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        trixie "$work/root" "$MIRROR" >"$work/mmdebstrap.log" 2>&1; then
        tail -n 20 "$work/mmdebstrap.log" >&2
        die "mmdebstrap failed (log: $work/mmdebstrap.log)"
    fi
    customize "$work/root"
    # the kernel and the initramfs Debian's linux-image made (MODULES=most: virtio, ext4, 9p)
    local vmlinuz=("$work"/root/boot/vmlinuz-*) initrd=("$work"/root/boot/initrd.img-*)
    if [ ! -f "${vmlinuz[0]}" ] || [ ! -f "${initrd[0]}" ]; then
        die "no kernel/initrd in the image (log: $work/mmdebstrap.log)"
    fi
    cp "${vmlinuz[0]}" "$work/vmlinuz"
    cp "${initrd[0]}" "$work/initrd.img"
    # 8 GiB sparse: the OS takes ~0.5 GiB, the rest is for containerd and the CTs of a run
    mke2fs -q -t ext4 -L labroot -d "$work/root" "$work/disk.raw" 8G ||
        die "mke2fs -d failed"
    rm -rf --one-file-system "$work/root"
    echo "$(( $(now) - t0 ))" >"$work/build-seconds"
    rm -rf "$IMAGE"
    mv "$work" "$IMAGE"
    echo "lab: image $IMAGE_KEY built in $(cat "$IMAGE/build-seconds") s"
}

IMAGE_KEY=$(image_key)
IMAGE=$CACHE/$IMAGE_KEY

image() {
    if [ -f "$IMAGE/disk.raw" ] && [ -f "$IMAGE/vmlinuz" ] && [ -f "$IMAGE/initrd.img" ]; then
        echo "lab: image $IMAGE_KEY cached ($IMAGE)"
    else
        build_image
    fi
    # older images of earlier versions of this script: only the current one is kept
    local d
    for d in "$CACHE"/*/; do
        d=${d%/}
        [ "$d" = "$IMAGE" ] || [ ! -f "$d/disk.raw" ] || rm -rf --one-file-system "$d"
    done
}

image
[ "$SUITE" = image ] && exit 0

# ---------------------------------------------------------------------------------------------
# The project's binaries
# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC1091
command -v cargo >/dev/null || . "$HOME/.cargo/env"
TARGET=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
TARGET=$(mkdir -p "$TARGET" && cd "$TARGET" && pwd)
case $SUITE in
    short) TESTS=(crun_ctr pct_ctr) ;;
    full) TESTS=(crun_ctr pct_ctr hostile_pct logging) ;;
esac
t_build=$(now)
# The double's binaries come from the workspace build (what scripts/setup.sh runs), redone only
# when a source of the double is newer: cargo resolves features differently for a workspace
# build and for `cargo test` of the root package, and alternating the two relinks the shim
# (minutes here). The shim itself comes from the `cargo test --no-run` below, the invocation
# scripts/test.sh's steps before this one use: nothing is rebuilt there.
stale=$(find crates/pve-double Cargo.lock -newer "$TARGET/release/pve-shape" -type f 2>/dev/null | head -n 1 || true)
if [ ! -x "$TARGET/release/pve-shape" ] || [ -n "$stale" ]; then
    cargo build --release --workspace
fi
targs=()
for t in "${TESTS[@]}"; do targs+=(--test "$t"); done
# The test executables cargo built (one per test file), from its JSON messages.
cargo test --release --no-run "${targs[@]}" --message-format=json >"$CACHE/no-run.json" 2>"$CACHE/no-run.log" ||
    { tail -n 20 "$CACHE/no-run.log" >&2; die "cargo test --no-run failed"; }
EXES=()
for t in "${TESTS[@]}"; do
    e=$(grep -F "\"kind\":[\"test\"],\"crate_types\":[\"bin\"],\"name\":\"$t\"" "$CACHE/no-run.json" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [ -x "$e" ] || die "no test executable for tests/$t.rs in cargo's output"
    EXES+=("$e")
done
# The static init of every CT (what scripts/setup.sh installs): built here when missing.
INIT=${PVELXC_INIT_BIN:-$TARGET/x86_64-unknown-linux-gnu/dist/pvelxc-init}
if [ ! -x "$INIT" ]; then
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile dist --target x86_64-unknown-linux-gnu -p pvelxc-init
    INIT=$TARGET/x86_64-unknown-linux-gnu/dist/pvelxc-init
fi
echo "lab: binaries ready in $(( $(now) - t_build )) s"

# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
RUN=$(mktemp -d /var/tmp/pvelxc-lab-XXXXXX)
QEMU_PID=
cleanup() {
    [ -z "$QEMU_PID" ] || kill -KILL "$QEMU_PID" 2>/dev/null || true
    rm -rf --one-file-system "$RUN"
}
trap cleanup EXIT
SHARE=$RUN/share
mkdir -p "$SHARE/bin" "$SHARE/tests" "$SHARE/out"
for b in containerd-shim-pvelxc-v2 pct pvesh pveversion pve-shape; do
    cp "$TARGET/release/$b" "$SHARE/bin/"
done
cp "$INIT" "$SHARE/bin/pvelxc-init"
for i in "${!TESTS[@]}"; do cp "${EXES[$i]}" "$SHARE/tests/${TESTS[$i]}"; done
cp scripts/lab-guest.sh "$SHARE/guest.sh"
cp crates/pve-double/systemd/pve-container@.service "$SHARE/"
# The suite's test names (short) or none (full: every test of the files).
SHORT_FILTER=(
    run_rootfs_stdout_stderr_exit_code detached_exec_ps_pause_resume_metrics_kill
    kill_all_stops_every_process oom_event_and_exit_137 cpu_shares_become_cpu_weight
    run_rootfs_image_null_io_and_template_reuse detached_exec_ps_pause_resume_metrics_kill_and_pct_list
    term_trap_and_admin_stop_shutdown kill_all_reaches_every_process_of_the_ct events_in_order
    an_exited_container_is_deleted_from_the_runtime_before_task_rm hooks_keep_the_runtimes_own_start_and_delete
)
{
    echo "TARGET=$TARGET"
    echo "TESTS=\"${TESTS[*]}\""
    if [ -n "${LAB_FILTER:-}" ]; then
        echo "FILTER=\"$LAB_FILTER\""
    elif [ "$SUITE" = short ]; then
        echo "FILTER=\"${SHORT_FILTER[*]}\""
    else
        echo "FILTER="
    fi
    echo "PVE_PROFILE=${PVE_PROFILE:-pve9.1}"
    echo "CI=${CI:-}"
} >"$SHARE/env"

# The accelerator: KVM only when the shim's own probe finds it really works (these machines
# expose a /dev/kvm that cannot run a normal kernel).
ACCEL=${LAB_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
    ACCEL=tcg
    if timeout 30 "$TARGET/release/containerd-shim-pvelxc-v2" check 2>/dev/null | grep -q '^ *kvm: usable'; then
        ACCEL=kvm
    fi
fi
case $ACCEL in
    kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
    tcg) ACCEL_ARGS=(-accel "tcg,thread=multi" -cpu max) ;;
    *) die "LAB_ACCEL must be auto, kvm or tcg" ;;
esac
# Under TCG some boots hang calibrating the TSC unless the kernel is told its frequency.
MHZ=$(awk -F: '/^cpu MHz/ {printf "%d", $2; exit}' /proc/cpuinfo)
TSC=
[ -z "$MHZ" ] || TSC="tsc_early_khz=$((MHZ * 1000))"

qemu-img create -q -f qcow2 -b "$IMAGE/disk.raw" -F raw "$RUN/disk.qcow2"
echo "lab: booting ($ACCEL, $CPUS vCPUs, $MEM MiB; suite '$SUITE'; console $RUN/console.log)"
t_boot=$(now)
qemu-system-x86_64 "${ACCEL_ARGS[@]}" -M q35 -smp "$CPUS" -m "$MEM" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$RUN/console.log" \
    -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4 systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 $TSC" \
    -drive "file=$RUN/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
    -fsdev "local,id=lab,path=$SHARE,security_model=none" \
    -device "virtio-9p-pci,fsdev=lab,mount_tag=lab" \
    -device virtio-rng-pci \
    >"$RUN/qemu.log" 2>&1 &
QEMU_PID=$!

# keep LOGS: copy what the run produced to $OUT
keep_logs() {
    rm -rf "$OUT"
    mkdir -p "$OUT"
    cp -a "$SHARE/out/." "$OUT/" 2>/dev/null || true
    cp "$RUN/console.log" "$RUN/qemu.log" "$OUT/" 2>/dev/null || true
}
# fail MESSAGE: kill QEMU, keep the logs, show the console's tail.
fail() {
    kill -KILL "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
    keep_logs
    echo "--- console (last 30 lines):" >&2
    tail -n 30 "$OUT/console.log" >&2 || true
    die "$1 (logs: $OUT)"
}
alive() { kill -0 "$QEMU_PID" 2>/dev/null; }

# Bounded waits: the guest must run the suite within BOOT_TIMEOUT, the suite must end (and the
# guest power off) within SUITE_TIMEOUT. Polling with short sleeps (never `sleep 1`: containerd's
# suite on this machine greps `ps` for it).
while [ ! -f "$SHARE/out/booted" ]; do
    alive || fail "QEMU ended before the guest ran the suite"
    [ $(( $(now) - t_boot )) -lt "$BOOT_TIMEOUT" ] || fail "the guest did not come up within $BOOT_TIMEOUT s"
    sleep 0.5
done
BOOT_S=$(( $(now) - t_boot ))
echo "lab: guest up in $BOOT_S s; running the suite"
t_suite=$(now)
while alive; do
    [ $(( $(now) - t_suite )) -lt "$SUITE_TIMEOUT" ] || fail "the suite did not end within $SUITE_TIMEOUT s"
    sleep 0.5
done
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
SUITE_S=$(( $(now) - t_suite ))
keep_logs
[ -f "$OUT/guest.rc" ] || fail "the guest powered off without a result"

# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
# Failures that are not the shim's, with the reason (file:test). Both tests restart containerd
# while a task exits: containerd 1.7 then cleans the task up ("cleaning up after shim
# disconnected"), with its own runc shim too (scripts/containerd-lanes.sh); 1.6.20 passes them.
# Not in the short suite.
KNOWN_WHY="containerd 1.7 drops a task that exited while it was down, with the stock runc shim too"
KNOWN=" crun_ctr:containerd_restart_keeps_tasks pct_ctr:containerd_restart_with_an_exit_while_down "
echo
printf '%-12s %-58s %s\n' file test result
rows=0 failed=0
for t in "${TESTS[@]}"; do
    if [ ! -f "$OUT/$t.log" ]; then
        printf '%-12s %-58s %s\n' "$t" "(no log)" FAILED
        failed=$((failed + 1))
        continue
    fi
    while read -r name res; do
        if [ "$res" = FAILED ] && [[ $KNOWN == *" $t:$name "* ]]; then
            res="FAILED (known: $KNOWN_WHY)"
        elif [ "$res" = FAILED ]; then
            failed=$((failed + 1))
        fi
        printf '%-12s %-58s %s\n' "$t" "$name" "$res"
        rows=$((rows + 1))
    done < <(sed -n 's/^test \([a-zA-Z0-9_:]*\) \.\.\. \(ok\|FAILED\|ignored\)$/\1 \2/p' "$OUT/$t.log")
done
echo
grep -h '^lab-guest:' "$OUT/guest.log" || true
echo "lab: image $IMAGE_KEY ($( [ -f "$IMAGE/build-seconds" ] && echo "built in $(cat "$IMAGE/build-seconds") s" )), boot $BOOT_S s, suite $SUITE_S s ($ACCEL); logs in $OUT"
rc=$(cat "$OUT/guest.rc")
[ "$rows" -gt 0 ] || die "no test result in the logs (guest exit status $rc; see $OUT/guest.log)"
[ "$failed" = 0 ] || die "$failed test(s) failed inside the lab (logs in $OUT)"
# a guest script that failed without a failed test (a crash, a check of the host's shape)
[ "$rc" = 0 ] || grep -q '^test .* FAILED$' "$OUT"/*.log ||
    die "the guest script failed (exit status $rc; see $OUT/guest.log)"
echo "lab: all passed"
