#!/bin/sh
# Fetch Debian's generic amd64 kernel for the pvelxc micro-VM backend, without installing it.
#
#   PVELXC_VM_CACHE   cache dir (default /var/cache/pvelxc/vm)
#   PVELXC_KERNEL_PKG package to use (default: the one linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64)
#
# Result (idempotent; re-running with the same package does nothing):
#   $PVELXC_VM_CACHE/vmlinux          uncompressed kernel (xz payload of the bzImage) — boots ~3 s faster under TCG
#   $PVELXC_VM_CACHE/vmlinuz          the original bzImage
#   $PVELXC_VM_CACHE/modules/*.ko     the virtio / 9p / virtiofs / vsock modules the guest agent insmods
#   $PVELXC_VM_CACHE/kernel-release   e.g. 6.1.0-56-amd64
#   $PVELXC_VM_CACHE/package          the package name it came from
# Needs: apt-get (after `apt-get update`), dpkg-deb, xz, od/grep/tail (coreutils).
set -eu

CACHE=${PVELXC_VM_CACHE:-/var/cache/pvelxc/vm}
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_mmio netfs fscache 9pnet \
9pnet_virtio 9p virtio_console vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport fuse virtiofs"

PKG=${PVELXC_KERNEL_PKG:-}
if [ -z "$PKG" ]; then
    # The metapackage's candidate may come from backports (6.12) only when pinned; take the default candidate.
    PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
fi
if [ -z "$PKG" ]; then
    PKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -n1)
fi
[ -n "$PKG" ] || { echo "fetch-kernel: cannot resolve a linux-image package (run apt-get update?)" >&2; exit 1; }

if [ -f "$CACHE/package" ] && [ "$(cat "$CACHE/package")" = "$PKG" ] && [ -s "$CACHE/vmlinux" ]; then
    echo "fetch-kernel: $PKG already in $CACHE"
    exit 0
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "${CACHE}/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

echo "fetch-kernel: downloading $PKG"
(cd "$WORK" && apt-get download -q "$PKG")
dpkg-deb -x "$WORK"/"$PKG"_*.deb "$WORK/pkg"

VMLINUZ=$(ls "$WORK"/pkg/boot/vmlinuz-* | head -n1)
RELEASE=${VMLINUZ##*/vmlinuz-}

# extract-vmlinux, xz case: find the xz stream magic FD 37 7A 58 5A 00 and decompress from there.
OFFSETS=$(LC_ALL=C grep -obUaP '\xfd\x37\x7a\x58\x5a\x00' "$VMLINUZ" | cut -d: -f1)
OK=""
for off in $OFFSETS; do
    if tail -c +"$((off + 1))" "$VMLINUZ" | xz -dc 2>/dev/null >"$WORK/vmlinux.tmp"; then :; fi
    # xz -dc reports trailing garbage as an error but has written the whole kernel; check the ELF magic.
    if [ "$(head -c 4 "$WORK/vmlinux.tmp" | od -A n -t x1 | tr -d ' ')" = "7f454c46" ]; then
        OK=1
        break
    fi
done
[ -n "$OK" ] || { echo "fetch-kernel: no xz-compressed ELF payload in $VMLINUZ" >&2; exit 1; }

rm -rf "$CACHE/modules.new"
mkdir -p "$CACHE/modules.new"
MODDIR="$WORK/pkg/lib/modules/$RELEASE/kernel"
for m in $MODULES; do
    f=$(find "$MODDIR" \( -name "$m.ko" -o -name "$m.ko.xz" \) | head -n1)
    [ -n "$f" ] || { echo "fetch-kernel: module $m not in $PKG" >&2; exit 1; }
    case "$f" in
        *.xz) xz -dc "$f" >"$CACHE/modules.new/$m.ko" ;;
        *) cp "$f" "$CACHE/modules.new/$m.ko" ;;
    esac
done

rm -rf "$CACHE/modules"
mv "$CACHE/modules.new" "$CACHE/modules"
mv "$WORK/vmlinux.tmp" "$CACHE/vmlinux"
cp "$VMLINUZ" "$CACHE/vmlinuz"
echo "$RELEASE" >"$CACHE/kernel-release"
echo "$PKG" >"$CACHE/package"
echo "fetch-kernel: $PKG ($RELEASE) -> $CACHE"
