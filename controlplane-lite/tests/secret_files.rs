//! Secrets on disk: every file of `ferry-server`'s data directory that holds a credential
//! (`tokens.json`, `admin.kubeconfig`, the TLS private keys, a kubelet key written by
//! `kubelet-cert`) is created mode 0600 from its first byte, and the directories 0700, under the
//! usual umask 022; a data directory others can write is refused.
//!
//! "From its first byte" is checked with `strace`: every `open(O_CREAT)` of a secret file (or of
//! the temporary file renamed onto it) must carry mode 0600 itself, so no chmod-afterwards window
//! can exist, and every directory the server makes must be created 0700. The final modes are
//! checked with `std::fs::metadata` as well.

mod common;

use common::{free_port, SERVER};
use ferry_tests::ChildGuard;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The base names of the files that hold a secret.
const SECRET_NAMES: &[&str] = &[
    "tokens.json",
    "admin.kubeconfig",
    "ca.key",
    "apiserver.key",
    "apiserver-kubelet-client.key",
    "kubelet.key",
];

/// The final file a created path ends up as: `.<name>.<pid>-<n>.tmp` (`ferry_sys::fs::temp_path`)
/// is renamed onto `<name>`.
fn final_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.strip_prefix('.')
        .and_then(|b| b.strip_suffix(".tmp"))
        .and_then(|b| b.rsplit_once('.'))
        .map_or(base, |(name, _)| name)
        .to_owned()
}

/// One traced call that creates something.
#[derive(Debug)]
struct Created {
    path: String,
    /// The mode argument (octal, as the call passed it).
    mode: u32,
    dir: bool,
}

/// The `open(O_CREAT)` / `mkdir` calls in an strace log, with their path and mode argument.
fn created(log: &str) -> Vec<Created> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((call, rest)) = line
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .and_then(|r| r.split_once('('))
        else {
            continue;
        };
        let (dir, is_create) = match call {
            "openat" | "open" => (false, rest.contains("O_CREAT")),
            "creat" => (false, true),
            "mkdir" | "mkdirat" => (true, true),
            _ => continue,
        };
        if !is_create {
            continue;
        }
        let Some(path) = rest.split('"').nth(1) else {
            continue;
        };
        // The mode is the last argument: `..., 0600) = 3`.
        let Some(args) = rest.rsplit_once(") = ").map(|(a, _)| a) else {
            continue;
        };
        let Some(mode) = args
            .rsplit(", ")
            .next()
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        else {
            panic!("no mode in a creating call: {line}");
        };
        out.push(Created {
            path: path.to_owned(),
            mode,
            dir,
        });
    }
    out
}

/// `program args` under umask 022 and strace; returns the strace guard and the log path.
fn traced(log: &Path, program: &str, args: &[&str], stderr: &Path) -> ChildGuard {
    let child = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .args(["strace", "-f", "-qq", "-s", "4096"])
        .args(["-e", "trace=open,openat,creat,mkdir,mkdirat", "-o"])
        .arg(log)
        .arg("--")
        .arg(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("running strace (scripts/setup.sh installs it)");
    ChildGuard(child)
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Checks the trace: every secret file and every directory under `root` created with the owner-only
/// mode in the creating call; returns the secret names seen created.
fn check_trace(log: &str, root: &Path) -> Vec<String> {
    let root = root.to_str().unwrap();
    let mut seen = Vec::new();
    for c in created(log) {
        if !c.path.starts_with(root) {
            continue;
        }
        if c.dir {
            assert_eq!(c.mode, 0o700, "directory {} created {:o}", c.path, c.mode);
            continue;
        }
        let name = final_name(&c.path);
        if SECRET_NAMES.contains(&name.as_str()) {
            assert_eq!(
                c.mode, 0o600,
                "{} created with mode {:o} (a window before any chmod)",
                c.path, c.mode
            );
            seen.push(name);
        }
    }
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn secret_files_are_created_owner_only_under_umask_022() {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-secrets")
        .tempdir()
        .unwrap();
    let data: PathBuf = tmp.path().join("a/data");
    let data_s = data.to_str().unwrap().to_owned();

    // 1. The serving path: data dir, pki, tokens, keys, admin.kubeconfig.
    let log = tmp.path().join("serve.strace");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _strace = traced(
        &log,
        SERVER,
        &["--data-dir", &data_s, "--listen", &listen],
        &tmp.path().join("serve.log"),
    );
    let up = ferry_tests::wait_until(Duration::from_secs(30), || {
        data.join("admin.kubeconfig").exists() && std::net::TcpStream::connect(&listen).is_ok()
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        up,
        "ferry-server did not come up: {}",
        std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
    );
    // The traced server is the first pid in the log; killing it ends strace too.
    let pid: i32 = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a pid in the strace log");
    ferry_sys::process::kill(pid);
    drop(_strace);
    let text = std::fs::read_to_string(&log).unwrap();
    let seen = check_trace(&text, tmp.path());
    for want in [
        "admin.kubeconfig",
        "apiserver-kubelet-client.key",
        "apiserver.key",
        "ca.key",
        "tokens.json",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want} was not seen created: {seen:?}"
        );
    }

    // 2. A node token and a kubelet key, as `ferry up` makes them.
    let node_dir = tmp.path().join("node");
    std::fs::create_dir(&node_dir).unwrap();
    let (cert, key) = (node_dir.join("kubelet.crt"), node_dir.join("kubelet.key"));
    let log2 = tmp.path().join("cert.strace");
    let mut g = traced(
        &log2,
        SERVER,
        &[
            "--data-dir",
            &data_s,
            "kubelet-cert",
            "--node",
            "n1",
            "--ip",
            "10.0.0.1",
            "--cert-file",
            cert.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ],
        &tmp.path().join("cert.log"),
    );
    assert!(g.0.wait().unwrap().success(), "kubelet-cert failed");
    let seen = check_trace(&std::fs::read_to_string(&log2).unwrap(), tmp.path());
    assert_eq!(seen, vec!["kubelet.key".to_owned()]);
    let out = Command::new(SERVER)
        .args(["--data-dir", &data_s, "node-token", "--node", "n1"])
        .output()
        .unwrap();
    assert!(out.status.success());

    // 3. The final modes.
    assert_eq!(mode_of(&data), 0o700, "the data dir");
    assert_eq!(mode_of(&data.join("pki")), 0o700, "pki");
    for f in [
        "tokens.json",
        "admin.kubeconfig",
        "pki/ca.key",
        "pki/apiserver.key",
        "pki/apiserver-kubelet-client.key",
    ] {
        assert_eq!(mode_of(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode_of(&key), 0o600, "kubelet.key");
}

#[test]
fn a_data_dir_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [0o777, 0o770, 0o702] {
        let data = tmp.path().join(format!("d{mode:o}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Command::new(SERVER)
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "node-token",
                "--node",
                "n1",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode:o} accepted");
        assert!(
            err.contains(data.to_str().unwrap()) && err.contains(&format!("{mode:o}")),
            "the error names the dir and its mode: {err}"
        );
        assert!(!data.join("tokens.json").exists(), "nothing written");
        assert_eq!(mode_of(&data), mode, "left as it was");
    }
    // An existing owner-only-writable directory is accepted and narrowed to 0700.
    let data = tmp.path().join("ok");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(SERVER)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "node-token",
            "--node",
            "n1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode_of(&data), 0o700);
}

#[test]
fn a_leftover_temporary_file_never_receives_the_secret() {
    use std::io::Read as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A world-readable temporary left by an earlier crash, held open by another reader.
    let leftover = data.join(".tokens.json.tmp");
    std::fs::write(&leftover, b"").unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut reader = std::fs::File::open(&leftover).unwrap();
    let out = Command::new(SERVER)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "node-token",
            "--node",
            "n1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.len() >= 16);
    let mut seen = String::new();
    reader.read_to_string(&mut seen).unwrap();
    assert!(
        !seen.contains(&token) && seen.is_empty(),
        "the old descriptor reads the new token file: {seen}"
    );
    assert_eq!(mode_of(&data.join("tokens.json")), 0o600);
}
