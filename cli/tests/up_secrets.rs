//! Secrets of a `ferry up` cluster (privileged): no token is on any process's command line (the
//! kubelets and agents get `--token-file`), every file in the cluster's state directory that
//! holds a token or a private key is readable by its owner only, the directories holding them are
//! 0700, and no log holds a token. Checked from outside `ferry`: `/proc/<pid>/cmdline` of every
//! process on the machine, and `std::fs::metadata` of every file.

mod common;

use common::*;
use ferry_tests::privileged;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Every regular file below `dir` (symbolic links are not followed).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `pid: cmdline` of every process whose command line contains `needle`.
fn cmdlines_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn no_token_on_a_command_line_and_secret_files_owner_only() {
    if !privileged("no_token_on_a_command_line_and_secret_files_owner_only") {
        return;
    }
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let c = Cluster::new();
    let out = c.up(&["--nodes", "2"]);
    assert!(out.status.success(), "ferry up failed: {}", text(&out));
    let dir = c.dir();

    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("server/tokens.json")).unwrap()).unwrap();
    let mut secrets = vec![tokens["admin"].as_str().unwrap().to_owned()];
    secrets.extend(
        tokens["nodes"]
            .as_object()
            .unwrap()
            .values()
            .map(|t| t.as_str().unwrap().to_owned()),
    );
    assert_eq!(secrets.len(), 3, "the admin token and two node tokens");
    assert!(secrets.iter().all(|t| t.len() >= 16));

    // 1. No process on the machine has a token in its command line, while the cluster runs
    //    (every component is up: the nodes are Ready).
    let pids = c.pids();
    assert!(
        pids.len() >= 5,
        "apiserver + 2 kubelets + 2 agents: {pids:?}"
    );
    for pid in &pids {
        assert!(alive(*pid), "component {pid} is not running");
    }
    for t in &secrets {
        assert_eq!(
            cmdlines_with(t),
            Vec::<String>::new(),
            "a token in a command line"
        );
    }
    let mut with_token_file = 0;
    for pid in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("ferry-kubelet") || cmdline.contains("ferry-agent") {
            assert!(cmdline.contains("--token-file"), "{cmdline}");
            assert!(!cmdline.contains("--token "), "{cmdline}");
            with_token_file += 1;
        }
    }
    assert_eq!(with_token_file, 4, "2 kubelets and 2 agents");

    // 2. Every file holding a token or a private key is owner-only; logs hold no token.
    let mut all = Vec::new();
    files(&dir, &mut all);
    let mut holding = Vec::new();
    for f in &all {
        if mode(f) & 0o111 != 0 {
            continue; // the CNI plugin's executable
        }
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let has_token = secrets.iter().any(|t| text.contains(t.as_str()));
        let has_key = text.contains("PRIVATE KEY-----");
        if f.starts_with(dir.join("logs")) {
            assert!(!has_token, "{} holds a token", f.display());
        }
        if has_token || has_key {
            assert_eq!(
                mode(f) & 0o077,
                0,
                "{} holds a secret and is mode {:o}",
                f.display(),
                mode(f)
            );
            holding.push(f.strip_prefix(&dir).unwrap().to_owned());
        }
    }
    for want in [
        "kubeconfig",
        "server/tokens.json",
        "server/admin.kubeconfig",
        "server/pki/ca.key",
        "server/pki/apiserver.key",
        "server/pki/apiserver-kubelet-client.key",
        "nodes/n1/token",
        "nodes/n1/kubelet.key",
        "nodes/n2/token",
        "nodes/n2/kubelet.key",
    ] {
        assert!(
            holding.iter().any(|h| h == Path::new(want)),
            "{want} not found holding a secret: {holding:?}"
        );
        assert_eq!(mode(&dir.join(want)), 0o600, "{want}");
    }
    // 3. The directories that hold them: owner only.
    for d in ["", "server", "server/pki", "nodes/n1", "nodes/n2"] {
        assert_eq!(mode(&dir.join(d)), 0o700, "directory {d:?}");
    }

    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "ferry down: {}", text(&down));
    c.assert_gone();
}
