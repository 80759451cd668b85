//! `/run/netns` as `ip netns` leaves it: a namespace bound there by [`create_bound`] can still be
//! removed after a later `ip netns add` (which makes the directory a shared mount point of its
//! own when it is not one yet). Before `create_bound` did that first, the nsfs mount stayed below
//! iproute2's new mount, `umount` no longer reached it and removing the file failed with EBUSY
//! (a `ferry down` that could not finish).
//!
//! The check runs in a private mount namespace (`unshare --mount --propagation private`, a child
//! process running the ignored test below), where `/run/netns` is first made a plain directory
//! again: nothing it mounts or unmounts reaches the machine's mounts.

use ferry_sys::netns::{create_bound, remove_bound, RUN_DIR};
use std::path::Path;
use std::process::Command;

/// The parent's mount namespace (`mnt:[inode]`), for the child to check it is elsewhere.
const PARENT_MNT: &str = "FERRY_TEST_PARENT_MNT_NS";
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
    let out = Command::new("unshare")
        .env(PARENT_MNT, parent)
        .args(["--mount", "--propagation", "private"])
        .arg(&exe)
        .args([
            "--exact",
            CHILD,
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
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
}

/// Removes files when dropped (a failed assertion included).
struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = ferry_sys::fs::umount_detach(f);
            let _ = std::fs::remove_file(f);
        }
    }
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
    // Only ever in the child `unshare` started: the mounts below must not be the machine's.
    let own = std::fs::read_link("/proc/self/ns/mnt").expect("own mount ns");
    let parent = std::env::var_os(PARENT_MNT).expect("started by the parent test");
    assert_ne!(own.as_os_str(), parent, "not in a private mount namespace");
    // `/run/netns` as on a machine where no namespace was made yet: a plain directory.
    std::fs::create_dir_all(RUN_DIR).expect("run dir");
    while mount_points().iter().any(|m| m == RUN_DIR) {
        ferry_sys::fs::umount_detach(Path::new(RUN_DIR)).expect("umount /run/netns");
    }
    let name = format!("ferry-rundir-{}", std::process::id());
    let ours = Path::new(RUN_DIR).join(&name);
    let theirs = format!("{name}-ip");
    // Mounts end with this mount namespace, files do not: both names go on every exit path.
    let _files = RemoveOnDrop(vec![ours.clone(), Path::new(RUN_DIR).join(&theirs)]);
    create_bound(&ours).expect("create_bound");
    assert!(
        mount_points().iter().any(|m| m == RUN_DIR),
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
