//! Mounts inside the job's mount namespace. Every target inside the new
//! root is resolved with openat2(RESOLVE_IN_ROOT) and mounted onto through
//! its fd, so a symlink in the image can never send a mount onto the host
//! (CVE-2021-30465, the runc symlink-exchange attack).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, mknodat};

use super::spec::BindMount;
use crate::sys::{self, Resolve};

/// What to create at a mount target that does not exist in the image.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
}

fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The kernel's own limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_SYMLINK_HOPS: u32 = 40;

/// Opens `path` (absolute, clean) inside `root` as if `root` were `/`,
/// creating what is missing. Returns an O_PATH fd of the object. A dangling
/// symlink on the way is followed inside the root and its target created,
/// as runc's securejoin does: the mount lands where the image points, but
/// always within the image.
pub fn resolve_in_root(root: BorrowedFd<'_>, path: &Path, create: Create) -> io::Result<OwnedFd> {
    resolve_hops(root, path, create, 0)
}

fn resolve_hops(root: BorrowedFd<'_>, path: &Path, create: Create, hops: u32) -> io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return sys::openat2(root, Path::new("."), libc::O_PATH, 0, Resolve::InRoot);
    }
    match sys::openat2(root, rel, libc::O_PATH, 0, Resolve::InRoot) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let parent_path = path.parent().unwrap_or(Path::new("/"));
    let parent = resolve_hops(root, parent_path, Create::Dir, hops)?;
    let name = path.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // Created through the parent's fd, never through a path string: the
    // parent was resolved inside the root, and `name` is one component.
    let made = match create {
        Create::Dir => nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)),
        Create::File => nix::fcntl::openat(
            parent.as_fd(),
            name,
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
    };
    match made {
        Ok(()) => sys::openat2(root, rel, libc::O_PATH, 0, Resolve::InRoot),
        // EEXIST although the lookup said ENOENT: a dangling symlink.
        Err(nix::errno::Errno::EEXIST) if hops < MAX_SYMLINK_HOPS => {
            let target = nix::fcntl::readlinkat(parent.as_fd(), name).map_err(io::Error::from)?;
            let next = join_in_root(parent_path, Path::new(&target));
            resolve_hops(root, &next, create, hops + 1)
        }
        Err(nix::errno::Errno::EEXIST) => Err(io::Error::from_raw_os_error(libc::ELOOP)),
        Err(e) => Err(e.into()),
    }
}

/// `base` joined with a symlink target, `..` clamped at `/` exactly as
/// RESOLVE_IN_ROOT clamps it.
fn join_in_root(base: &Path, target: &Path) -> PathBuf {
    let mut out = if target.is_absolute() { PathBuf::from("/") } else { base.to_path_buf() };
    for c in target.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Mounts a fresh filesystem of `fstype` onto the object `target` refers to.
pub fn mount_fs(fstype: &str, target: BorrowedFd<'_>, flags: MsFlags, data: Option<&str>) -> io::Result<()> {
    mount(Some(fstype), sys::fd_path(target).as_c_str(), Some(fstype), flags, data)
        .map_err(|e| ctx(e.into(), format!("mounting {fstype}")))
}

/// Binds the tree at `source` onto `target`, recursively, with the given
/// MOUNT_ATTR_* flags set on every mount of the copy.
pub fn bind(source: BorrowedFd<'_>, target: BorrowedFd<'_>, attrs: u64) -> io::Result<()> {
    let tree = sys::clone_tree(source)?;
    sys::set_mount_attrs(tree.as_fd(), attrs)?;
    sys::move_mount_onto(tree.as_fd(), target)
}

/// `/proc`, `/sys` and `/dev` of the image must be real directories: a
/// symlink there would aim the kernel filesystems somewhere else.
pub fn check_special_dir(root: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match nix::sys::stat::fstatat(root, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFDIR => Ok(()),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFLNK => {
            Err(io::Error::other(format!(
                "the image's /{name} is a symlink; refusing it (it could redirect the {name} mount); make /{name} a directory"
            )))
        }
        Ok(_) => Err(io::Error::other(format!("the image's /{name} is not a directory; make it one"))),
        Err(nix::errno::Errno::ENOENT) => {
            nix::sys::stat::mkdirat(root, name, Mode::from_bits_truncate(0o755)).map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// Fresh /proc (the job's pid namespace) and a read-only /sys.
pub fn mount_proc_sys(root: BorrowedFd<'_>) -> io::Result<()> {
    for name in ["proc", "sys", "dev"] {
        check_special_dir(root, name)?;
    }
    let proc_dir = resolve_in_root(root, Path::new("/proc"), Create::Dir)?;
    mount_fs("proc", proc_dir.as_fd(), NOSUID_NODEV_NOEXEC, None)?;
    let sys_dir = resolve_in_root(root, Path::new("/sys"), Create::Dir)?;
    mount_fs("sysfs", sys_dir.as_fd(), NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY, None)
}

/// A minimal /dev on a small tmpfs: the usual nodes made by mknod (so their
/// device numbers are known, not whatever the host's /dev holds), the fd
/// links, a private devpts instance and /dev/shm.
pub fn mount_dev(root: BorrowedFd<'_>) -> io::Result<()> {
    let dev_dir = resolve_in_root(root, Path::new("/dev"), Create::Dir)?;
    mount_fs("tmpfs", dev_dir.as_fd(), MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k"))?;
    // Reopen: the fd from before the mount names the directory under it.
    let dev = sys::openat2(root, Path::new("dev"), libc::O_DIRECTORY | libc::O_RDONLY, 0, Resolve::InRoot)?;
    let nodes: [(&str, u64, u64); 6] =
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];
    for (name, major, minor) in nodes {
        mknodat(
            dev.as_fd(),
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            libc::makedev(major as u32, minor as u32),
        )
        .map_err(|e| ctx(e.into(), format!("mknod /dev/{name}")))?;
        // mknod honours the umask; the nodes must be world-usable.
        nix::sys::stat::fchmodat(
            dev.as_fd(),
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io::Error::from)?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    for (name, target) in links {
        nix::unistd::symlinkat(target, dev.as_fd(), name).map_err(io::Error::from)?;
    }
    for name in ["pts", "shm"] {
        nix::sys::stat::mkdirat(dev.as_fd(), name, Mode::from_bits_truncate(0o755)).map_err(io::Error::from)?;
    }
    let pts = sys::openat2(dev.as_fd(), Path::new("pts"), libc::O_PATH, 0, Resolve::Beneath)?;
    mount_fs(
        "devpts",
        pts.as_fd(),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = sys::openat2(dev.as_fd(), Path::new("shm"), libc::O_PATH, 0, Resolve::Beneath)?;
    mount_fs("tmpfs", shm.as_fd(), NOSUID_NODEV_NOEXEC, Some("mode=1777,size=65536k"))
}

/// The user's `--mount`s (detached trees prepared by the runner, see
/// `spec`) attached onto targets resolved inside the root.
pub fn mount_binds(root: BorrowedFd<'_>, binds: &[BindMount]) -> io::Result<()> {
    for b in binds {
        let create = if b.source_is_dir { Create::Dir } else { Create::File };
        let target =
            resolve_in_root(root, &b.target, create).map_err(|e| ctx(e, format!("mount target {:?}", b.target)))?;
        sys::move_mount_onto(b.source.as_fd(), target.as_fd())
            .map_err(|e| ctx(e, format!("binding {:?} onto {:?}", b.source_path, b.target)))?;
    }
    Ok(())
}

/// Puts a new, empty regular file (0644) at /etc/NAME in the job's view,
/// replacing whatever is there (a symlink such as resolv.conf ->
/// ../run/systemd/... included), and returns it open for writing: the
/// child creates its network files before it drops privileges and fills
/// them once the runner's go brings their contents. With a directory
/// rootfs this lands in the overlay's upper layer, with a tar in the
/// tmpfs: never in the source.
pub fn create_etc_file(root: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let etc = resolve_in_root(root, Path::new("/etc"), Create::Dir)?;
    let etc = sys::openat2(etc.as_fd(), Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, 0, Resolve::Beneath)?;
    // Made under a name of our own (O_NOFOLLOW: never through a symlink
    // the image put there), then renamed over NAME, which replaces a
    // symlink instead of following it.
    let tmp = format!(".{name}.repeatr");
    let fd = nix::fcntl::openat(
        etc.as_fd(),
        tmp.as_str(),
        nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_TRUNC
            | nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| ctx(e.into(), format!("writing /etc/{name}")))?;
    let f = File::from(fd);
    nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(0o644)).map_err(io::Error::from)?;
    nix::fcntl::renameat(etc.as_fd(), tmp.as_str(), etc.as_fd(), name)
        .map_err(|e| ctx(e.into(), format!("replacing /etc/{name}")))?;
    Ok(f)
}

/// Makes the directory `new_root` (a mount point) the job's `/` and drops
/// every reference to the host's tree.
pub fn pivot_into(new_root: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::fchdir(new_root).map_err(io::Error::from)?;
    sys::pivot_root_here().map_err(|e| ctx(e, "pivot_root"))?;
    // The old root now sits on top of the new one at ".". Slave it first so
    // that the detach below cannot propagate anywhere, then detach it.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .map_err(io::Error::from)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| ctx(e.into(), "detaching the old root"))?;
    nix::unistd::chdir("/").map_err(io::Error::from)
}

/// Docker's default masked paths: kernel interfaces a job has no business
/// reading (keys, kernel memory, timers that leak host activity).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths: writable by root otherwise, and
/// global to the host whatever the namespaces (sysctls, sysrq).
pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Masks and write-protects after the pivot, where `/` is the job's root.
pub fn protect_kernel_paths() -> io::Result<()> {
    let root = File::open("/")?;
    let devnull = sys::openat2(root.as_fd(), Path::new("dev/null"), libc::O_PATH, 0, Resolve::InRoot)?;
    // runc CVE-2025-31133: if /dev/null were swapped for something else, the
    // "mask" would bind that thing over /proc files instead.
    let meta = File::from(devnull.try_clone()?).metadata()?;
    if !meta.file_type().is_char_device() || meta.rdev() != libc::makedev(1, 3) {
        return Err(io::Error::other("/dev/null is not the char device 1:3; refusing to mask with it"));
    }
    for path in MASKED_PATHS {
        let Some(target) = open_existing(root.as_fd(), path)? else {
            continue;
        };
        let is_dir = File::from(target.try_clone()?).metadata()?.is_dir();
        if is_dir {
            mount_fs("tmpfs", target.as_fd(), MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC, Some("size=0"))?;
        } else {
            bind(
                devnull.as_fd(),
                target.as_fd(),
                libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            )?;
        }
    }
    for path in READONLY_PATHS {
        let Some(target) = open_existing(root.as_fd(), path)? else {
            continue;
        };
        bind(
            target.as_fd(),
            target.as_fd(),
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
        )
        .map_err(|e| ctx(e, format!("making {path} read-only")))?;
    }
    Ok(())
}

fn open_existing(root: BorrowedFd<'_>, path: &str) -> io::Result<Option<OwnedFd>> {
    let rel = PathBuf::from(path.trim_start_matches('/'));
    match sys::openat2(root, &rel, libc::O_PATH, 0, Resolve::InRoot) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ctx(e, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_joined_inside_the_root() {
        assert_eq!(join_in_root(Path::new("/a"), Path::new("/host/x")), PathBuf::from("/host/x"));
        assert_eq!(join_in_root(Path::new("/a/b"), Path::new("../c")), PathBuf::from("/a/c"));
        assert_eq!(join_in_root(Path::new("/a"), Path::new("../../../../etc")), PathBuf::from("/etc"));
    }
}
