fn main() {
    let argv: Vec<String> = std::env::args().collect();
    std::process::exit(pve_double::pveversion_main(&argv));
}
