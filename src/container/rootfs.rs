//! The job's root filesystem, built inside its own mount namespace so the
//! kernel takes it all down when the job dies, even after SIGKILL of the
//! runner: nothing of it is ever visible on the host.
//!
//! - a directory becomes the read-only lower layer of an overlay whose upper
//!   and work dirs live on a tmpfs: the job may write anywhere, the source is
//!   never touched;
//! - a tar is unpacked into that tmpfs.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use super::mounts::mount_fs;
use super::spec::Rootfs;
use crate::archive as tar;
use crate::sys::{self, Resolve};

/// Builds the root on a fresh tmpfs at `base` and returns an fd of it
/// (a mount point, as pivot_root wants).
pub fn build(rootfs: &Rootfs, base: &Path) -> io::Result<OwnedFd> {
    let base_fd = sys::openat2(
        std::fs::File::open("/")?.as_fd(),
        base.strip_prefix("/").unwrap_or(base),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve::Beneath,
    )?;
    mount_fs("tmpfs", base_fd.as_fd(), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=755"))?;
    // The fd from before names the directory under the new tmpfs.
    let tmpfs = open_dir(base)?;
    match rootfs {
        Rootfs::Dir { tree, owner } => overlay(tree, *owner, &tmpfs),
        Rootfs::Tar { file, .. } => {
            let reader = tar::decompressed(Box::new(file.try_clone()?)).map_err(io::Error::other)?;
            let stats = tar::unpack(reader, tmpfs.as_fd()).map_err(io::Error::other)?;
            log::debug!("unpacked {} entries, {} bytes", stats.entries, stats.bytes);
            Ok(tmpfs)
        }
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// overlay(lower = the directory, upper + work on the tmpfs) mounted at
/// `tmpfs/merged`. The layers are named by /proc/self/fd paths: the option
/// string cannot then be confused by ',' or ':' in a host path, and the
/// lower is the very directory the runner opened (its detached copy,
/// attached here at `tmpfs/lower`).
fn overlay(lower_tree: &OwnedFd, (uid, gid, mode): (u32, u32, u32), tmpfs: &OwnedFd) -> io::Result<OwnedFd> {
    for name in ["lower", "upper", "work", "merged"] {
        nix::sys::stat::mkdirat(tmpfs.as_fd(), name, Mode::from_bits_truncate(0o755)).map_err(io::Error::from)?;
    }
    // The merged root shows the upper dir's owner and mode: copy the
    // source root's, or every image would get a root-owned 0755 `/`.
    let upper =
        sys::openat2(tmpfs.as_fd(), Path::new("upper"), libc::O_DIRECTORY | libc::O_RDONLY, 0, Resolve::Beneath)?;
    nix::unistd::fchown(upper.as_fd(), Some(uid.into()), Some(gid.into())).map_err(io::Error::from)?;
    nix::sys::stat::fchmod(upper.as_fd(), Mode::from_bits_truncate(mode)).map_err(io::Error::from)?;
    let lower_dir = sys::openat2(tmpfs.as_fd(), Path::new("lower"), libc::O_PATH, 0, Resolve::Beneath)?;
    sys::move_mount_onto(lower_tree.as_fd(), lower_dir.as_fd())?;
    // Reopen: the fd from before the attach names the directory under it.
    let lower = sys::openat2(tmpfs.as_fd(), Path::new("lower"), libc::O_PATH, 0, Resolve::Beneath)?;
    let work = sys::openat2(tmpfs.as_fd(), Path::new("work"), libc::O_PATH, 0, Resolve::Beneath)?;
    let merged = sys::openat2(tmpfs.as_fd(), Path::new("merged"), libc::O_PATH, 0, Resolve::Beneath)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        sys::fd_path(lower.as_fd()).to_string_lossy(),
        sys::fd_path(upper.as_fd()).to_string_lossy(),
        sys::fd_path(work.as_fd()).to_string_lossy(),
    );
    mount_fs("overlay", merged.as_fd(), MsFlags::empty(), Some(&data)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{e} (is the rootfs directory on a filesystem overlayfs accepts as a lower layer?)"),
        )
    })?;
    sys::openat2(tmpfs.as_fd(), Path::new("merged"), libc::O_DIRECTORY | libc::O_RDONLY, 0, Resolve::Beneath)
}

/// Unpacks the tar in `file` at `path` inside `root` (created if missing,
/// resolved as if `root` were `/`).
pub fn place(root: std::os::fd::BorrowedFd<'_>, path: &Path, file: &std::fs::File) -> io::Result<()> {
    let at = super::mounts::resolve_in_root(root, path, super::mounts::Create::Dir)?;
    let dir = sys::openat2(at.as_fd(), Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, 0, Resolve::Beneath)?;
    let reader = tar::decompressed(Box::new(file.try_clone()?)).map_err(io::Error::other)?;
    tar::unpack(reader, dir.as_fd()).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    Ok(())
}
