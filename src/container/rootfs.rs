//! The job's root filesystem, built inside its own mount namespace so the
//! kernel takes it all down when the job dies, even after SIGKILL of the
//! runner: nothing of it is ever visible on the host.
//!
//! - a directory becomes the read-only lower layer of an overlay whose upper
//!   and work dirs live on a tmpfs: the job may write anywhere, the source is
//!   never touched;
//! - a tar is unpacked into that tmpfs.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use super::resolve::Create;
use super::spec::{Rootfs, TmpfsSizes};
use super::syscall::Syscall;
use crate::archive as tar;
use crate::sys::Resolve;

/// Builds the root on a fresh tmpfs of at most `size` bytes at `base` and
/// returns an fd of it (a mount point, as pivot_root wants).
pub fn build<S: Syscall>(s: &S, rootfs: &Rootfs, base: &Path, size: u64) -> io::Result<S::Fd> {
    let rel = base.strip_prefix("/").unwrap_or(base);
    let base_fd = s.open_at(&s.open_dir(Path::new("/"))?, rel, libc::O_PATH | libc::O_DIRECTORY, Resolve::Beneath)?;
    let options = format!("mode=755,{}", TmpfsSizes::option(size));
    s.mount_fs("tmpfs", &base_fd, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(&options))?;
    // The fd from before names the directory under the new tmpfs.
    let tmpfs = s.open_dir(base)?;
    match rootfs {
        Rootfs::Dir { tree, owner } => overlay(s, tree, *owner, &tmpfs),
        Rootfs::Tar { file, .. } => {
            s.fs_work(&tmpfs, "unpack the rootfs", |dir| {
                let reader = tar::decompressed(Box::new(file.try_clone()?)).map_err(io::Error::other)?;
                let stats = tar::unpack(reader, dir).map_err(io::Error::other)?;
                log::debug!("unpacked {} entries, {} bytes", stats.entries, stats.bytes);
                Ok(())
            })?;
            Ok(tmpfs)
        }
    }
}

/// overlay(lower = the directory, upper + work on the tmpfs) mounted at
/// `tmpfs/merged`. The layers are named by /proc/self/fd paths: the option
/// string cannot then be confused by ',' or ':' in a host path, and the
/// lower is the very directory the runner opened (its detached copy,
/// attached here at `tmpfs/lower`).
fn overlay<S: Syscall>(
    s: &S,
    lower_tree: &OwnedFd,
    (uid, gid, mode): (u32, u32, u32),
    tmpfs: &S::Fd,
) -> io::Result<S::Fd> {
    s.fs_work(tmpfs, "make lower, upper, work and merged", |tmpfs| {
        for name in ["lower", "upper", "work", "merged"] {
            nix::sys::stat::mkdirat(tmpfs, name, Mode::from_bits_truncate(0o755)).map_err(io::Error::from)?;
        }
        Ok(())
    })?;
    // The merged root shows the upper dir's owner and mode: copy the
    // source root's, or every image would get a root-owned 0755 `/`.
    let upper = s.open_at(tmpfs, Path::new("upper"), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::Beneath)?;
    s.fs_work(&upper, "give upper the source root's owner and mode", |upper| {
        nix::unistd::fchown(upper, Some(uid.into()), Some(gid.into())).map_err(io::Error::from)?;
        nix::sys::stat::fchmod(upper, Mode::from_bits_truncate(mode)).map_err(io::Error::from)
    })?;
    let lower_dir = s.open_at(tmpfs, Path::new("lower"), libc::O_PATH, Resolve::Beneath)?;
    s.attach(lower_tree.as_fd(), &lower_dir)?;
    // Reopen: the fd from before the attach names the directory under it.
    let lower = s.open_at(tmpfs, Path::new("lower"), libc::O_PATH, Resolve::Beneath)?;
    let work = s.open_at(tmpfs, Path::new("work"), libc::O_PATH, Resolve::Beneath)?;
    let merged = s.open_at(tmpfs, Path::new("merged"), libc::O_PATH, Resolve::Beneath)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        s.fd_path(&lower).to_string_lossy(),
        s.fd_path(&upper).to_string_lossy(),
        s.fd_path(&work).to_string_lossy(),
    );
    // nodev: a device node in the image, or one the job makes in its root,
    // never opens a device (the job's own nodes are binds in /dev).
    s.mount_fs("overlay", &merged, MsFlags::MS_NODEV, Some(&data)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{e} (is the rootfs directory on a filesystem overlayfs accepts as a lower layer?)"),
        )
    })?;
    s.open_at(tmpfs, Path::new("merged"), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::Beneath)
}

/// Unpacks the tar in `file` at `path` inside `root` (created if missing,
/// resolved as if `root` were `/`).
pub fn place<S: Syscall>(s: &S, root: &S::Fd, path: &Path, file: &File) -> io::Result<()> {
    let at = s.resolve_in_root(root, path, Create::Dir)?;
    let dir = s.open_at(&at, Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::Beneath)?;
    s.fs_work(&dir, "unpack a ware", |dir| {
        let reader = tar::decompressed(Box::new(file.try_clone()?)).map_err(io::Error::other)?;
        tar::unpack(reader, dir).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(())
    })
}
