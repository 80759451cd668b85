//! `/run/netns` as `ip netns` leaves it: a namespace bound there by [`create_bound`] can still be
//! removed after a later `ip netns add` (which makes the directory a shared mount point of its
//! own when it is not one yet). Before `create_bound` did that first, the nsfs mount stayed below
//! iproute2's new mount, `umount` no longer reached it and removing the file failed with EBUSY
//! (a `ferry down` that could not finish).
//!
//! The check runs in a private mount namespace (`unshare --mount --propagation private`, a child
//! process running the ignored test below) on a tmpfs of its own over `/run`: nothing it mounts,
//! unmounts or creates reaches the machine.

use ferry_sys::netns::{create_bound, remove_bound, RUN_DIR};
use std::path::Path;
use std::process::Command;

/// The parent's mount namespace (`mnt:[inode]`), for the child to check it is elsewhere.
const PARENT_MNT: &str = "FERRY_TEST_PARENT_MNT_NS";
/// The second child: namespaces an older build bound in a plain `/run/netns` keep it plain.
const CHILD_OLD: &str = "in_a_private_mount_namespace_namespaces_bound_before_keep_run_netns_plain";
const CHILD: &str = "in_a_private_mount_namespace_a_later_ip_netns_add_does_not_pin_ours";

#[test]
fn a_namespace_in_run_netns_survives_a_later_ip_netns_add() {
    if !ferry_sys::process::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "run_dir: needs root (CI runs as root)"
        );
        eprintln!("SKIPPED run_dir: needs root");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let parent = std::fs::read_link("/proc/self/ns/mnt").expect("own mount ns");
    for child in [CHILD, CHILD_OLD] {
        let out = Command::new("unshare")
            .env(PARENT_MNT, &parent)
            .args(["--mount", "--propagation", "private"])
            .arg(&exe)
            .args([
                "--exact",
                child,
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .output()
            .expect("unshare (util-linux)");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{child}: {stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{child}: {stdout}\n{stderr}");
    }
}

/// In the child: a private tmpfs over `/run` (nothing reaches the machine's `/run`).
fn private_run() {
    let own = std::fs::read_link("/proc/self/ns/mnt").expect("own mount ns");
    let parent = std::env::var_os(PARENT_MNT).expect("started by the parent test");
    assert_ne!(own.as_os_str(), parent, "not in a private mount namespace");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "ferry-run-dir-test", "/run"])
        .status()
        .expect("mount");
    assert!(st.success(), "a private tmpfs on /run");
    assert_eq!(covering_mount(), "/run");
}

#[test]
#[ignore = "run by a_namespace_in_run_netns_survives_a_later_ip_netns_add in a private mount namespace"]
fn in_a_private_mount_namespace_namespaces_bound_before_keep_run_netns_plain() {
    private_run();
    std::fs::create_dir_all(RUN_DIR).expect("run dir");
    // What an older build left: a namespace bound in the plain directory (util-linux binds it
    // without touching the directory, as ferry did).
    let old = Path::new(RUN_DIR).join("older");
    std::fs::File::create(&old).expect("old file");
    let st = Command::new("unshare")
        .arg(format!("--net={}", old.display()))
        .arg("true")
        .status()
        .expect("unshare --net");
    assert!(st.success());
    let ours = Path::new(RUN_DIR).join("newer");
    create_bound(&ours).expect("create_bound");
    assert_eq!(
        covering_mount(),
        "/run",
        "left plain: binding it would hide `older`"
    );
    remove_bound(&old).expect("the older namespace still goes");
    remove_bound(&ours).expect("ours goes");
    assert!(!old.exists() && !ours.exists());
}

/// The mount point of the mount `/run/netns` lies on now: the last listed of those on `/`,
/// `/run`, `/run/netns` (`mountinfo` is in mount order; a later one hides what it covers).
fn covering_mount() -> String {
    mount_points()
        .into_iter()
        .rev()
        .find(|m| m == "/" || m == "/run" || m == RUN_DIR)
        .unwrap_or_default()
}

/// Mount points of this mount namespace (field 5 of `/proc/self/mountinfo`).
fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

#[test]
#[ignore = "run by a_namespace_in_run_netns_survives_a_later_ip_netns_add in a private mount namespace"]
fn in_a_private_mount_namespace_a_later_ip_netns_add_does_not_pin_ours() {
    // `/run/netns` as on a machine where no namespace was made yet.
    private_run();
    let name = format!("ferry-rundir-{}", std::process::id());
    let ours = Path::new(RUN_DIR).join(&name);
    let theirs = format!("{name}-ip");
    create_bound(&ours).expect("create_bound");
    assert_eq!(
        covering_mount(),
        RUN_DIR,
        "create_bound made /run/netns a mount point"
    );
    for args in [["netns", "add", &theirs], ["netns", "del", &theirs]] {
        let st = Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    }
    remove_bound(&ours).expect("remove_bound after ip netns add");
    assert!(!ours.exists());
    let path = ours.to_string_lossy().into_owned();
    assert!(!mount_points().contains(&path), "{path} still mounted");
}
