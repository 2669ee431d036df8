use super::*;

#[test]
fn records() {
    let ct = parse_record("1000 pvelxc-0123456789ab\n").unwrap();
    assert_eq!(ct.vmid.get(), 1000);
    assert_eq!(ct.token, "pvelxc-0123456789ab");
    assert!(parse_record("").is_none());
    assert!(parse_record("1000").is_none());
    assert!(parse_record("1000 other").is_none());
    assert!(parse_record("1000 pvelxc-a extra").is_none());
    assert!(parse_record("12 pvelxc-a").is_none());
}

#[test]
fn which_storages_link() {
    let st = super::super::pve::storage::parse(
        "dir: local\n\tpath /var/lib/vz\n\tcontent rootdir\n\
         lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir\n\
         zfspool: local-zfs\n\tpool rpool/data\n\tcontent rootdir\n\
         btrfs: local-btrfs\n\tpath /x\n\tcontent rootdir\n",
    );
    assert!(wanted(&st, "local-lvm"));
    assert!(wanted(&st, "local-zfs"));
    assert!(!wanted(&st, "local"));
    assert!(!wanted(&st, "local-btrfs"));
    assert!(!wanted(&st, "nope"));
    assert_eq!(
        clone_tag(Vmid::new(1000).unwrap()).as_str(),
        "pvelxc-tpl-1000"
    );
}
