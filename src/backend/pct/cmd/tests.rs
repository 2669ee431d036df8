//! Tests across the net and mount renderers.

use super::*;

#[test]
fn net_and_mp_renderers() {
    let mut n = NetSpec::new(1, "eth1");
    n.bridge = Some("vmbr1".into());
    n.ip = Some(IpConfig::Cidr("10.0.0.5/24".into()));
    n.gw = Some("10.0.0.1".into());
    n.ip6 = Some(IpConfig::Auto);
    n.hwaddr = Some("BC:24:11:AA:BB:CC".into());
    n.mtu = Some(1450);
    n.tag = Some(100);
    n.firewall = Some(false);
    n.rate = Some(12.5);
    n.link_down = Some(true);
    n.host_managed = Some(true);
    assert_eq!(n.option(), "--net1");
    assert_eq!(
        n.render().unwrap(),
        "name=eth1,bridge=vmbr1,ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto,hwaddr=BC:24:11:AA:BB:CC,\
         mtu=1450,tag=100,firewall=0,rate=12.5,link_down=1,host-managed=1,type=veth"
    );
    let mut bad = NetSpec::new(0, "eth0");
    bad.bridge = Some("vmbr0,ip=dhcp".into());
    assert!(bad.render().is_err());
    let mut bad = NetSpec::new(0, "eth0");
    bad.ip = Some(IpConfig::Cidr("10.0.0.5".into()));
    assert!(bad.render().is_err());
    assert!(NetSpec::new(0, "averyveryverylongname").render().is_err());
    assert_eq!(
        NetSpec::new(0, "eth0").render().unwrap(),
        "name=eth0,type=veth"
    );

    let mut m = MountPoint::bind(2, "/host/dir", "/x");
    assert_eq!(m.render().unwrap(), "/host/dir,mp=/x");
    m.ro = true;
    m.backup = Some(false);
    m.mountoptions = vec!["noatime".into(), "nosuid".into()];
    assert_eq!(
        m.render().unwrap(),
        "/host/dir,mp=/x,ro=1,backup=0,mountoptions=noatime;nosuid"
    );
    assert_eq!(m.option(), "--mp2");
    assert!(MountPoint::bind(0, "/a,b", "/x").render().is_err());
    assert!(MountPoint::bind(0, "/a", "x").render().is_err());
    assert!(MountPoint::bind(0, "/a", "/x/../y").render().is_err());
    let mut m = MountPoint::bind(0, "/a", "/x");
    m.mountoptions = vec!["exec".into()];
    assert!(m.render().is_err());
    assert!(Features::default().render().is_err());
}
