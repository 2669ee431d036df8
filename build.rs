// Embeds the git revision for `-v`.
fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-env-changed=PVELXC_REVISION");
    if std::env::var_os("PVELXC_REVISION").is_some() {
        return;
    }
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
    {
        if out.status.success() {
            let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("cargo:rustc-env=PVELXC_REVISION={rev}");
        }
    }
}
