//! Test fixture: a directory tree shaped like a Proxmox VE 9 host's cgroup v2 file system (and,
//! for comparison, a v1 hybrid host such as the CI machines). Only files exist: nothing here
//! is the kernel. A test that needs the kernel's side (cgroup.events after a freeze, a rising
//! oom_kill counter) writes it itself and says so.
//!
//! PVE 9 layout (lxc.cgroup.dir.container = lxc/<vmid>, .inner = ns, .monitor = lxc.monitor/<vmid>):
//! ```text
//! <root>/proc/<pid>/cgroup                     0::/lxc/<vmid>/ns
//! <root>/sys/fs/cgroup/cgroup.controllers
//! <root>/sys/fs/cgroup/lxc/<vmid>/             the CT: limits, freeze, metrics (no processes)
//! <root>/sys/fs/cgroup/lxc/<vmid>/ns/          the CT's processes (its cgroup namespace root)
//! <root>/sys/fs/cgroup/lxc/<vmid>/ns/...       cgroups the guest made (systemd slices)
//! <root>/sys/fs/cgroup/lxc.monitor/<vmid>/     lxc-start's monitor (not the CT's)
//! ```

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// memory.events as the kernel prints it, with the counters the tests raise.
pub fn memory_events(max: u64, oom: u64, oom_kill: u64) -> String {
    format!("low 0\nhigh 0\nmax {max}\noom {oom}\noom_kill {oom_kill}\noom_group_kill 0\n")
}

pub struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
        Host {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The host's `/`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn cg(&self) -> PathBuf {
        self.root().join("sys/fs/cgroup")
    }

    /// Write `text` to `rel` below the root, creating directories.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, text).expect("write fixture file");
    }

    /// Overwrite `rel` in place with `text` of the same length in one write (no truncation),
    /// as the kernel updates an interface file: a reader never sees it empty.
    pub fn rewrite(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        let old = fs::metadata(&p).expect("stat").len();
        assert_eq!(old, text.len() as u64, "rewrite {rel}: same length only");
        let f = OpenOptions::new().write(true).open(&p).expect("open");
        f.write_all_at(text.as_bytes(), 0).expect("write in place");
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).expect("read fixture file")
    }

    pub fn proc_cgroup(&self, pid: u32, text: &str) {
        self.write(&format!("proc/{pid}/cgroup"), text);
    }

    /// A cgroup v2 only host (PVE 8/9) with CT `vmid` running: init `pid` and `others` in
    /// `lxc/<vmid>/ns`, nested guest cgroups, a monitor and a second CT next to it.
    /// Every counter differs between the CT level and `ns`, so a test can tell them apart.
    pub fn pve9(vmid: u32, pid: u32, others: &[u32]) -> Host {
        let h = Host::new();
        h.write(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        h.proc_cgroup(pid, &format!("0::/lxc/{vmid}/ns\n"));
        let ct = format!("sys/fs/cgroup/lxc/{vmid}");
        let ns = format!("{ct}/ns");
        for (dir, scale) in [(&ct, 1u64), (&ns, 2)] {
            h.write(&format!("{dir}/cgroup.freeze"), "0\n");
            h.write(&format!("{dir}/cgroup.events"), "populated 1\nfrozen 0\n");
            h.write(
                &format!("{dir}/memory.current"),
                &format!("{}\n", 1000 * scale),
            );
            h.write(
                &format!("{dir}/memory.peak"),
                &format!("{}\n", 3000 * scale),
            );
            h.write(&format!("{dir}/memory.swap.current"), "0\n");
            h.write(&format!("{dir}/memory.swap.max"), "max\n");
            h.write(
                &format!("{dir}/memory.stat"),
                &format!(
                    "anon {}\nfile {}\nkernel_stack 16384\n",
                    500 * scale,
                    400 * scale
                ),
            );
            h.write(
                &format!("{dir}/cpu.stat"),
                &format!(
                    "usage_usec {}\nuser_usec {}\nsystem_usec {}\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
                    70 * scale,
                    50 * scale,
                    20 * scale
                ),
            );
            h.write(&format!("{dir}/pids.current"), &format!("{}\n", 4 * scale));
            h.write(
                &format!("{dir}/io.stat"),
                &format!(
                    "8:0 rbytes={} wbytes={} rios=3 wios=4 dbytes=0 dios=0\n\
                     253:2 rbytes=5 wbytes=6 rios=7 wios=8 dbytes=0 dios=0\n",
                    100 * scale,
                    200 * scale
                ),
            );
        }
        // Limits: pct create/set --memory 512 puts them on the CT level; ns is unlimited
        // until the shim mirrors them.
        h.write(&format!("{ct}/memory.max"), "536870912\n");
        // One OOM kill so far: `max`/`oom` count where the limit is (the CT level), `oom_kill`
        // where the victim was and every ancestor (memory.events is hierarchical).
        h.write(&format!("{ct}/memory.events"), &memory_events(5, 1, 1));
        h.write(&format!("{ns}/memory.events"), &memory_events(0, 0, 1));
        h.write(&format!("{ct}/pids.max"), "max\n");
        h.write(&format!("{ns}/memory.max"), "max\n");
        h.write(&format!("{ns}/pids.max"), "max\n");
        // v2: no processes in a cgroup whose controllers are enabled for children.
        h.write(&format!("{ct}/cgroup.procs"), "");
        let mut procs: Vec<String> = vec![pid.to_string()];
        procs.extend(others.iter().take(1).map(u32::to_string));
        h.write(&format!("{ns}/cgroup.procs"), &(procs.join("\n") + "\n"));
        // The guest's own cgroups below ns (its systemd): nested, some empty.
        let rest: Vec<String> = others.iter().skip(1).map(u32::to_string).collect();
        h.write(&format!("{ns}/system.slice/cgroup.procs"), "");
        let (a, b) = rest.split_at(rest.len() / 2);
        h.write(
            &format!("{ns}/system.slice/console-getty.service/cgroup.procs"),
            &(a.join("\n") + "\n"),
        );
        h.write(
            &format!("{ns}/user.slice/user-0.slice/cgroup.procs"),
            &(b.join("\n") + "\n"),
        );
        // Not the CT's: its monitor, and another CT.
        h.write(
            &format!("sys/fs/cgroup/lxc.monitor/{vmid}/cgroup.procs"),
            "4242\n",
        );
        h.write(
            &format!("sys/fs/cgroup/lxc/{}/ns/cgroup.procs", vmid + 1),
            "4343\n",
        );
        h
    }
}
