#!/bin/sh
# Host prerequisites for the micro-VM backend on Debian 12 (bookworm), as root:
#   * qemu-system-x86 10.0 from bookworm-backports (bookworm's 7.2 conflicts with qemu-utils 10.0 from backports),
#     which also ships /usr/share/qemu/qboot.rom;
#   * busybox-static (only for the integration test's rootfs), xz-utils, gzip;
#   * the guest kernel via fetch-kernel.sh.
# The backports entry reuses the mirror of the machine's Debian sources. Idempotent.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=/etc/apt/sources.list.d/bookworm-backports.sources

if ! apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
    MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/* *$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [ -n "$MIRROR" ] || MIRROR=$(sed -n 's/^deb \(http[^ ]*debian\)\/* bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)
    [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
    cat >"$SRC" <<EOT
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
    apt-get update -q
fi

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || [ ! -e /usr/share/qemu/qboot.rom ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports qemu-system-x86
fi
for p in busybox-static xz-utils gzip; do
    dpkg -s "$p" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p"
done

# The unprivileged user QEMU drops to (the shim's vm.qemu_user default).
if ! getent passwd pvelxc-qemu >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group pvelxc-qemu
fi

"$HERE/fetch-kernel.sh"
