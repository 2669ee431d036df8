use containerd_shim_pvelxc_v2::{REVISION, VERSION};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args
        .iter()
        .skip(1)
        .any(|a| a == "-v" || a == "--version" || a == "-version")
    {
        println!("containerd-shim-pvelxc-v2:");
        println!("  Version:  {}", VERSION.trim());
        println!("  Revision: {REVISION}");
        return;
    }
    if args.get(1).map(String::as_str) == Some("gc") {
        std::process::exit(containerd_shim_pvelxc_v2::check::gc::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("check") {
        std::process::exit(containerd_shim_pvelxc_v2::check::main(&args[2..]));
    }
    if args.iter().skip(1).any(|a| a == "-info" || a == "--info") {
        std::process::exit(containerd_shim_pvelxc_v2::check::info::main());
    }
    // One malloc arena: the shim's few threads (tokio's blocking pool for stdio and files) would
    // each map a fresh 64 MiB arena and keep its pages; the work is tiny and mostly on one thread.
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    std::process::exit(containerd_shim_pvelxc_v2::shim::main(&args[1..]));
}
