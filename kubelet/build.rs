//! Links `ferry-shim` as a position-dependent executable: it is started once per container
//! attempt, and a PIE spends time applying its relative relocations at every start.

fn main() {
    println!("cargo:rustc-link-arg-bin=ferry-shim=-no-pie");
}
