//! The seam between the launch's mount steps and the kernel, after youki's
//! `Syscall` trait. `rootfs`, `mounts` and `init` say what happens in which
//! order, through a [`Syscall`]; [`Linux`] does it, with the calls of
//! `crate::sys` and nix, and a test's recorder (`recorder`) logs it instead,
//! so that the order of the steps is checked without root.
//!
//! The seam covers the mount-level operations (lookups, mounts, the pivot)
//! and nothing finer: plain file work inside a directory it opened
//! (mkdir, mknod, unpacking a tar) is one [`Syscall::fs_work`] step. Callers
//! are generic over it, so the real path compiles to the same calls as
//! without a seam.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;

use super::resolve::{self, Create};
use crate::sys::{self, Resolve};

/// The mount-level operations of the launch, on objects of type `Fd`
/// (an open fd for real, a token in a test).
pub trait Syscall {
    type Fd;

    /// Makes the mount at `path`, and every mount below it, a slave: no
    /// mount made under it from then on propagates to the peers it had.
    fn make_rslave(&self, path: &Path) -> io::Result<()>;

    /// Opens the directory at `path`, as the process sees it now.
    fn open_dir(&self, path: &Path) -> io::Result<Self::Fd>;

    /// `openat2` of `path` at `dir`, with `flags` and no mode.
    fn open_at(&self, dir: &Self::Fd, path: &Path, flags: libc::c_int, resolve: Resolve) -> io::Result<Self::Fd>;

    /// [`resolve::resolve_in_root`]: `path` inside `root`, what is missing
    /// created, as if `root` were `/`.
    fn resolve_in_root(&self, root: &Self::Fd, path: &Path, create: Create) -> io::Result<Self::Fd>;

    /// Plain file work at the object `at` names (`what` it is, for a test's
    /// log): no mount and no lookup outside it.
    fn fs_work(
        &self,
        at: &Self::Fd,
        what: &'static str,
        work: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()>;

    /// Whether `fd` names a directory.
    fn is_dir(&self, fd: &Self::Fd) -> io::Result<bool>;

    /// Whether `a` and `b` are on one filesystem (the same st_dev): the
    /// job's root, or a host directory bound into it.
    fn same_fs(&self, a: &Self::Fd, b: &Self::Fd) -> io::Result<bool>;

    /// The path that names `fd` in mount options ([`sys::fd_path`]).
    fn fd_path(&self, fd: &Self::Fd) -> CString;

    /// Mounts a fresh filesystem of `fstype` onto the object `target` names.
    fn mount_fs(&self, fstype: &str, target: &Self::Fd, flags: MsFlags, data: Option<&str>) -> io::Result<()>;

    /// Attaches the detached mount `tree` (made by the runner, see `spec`)
    /// on top of the object `target` names.
    fn attach(&self, tree: BorrowedFd<'_>, target: &Self::Fd) -> io::Result<()>;

    /// Binds the tree at `source` onto `target`, recursively, with the given
    /// MOUNT_ATTR_* flags set on every mount of the copy.
    fn bind(&self, source: &Self::Fd, target: &Self::Fd, attrs: u64) -> io::Result<()>;

    /// The uts namespace's hostname.
    fn set_hostname(&self, name: &str) -> io::Result<()>;

    /// Makes the directory `new_root` (a mount point) the process's `/` and
    /// drops every reference to the tree it had.
    fn pivot_into(&self, new_root: &Self::Fd) -> io::Result<()>;
}

/// An io::Error that says which step failed.
pub fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The kernel: every operation is the real call.
pub struct Linux;

impl Syscall for Linux {
    type Fd = OwnedFd;

    fn make_rslave(&self, path: &Path) -> io::Result<()> {
        mount(None::<&str>, path, None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
            .map_err(io::Error::from)
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    }

    fn open_at(&self, dir: &OwnedFd, path: &Path, flags: libc::c_int, resolve: Resolve) -> io::Result<OwnedFd> {
        sys::openat2(dir.as_fd(), path, flags, 0, resolve)
    }

    fn resolve_in_root(&self, root: &OwnedFd, path: &Path, create: Create) -> io::Result<OwnedFd> {
        resolve::resolve_in_root(root.as_fd(), path, create)
    }

    fn fs_work(
        &self,
        at: &OwnedFd,
        _what: &'static str,
        work: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        work(at.as_fd())
    }

    fn is_dir(&self, fd: &OwnedFd) -> io::Result<bool> {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    fn same_fs(&self, a: &OwnedFd, b: &OwnedFd) -> io::Result<bool> {
        let dev = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_fd()).map(|st| st.st_dev).map_err(io::Error::from);
        Ok(dev(a)? == dev(b)?)
    }

    fn fd_path(&self, fd: &OwnedFd) -> CString {
        sys::fd_path(fd.as_fd())
    }

    fn mount_fs(&self, fstype: &str, target: &OwnedFd, flags: MsFlags, data: Option<&str>) -> io::Result<()> {
        mount(Some(fstype), sys::fd_path(target.as_fd()).as_c_str(), Some(fstype), flags, data)
            .map_err(|e| ctx(e.into(), format!("mounting {fstype}")))
    }

    fn attach(&self, tree: BorrowedFd<'_>, target: &OwnedFd) -> io::Result<()> {
        sys::move_mount_onto(tree, target.as_fd())
    }

    fn bind(&self, source: &OwnedFd, target: &OwnedFd, attrs: u64) -> io::Result<()> {
        let tree = sys::detached_copy(source.as_fd(), attrs)?;
        sys::move_mount_onto(tree.as_fd(), target.as_fd())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn pivot_into(&self, new_root: &OwnedFd) -> io::Result<()> {
        nix::unistd::fchdir(new_root.as_fd()).map_err(io::Error::from)?;
        sys::pivot_root_here().map_err(|e| ctx(e, "pivot_root"))?;
        // The old root now sits on top of the new one at ".". Slave it first so
        // that the detach below cannot propagate anywhere, then detach it.
        self.make_rslave(Path::new("."))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(|e| ctx(e.into(), "detaching the old root"))?;
        nix::unistd::chdir("/").map_err(io::Error::from)
    }
}
