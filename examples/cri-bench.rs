//! Pod start latency and per-pod shim RSS through containerd's CRI plugin, for one runtime
//! handler. Driven by `scripts/bench-cri.sh`, which starts a private containerd with the handlers
//! and images; this program only talks CRI on the socket it is given.
//!
//! `cri-bench --socket PATH --handler NAME [--runs N] [--log-dir DIR] [--image IMG]`
//!
//! Each run: RunPodSandbox + CreateContainer + StartContainer (timed together), then the RSS of
//! the shim processes serving the socket's containerd (only this pod exists at that moment), then
//! StopContainer/RemoveContainer/StopPodSandbox/RemovePodSandbox (not timed). The pod's host
//! memory is the PSS (shared pages split between their users) of every process that appeared
//! on the host while the pod started and is still there: shim, pause, the container's process,
//! and for a pod CT also LXC's monitor, the CT's init and `pct exec`'s attach process. Prints:
//! `handler=NAME runs=N start_median_ms=.. start_min_ms=.. start_max_ms=.. shim_rss_kb_median=..
//! pod_pss_kb_median=.. pod_procs=..`

#[path = "../tests/cri_support/client.rs"]
mod client;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::CriClient;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Sum of VmRSS (kB) of `containerd-shim*` processes whose argv has `-address <sock>`.
fn shim_rss_kb(sock: &Path) -> (usize, u64) {
    let addr = sock.display().to_string();
    let mut n = 0;
    let mut total = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let is_shim = argv
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|f| f.to_string_lossy().starts_with("containerd-shim"))
            .unwrap_or(false);
        if !is_shim || !argv.windows(2).any(|w| w[0] == "-address" && w[1] == addr) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            n += 1;
            total += kb;
        }
    }
    (n, total)
}

fn pids() -> std::collections::BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `Pss:` of /proc/PID/smaps_rollup in kB (0 for kernel threads and vanished processes).
fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(sock) = arg(&args, "--socket").map(PathBuf::from) else {
        eprintln!("usage: cri-bench --socket PATH --handler NAME [--runs N] [--log-dir DIR]");
        std::process::exit(2);
    };
    let handler = arg(&args, "--handler").unwrap_or_else(|| "pvelxc".into());
    let runs: usize = arg(&args, "--runs")
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let image = arg(&args, "--image").unwrap_or_else(|| "localhost/test/busybox:latest".into());
    let log_dir = PathBuf::from(arg(&args, "--log-dir").unwrap_or_else(|| "/tmp".into()));
    let mut cri = match CriClient::connect(&sock) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-bench: {e}");
            std::process::exit(1);
        }
    };
    // CRI learns about imported images asynchronously.
    let t = Instant::now();
    while !(cri.image_present(&image) && cri.image_present("registry.k8s.io/pause:3.6")) {
        if t.elapsed() > Duration::from_secs(30) {
            eprintln!("cri-bench: CRI does not see {image} and the pause image after 30s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Processes that stay (no short-lived children that would blur the memory figure), and a
    // TERM that ends the container at once.
    let cmd = ["sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"];
    let mut lat = Vec::new();
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    let mut procs = Vec::new();
    let tag = std::process::id();
    for i in 0..runs + 1 {
        let pod_logs = log_dir.join(format!("{handler}-{i}"));
        let _ = std::fs::create_dir_all(&pod_logs);
        let pod = client::pod_config(
            &format!("bench-{i}"),
            &format!("bench-{tag}-{handler}-{i}"),
            &format!("bench-{i}"),
            &pod_logs,
            &format!("/pvt-bench-{tag}-{handler}-{i}"),
            false,
        );
        let ctr = client::container_config("app", &image, &cmd);
        let before = pids();
        let t = Instant::now();
        let pod_id = cri.run_pod(&pod, &handler).unwrap_or_else(|e| {
            eprintln!("cri-bench: RunPodSandbox ({handler}): {e}");
            std::process::exit(1);
        });
        let id = cri.create_ctr(&pod_id, &ctr, &pod).unwrap_or_else(|e| {
            eprintln!("cri-bench: CreateContainer ({handler}): {e}");
            std::process::exit(1);
        });
        if let Err(e) = cri.start_ctr(&id) {
            eprintln!("cri-bench: StartContainer ({handler}): {e}");
            std::process::exit(1);
        }
        let took = t.elapsed().as_secs_f64() * 1000.0;
        // Let the shim settle (the start process has exited once RunPodSandbox returned).
        std::thread::sleep(Duration::from_millis(300));
        let (nshims, kb) = shim_rss_kb(&sock);
        let new: Vec<u32> = pids().difference(&before).copied().collect();
        let pod_kb: u64 = new.iter().map(|p| pss_kb(*p)).sum();
        let alive = new.iter().filter(|p| pss_kb(**p) > 0).count();
        // Run 0 warms caches (image snapshot, binaries) and is not counted.
        if i > 0 {
            lat.push(took);
            rss.push(kb as f64);
            pss.push(pod_kb as f64);
            procs.push(alive as f64);
            eprintln!(
                "  {handler} run {i}: {took:.1} ms, {nshims} shim(s), {kb} kB shim RSS, \
                 {pod_kb} kB PSS in {alive} new processes"
            );
        }
        let _ = cri.stop_ctr(&id, 5);
        let _ = cri.remove_ctr(&id);
        let _ = cri.stop_pod(&pod_id);
        let _ = cri.remove_pod(&pod_id);
        // The pod's cgroup parent (the runtime removed the cgroups under it).
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(h.path().join(format!("pvt-bench-{tag}-{handler}-{i}")));
        }
    }
    let (min, max) = lat
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    println!(
        "handler={handler} runs={runs} start_median_ms={:.1} start_min_ms={:.1} start_max_ms={:.1} shim_rss_kb_median={:.0} pod_pss_kb_median={:.0} pod_procs={:.0}",
        median(&mut lat),
        min,
        max,
        median(&mut rss),
        median(&mut pss),
        median(&mut procs)
    );
}
