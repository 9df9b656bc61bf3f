//! Mounts inside the job's mount namespace. Every target inside the new
//! root is resolved with openat2(RESOLVE_IN_ROOT) and mounted onto through
//! its fd, so a symlink in the image can never send a mount onto the host
//! (CVE-2021-30465, the runc symlink-exchange attack). The steps go
//! through a [`Syscall`], so that a test checks their order without root.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag, mknodat};

use super::resolve::Create;
use super::spec::{BindMount, TmpfsSizes};
use super::syscall::{Syscall, ctx};
use crate::sys::Resolve;

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
pub fn mount_proc_sys<S: Syscall>(s: &S, root: &S::Fd) -> io::Result<()> {
    s.fs_work(root, "check /proc, /sys and /dev", |root| {
        ["proc", "sys", "dev"].into_iter().try_for_each(|name| check_special_dir(root, name))
    })?;
    let proc_dir = s.resolve_in_root(root, Path::new("/proc"), Create::Dir)?;
    s.mount_fs("proc", &proc_dir, NOSUID_NODEV_NOEXEC, None)?;
    // Opened again: `proc_dir` names the directory under the new mount.
    let proc = s.open_at(root, Path::new("proc"), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::InRoot)?;
    s.fs_work(&proc, "allow ping sockets", allow_ping_sockets)?;
    let sys_dir = s.resolve_in_root(root, Path::new("/sys"), Create::Dir)?;
    s.mount_fs("sysfs", &sys_dir, NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY, None)
}

/// Unprivileged ICMP ("ping" sockets) for every group: the job has no
/// CAP_NET_RAW, and iputils' ping falls back to these (Docker sets the
/// same). Net sysctls are those of the opener's netns, the job's; written
/// through the job's own /proc and not the host's, because each netns
/// that opens a file under the host's /proc/sys/net leaves its dentries
/// in the host's dcache until the netns dies, and every later lookup there
/// walks them (190 µs per open next to 900 live jobs, 1.6 µs this way).
fn allow_ping_sockets(proc: BorrowedFd<'_>) -> io::Result<()> {
    let f = crate::sys::openat2(proc, Path::new("sys/net/ipv4/ping_group_range"), libc::O_WRONLY, 0, Resolve::Beneath)?;
    io::Write::write_all(&mut std::fs::File::from(f), b"0 2147483647")
}

/// The device nodes a job gets, as (name, major, minor): what Docker and
/// podman give, nothing that reaches host hardware or storage.
const DEV_NODES: [(&str, u32, u32); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// A minimal /dev: a `nodev` tmpfs (so a node the job makes there, with
/// CAP_MKNOD or a tar's help, never opens a device), the usual nodes bound
/// onto it one by one from a scratch tmpfs underneath that the job cannot
/// reach (a bind of a node is a mount of its own, which `nodev` on /dev
/// does not cover; this is how bubblewrap does it), the fd links, a
/// private devpts instance and /dev/shm. Returns the scratch tmpfs, where
/// [`bind_etc_files`] keeps the job's /etc files too.
pub fn mount_dev<S: Syscall>(s: &S, root: &S::Fd, shm_size: u64) -> io::Result<S::Fd> {
    let dev_dir = s.resolve_in_root(root, Path::new("/dev"), Create::Dir)?;
    // The scratch tmpfs: the nodes are made here, where devices work...
    s.mount_fs("tmpfs", &dev_dir, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=755,size=256k"))?;
    let scratch = s.open_at(root, Path::new("dev"), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::InRoot)?;
    s.fs_work(&scratch, "make the device nodes", make_dev_nodes)?;
    let nodes = DEV_NODES
        .iter()
        .map(|(name, _, _)| s.open_at(&scratch, Path::new(name), libc::O_PATH, Resolve::Beneath))
        .collect::<io::Result<Vec<_>>>()?;
    // ...and the job's /dev goes on top of it, where they do not.
    s.mount_fs(
        "tmpfs",
        &dev_dir,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    // Reopen: the fd from before the mount names the directory under it.
    let dev = s.open_at(root, Path::new("dev"), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::InRoot)?;
    s.fs_work(&dev, "make the /dev entries", make_dev_entries)?;
    for ((name, _, _), node) in DEV_NODES.iter().zip(&nodes) {
        let target = s.open_at(&dev, Path::new(name), libc::O_PATH, Resolve::Beneath)?;
        s.bind(node, &target, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC)
            .map_err(|e| ctx(e, format!("binding /dev/{name}")))?;
    }
    let pts = s.open_at(&dev, Path::new("pts"), libc::O_PATH, Resolve::Beneath)?;
    s.mount_fs(
        "devpts",
        &pts,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = s.open_at(&dev, Path::new("shm"), libc::O_PATH, Resolve::Beneath)?;
    let options = format!("mode=1777,{}", TmpfsSizes::option(shm_size));
    s.mount_fs("tmpfs", &shm, NOSUID_NODEV_NOEXEC, Some(&options))?;
    Ok(scratch)
}

/// The /etc files the job gets from the runner (hostname, and hosts and
/// resolv.conf from its go), open for writing.
pub struct EtcFiles<F> {
    pub hostname: F,
    pub hosts: F,
    pub resolv_conf: F,
}

/// The job's /etc/hostname, hosts and resolv.conf: files of their own on
/// the scratch tmpfs, each bound over its path in the root (as Docker
/// does), so that writing them never writes the image, nor a host
/// directory the user bound at /etc (which a file replaced in place
/// would). After the user's binds, so they cover one at /etc. A symlink
/// there (resolv.conf -> ../run/systemd/...) is followed inside the root.
/// A file that is missing in a host directory bound at /etc is not made
/// there: the job sees that directory as it is.
pub fn bind_etc_files<S: Syscall>(s: &S, root: &S::Fd, scratch: &S::Fd) -> io::Result<EtcFiles<S::Fd>> {
    s.fs_work(scratch, "make the /etc files", |dir| {
        ETC_FILES.iter().try_for_each(|name| {
            nix::fcntl::openat(
                dir,
                *name,
                nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
            .map_err(|e| ctx(e.into(), format!("creating {name}")))?;
            nix::sys::stat::fchmodat(
                dir,
                *name,
                Mode::from_bits_truncate(0o644),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(io::Error::from)
        })
    })?;
    let mut open = Vec::new();
    for name in ETC_FILES {
        let file = s.open_at(scratch, Path::new(name), libc::O_PATH, Resolve::Beneath)?;
        match etc_target(s, root, name)? {
            Some(target) => s
                .bind(&file, &target, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC)
                .map_err(|e| ctx(e, format!("binding /etc/{name}")))?,
            None => log::debug!("/etc/{name}: not in the directory bound at /etc; left as it is"),
        }
        open.push(s.open_at(scratch, Path::new(name), libc::O_WRONLY, Resolve::Beneath)?);
    }
    let mut open = open.into_iter();
    match (open.next(), open.next(), open.next()) {
        (Some(hostname), Some(hosts), Some(resolv_conf)) => Ok(EtcFiles { hostname, hosts, resolv_conf }),
        _ => Err(io::Error::other("the /etc files went missing")),
    }
}

/// In this order: [`EtcFiles`]' fields.
const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Where /etc/NAME is in the root: the existing object (through symlinks,
/// inside the root), or a new empty file when /etc is the root's own;
/// `None` when it is missing from a host directory bound at /etc.
fn etc_target<S: Syscall>(s: &S, root: &S::Fd, name: &str) -> io::Result<Option<S::Fd>> {
    let path = Path::new("etc").join(name);
    match s.open_at(root, &path, libc::O_PATH, Resolve::InRoot) {
        Ok(fd) => return Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(e, format!("/etc/{name}"))),
    }
    let etc = s.resolve_in_root(root, Path::new("/etc"), Create::Dir)?;
    if !s.same_fs(&etc, root)? {
        return Ok(None);
    }
    s.resolve_in_root(root, &Path::new("/").join(&path), Create::File).map(Some)
}

/// The device nodes, on the scratch tmpfs (made by mknod, so their numbers
/// are known, not whatever the host's /dev holds).
fn make_dev_nodes(dir: BorrowedFd<'_>) -> io::Result<()> {
    for (name, major, minor) in DEV_NODES {
        mknodat(dir, name, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), libc::makedev(major, minor))
            .map_err(|e| ctx(e.into(), format!("mknod /dev/{name}")))?;
        // mknod honours the umask; the nodes must be world-usable.
        nix::sys::stat::fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// In the job's /dev: an empty file per node (a bind target), the fd
/// links, and the mount points of devpts and shm.
fn make_dev_entries(dev: BorrowedFd<'_>) -> io::Result<()> {
    for (name, _, _) in DEV_NODES {
        nix::fcntl::openat(
            dev,
            name,
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        )
        .map_err(|e| ctx(e.into(), format!("creating /dev/{name}")))?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    for (name, target) in links {
        nix::unistd::symlinkat(target, dev, name).map_err(io::Error::from)?;
    }
    for name in ["pts", "shm"] {
        nix::sys::stat::mkdirat(dev, name, Mode::from_bits_truncate(0o755)).map_err(io::Error::from)?;
    }
    Ok(())
}

/// The user's `--mount`s (detached trees prepared by the runner, see
/// `spec`) attached onto targets resolved inside the root.
pub fn mount_binds<S: Syscall>(s: &S, root: &S::Fd, binds: &[BindMount]) -> io::Result<()> {
    for b in binds {
        let create = if b.source_is_dir { Create::Dir } else { Create::File };
        let target =
            s.resolve_in_root(root, &b.target, create).map_err(|e| ctx(e, format!("mount target {:?}", b.target)))?;
        s.attach(b.source.as_fd(), &target)
            .map_err(|e| ctx(e, format!("binding {:?} onto {:?}", b.source_path, b.target)))?;
    }
    Ok(())
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
pub fn protect_kernel_paths<S: Syscall>(s: &S) -> io::Result<()> {
    let root = s.open_dir(Path::new("/"))?;
    let devnull = s.open_at(&root, Path::new("dev/null"), libc::O_PATH, Resolve::InRoot)?;
    // runc CVE-2025-31133: if /dev/null were swapped for something else, the
    // "mask" would bind that thing over /proc files instead.
    s.fs_work(&devnull, "check /dev/null", check_null_device)?;
    for path in MASKED_PATHS {
        let Some(target) = open_existing(s, &root, path)? else {
            continue;
        };
        if s.is_dir(&target)? {
            s.mount_fs("tmpfs", &target, MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC, Some("size=0"))?;
        } else {
            s.bind(&devnull, &target, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV)?;
        }
    }
    for path in READONLY_PATHS {
        let Some(target) = open_existing(s, &root, path)? else {
            continue;
        };
        s.bind(
            &target,
            &target,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
        )
        .map_err(|e| ctx(e, format!("making {path} read-only")))?;
    }
    Ok(())
}

fn check_null_device(devnull: BorrowedFd<'_>) -> io::Result<()> {
    let meta = File::from(devnull.try_clone_to_owned()?).metadata()?;
    if !meta.file_type().is_char_device() || meta.rdev() != libc::makedev(1, 3) {
        return Err(io::Error::other("/dev/null is not the char device 1:3; refusing to mask with it"));
    }
    Ok(())
}

fn open_existing<S: Syscall>(s: &S, root: &S::Fd, path: &str) -> io::Result<Option<S::Fd>> {
    let rel = PathBuf::from(path.trim_start_matches('/'));
    match s.open_at(root, &rel, libc::O_PATH, Resolve::InRoot) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ctx(e, path)),
    }
}
