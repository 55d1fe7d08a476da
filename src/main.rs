//! Being wired by the lead.
fn main() {
    eprintln!("mailferry: being wired");
    std::process::exit(1);
}
