//! The `ferry-cni` binary (also answers as `loopback` when invoked under that name).

#![forbid(unsafe_code)]

use ferry_cni::plugin::{self, Personality};
use std::io::{Read, Write};
use std::process::ExitCode;

/// Used when the runtime passes no `PATH` (helpers such as `iptables` must still be found).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn main() -> ExitCode {
    if std::env::var_os("PATH").is_none_or(|p| p.is_empty()) {
        // Still single-threaded here, so setting the environment is race-free.
        let _ = ferry_sys::process::set_env_while_single_threaded("PATH", DEFAULT_PATH);
    }
    let argv0 = std::env::args().next().unwrap_or_default();
    let who = Personality::from_argv0(&argv0);
    let mut stdin = Vec::new();
    let env = |k: &str| std::env::var(k).ok();
    let needs_stdin = env("CNI_COMMAND").as_deref() != Some("VERSION");
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        if needs_stdin {
            eprintln!("ferry-cni: reading stdin: {e}");
        }
    }
    let mut out = std::io::stdout().lock();
    match plugin::run(who, env, &stdin) {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(out, "{}", f.error.to_json(&f.version));
            eprintln!("ferry-cni: {}", f.error);
            ExitCode::FAILURE
        }
    }
}
