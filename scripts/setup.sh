#!/usr/bin/env bash
# Idempotent DEVELOPER / CI machine setup: packages for building and testing (Debian's lxc,
# QEMU from backports, registry, ...), crun's hugetlb fix, cargo-deb, release build, shim
# installed to /usr/local/bin. Run as root (Debian 12 / Ubuntu). Safe to run again.
# NOT for a Proxmox VE host: Debian's lxc and qemu packages conflict with lxc-pve and
# pve-qemu-kvm. A Proxmox host installs the Debian package instead (scripts/package.sh, README
# "Install on a Proxmox VE host").
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"

PACKAGES=(
    containerd runc crun lxc lxc-templates busybox-static umoci skopeo docker-registry
    containernetworking-plugins protobuf-compiler hyperfine iproute2 util-linux tmux
    bsdextrautils build-essential pkg-config python3 ca-certificates git xz-utils gzip file
    mmdebstrap e2fsprogs
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# crun refuses cgroup v1/hybrid hosts ("cgroups in hybrid mode not supported") until a hugetlb
# v1 hierarchy is mounted. Not needed (and not possible) on pure cgroup v2 hosts.
if [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

# Micro-VM backend prerequisites (qemu from bookworm-backports, guest kernel cache): owned by
# crates/pvelxc-agent; Debian 12 only. Elsewhere the VM tests skip with a message.
if [ -f crates/pvelxc-agent/setup-host.sh ] && grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null \
    && [ -z "${PVELXC_SKIP_VM_SETUP:-}" ]; then
    sh crates/pvelxc-agent/setup-host.sh
fi

# Rust toolchain (rustup's, not Debian's rustc which is too old)
if ! command -v cargo >/dev/null; then
    # shellcheck disable=SC1091
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || {
    echo "setup: cargo not found; install rustup (https://rustup.rs) and re-run" >&2
    exit 1
}
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt || true
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy || true
fi

# cargo-deb builds the Debian package (scripts/package.sh, tested by scripts/package-test.sh).
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb

# Tests drive the release build (target/release).
cargo build --release --workspace

# What gets installed: size-optimised static builds (profile `dist`) of the shim, of the init
# that runs as PID 1 in each Proxmox CT, and of the micro-VM guest agent (the last two must be
# static: they run inside guests with their own, or no, libc).
DIST=target/x86_64-unknown-linux-gnu/dist
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile dist --target x86_64-unknown-linux-gnu \
    -p containerd-shim-pvelxc-v2 -p pvelxc-init -p pvelxc-agent
for b in containerd-shim-pvelxc-v2 pvelxc-init pvelxc-agent; do
    install -m 0755 "$DIST/$b" "/usr/local/bin/$b"
done
echo "setup: ok ($(containerd --version | awk '{print $3}'); containerd-shim-pvelxc-v2, pvelxc-init, pvelxc-agent installed to /usr/local/bin)"
