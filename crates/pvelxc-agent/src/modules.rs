//! Kernel modules needed in the guest (Debian's generic 6.1 kernel builds them as `=m`), in dependency order.

/// Module names, insmod order. Files are `<name>.ko` in the initramfs directory [`GUEST_MODULE_DIR`].
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_mmio",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "fuse",
    "virtiofs",
];

/// Where the initramfs stores the `.ko` files.
pub const GUEST_MODULE_DIR: &str = "/lib/modules";

/// Name of the virtio-serial port carrying the protocol (`/sys/class/virtio-ports/*/name`).
pub const CONTROL_PORT_NAME: &str = "pvelxc.ctl";

/// 9p / virtio-fs tag of the container rootfs share.
pub const ROOTFS_TAG: &str = "rootfs";
