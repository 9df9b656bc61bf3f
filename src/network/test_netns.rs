//! Test support: network namespaces the unit tests make and drop.

use std::os::fd::OwnedFd;

/// A new netns held by an fd, made on a thread that exits at once (so the
/// test's own thread stays in the host's netns); gone with the fd.
pub(crate) fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}
