//! `ferry-shim DIR`: the per-container supervisor ferry-kubelet starts for every container
//! attempt (see `ferry_kubelet::shim`). A separate, small executable, so starting one costs little:
//! it links only the shim's code, not the kubelet's API client and runtime.

#![forbid(unsafe_code)]

fn main() {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(dir), None) => ferry_kubelet::shim::main(std::path::Path::new(&dir)),
        _ => {
            eprintln!("usage: ferry-shim <container attempt dir>  (started by ferry-kubelet)");
            std::process::exit(2);
        }
    }
}
