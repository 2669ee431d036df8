// Embeds the git revision for `-v`.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PVELXC_REVISION");
    if std::env::var_os("PVELXC_REVISION").is_some() {
        return;
    }
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the ref it points at (a new
    // commit), wherever git keeps them (a worktree's HEAD is not in ./.git). Only existing
    // files are watched: a missing one would make cargo rerun this script on every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for w in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    if let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=PVELXC_REVISION={rev}");
    }
}
