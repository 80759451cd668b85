//! Links `ferry-cni` as a position-dependent executable: the plugin is a short-lived process run
//! once per pod operation, and a PIE of this size spends a few hundred microseconds applying
//! ~13,000 relative relocations at every start. Non-PIE resolves them at link time.

fn main() {
    println!("cargo:rustc-link-arg-bin=ferry-cni=-no-pie");
}
