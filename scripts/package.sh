#!/usr/bin/env bash
# Build the Debian package containerd-shim-pvelxc_<version>_amd64.deb into target/debian/ from
# the static `dist` builds (what scripts/setup.sh builds; built here when missing). Needs
# cargo-deb (`cargo install --locked cargo-deb`; scripts/setup.sh installs it).
# Prints the path of the .deb on its last line.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"
DIST=target/x86_64-unknown-linux-gnu/dist
command -v cargo-deb >/dev/null 2>&1 || {
    echo "package: cargo-deb missing: cargo install --locked cargo-deb" >&2
    exit 1
}
missing=0
for b in containerd-shim-pvelxc-v2 pvelxc-init pvelxc-agent; do
    [ -x "$DIST/$b" ] || missing=1
done
if [ "$missing" = 1 ] || [ -n "${PACKAGE_REBUILD:-}" ]; then
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile dist \
        --target x86_64-unknown-linux-gnu -p containerd-shim-pvelxc-v2 -p pvelxc-init -p pvelxc-agent
fi
# The init and the agent must be static: they run inside guests.
for b in pvelxc-init pvelxc-agent; do
    if file -L "$DIST/$b" 2>/dev/null | grep -q 'dynamically linked'; then
        echo "package: $DIST/$b is dynamically linked" >&2
        exit 1
    fi
done
mkdir -p target/debian
deb=$(cargo deb --no-build --no-strip -p containerd-shim-pvelxc-v2 --output target/debian 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "package: cargo deb printed no package path: $deb" >&2; exit 1; }
dpkg-deb --info "$deb" | sed -n 's/^ *\(Package\|Version\|Depends\|Installed-Size\):/package: &/p'
echo "$deb"
