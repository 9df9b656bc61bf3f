//! The job's root filesystem, built inside its own mount namespace so the
//! kernel takes it all down when the job dies, even after SIGKILL of the
//! runner: nothing of it is ever visible on the host.
//!
//! - a directory becomes the read-only lower layer of an overlay whose upper
//!   and work dirs live on a tmpfs: the job may write anywhere, the source is
//!   never touched. `--rootfs` tars and formula wares come this way too,
//!   from their unpacked copies in the ware cache (`crate::ware_cache`);
//! - a tar is unpacked into that tmpfs (what the child still does with a
//!   spec that names a tar).
//!
//! Every overlay is mounted with `xino=on`: its layers are on different
//! filesystems (the cache's disk, the tmpfs), and without xino overlayfs
//! gives a directory an `st_ino` of its own while readdir reports the
//! lower layer's `d_ino`, so readdir and stat disagree (CPython's
//! `test_os` checks they agree, as they do on every disk filesystem).

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
        Rootfs::Dir { tree, owner } => {
            overlay_dirs(s, &tmpfs, "", *owner)?;
            let merged = s.open_at(&tmpfs, Path::new("merged"), libc::O_PATH, Resolve::Beneath)?;
            overlay(s, tree, &tmpfs, "", &merged)?;
            s.open_at(&tmpfs, Path::new("merged"), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::Beneath)
        }
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

/// `{prefix}lower`, `upper`, `work` (and `merged`, for the root, whose
/// prefix is empty) on the tmpfs. The upper dir gets the source root's owner and
/// mode, which the merged root shows: else every image would get a
/// root-owned 0755 `/`.
fn overlay_dirs<S: Syscall>(s: &S, tmpfs: &S::Fd, prefix: &str, (uid, gid, mode): (u32, u32, u32)) -> io::Result<()> {
    let names = ["lower", "upper", "work", "merged"].map(|n| format!("{prefix}{n}"));
    let made = if prefix.is_empty() { &names[..] } else { &names[..3] };
    s.fs_work(tmpfs, "make lower, upper, work and merged", |tmpfs| {
        for name in made {
            nix::sys::stat::mkdirat(tmpfs, name.as_str(), Mode::from_bits_truncate(0o755)).map_err(io::Error::from)?;
        }
        Ok(())
    })?;
    let upper = s.open_at(tmpfs, Path::new(&names[1]), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::Beneath)?;
    s.fs_work(&upper, "give upper the source root's owner and mode", |upper| {
        nix::unistd::fchown(upper, Some(uid.into()), Some(gid.into())).map_err(io::Error::from)?;
        nix::sys::stat::fchmod(upper, Mode::from_bits_truncate(mode)).map_err(io::Error::from)
    })
}

/// overlay(lower = the directory, upper + work = `{prefix}upper`,
/// `{prefix}work` on the tmpfs) mounted on `target`. The layers are named by
/// /proc/self/fd paths: the option string cannot then be confused by ','
/// or ':' in a host path, and the lower is the very directory the runner
/// opened (its detached copy, attached here at `{prefix}lower`).
fn overlay<S: Syscall>(s: &S, lower_tree: &OwnedFd, tmpfs: &S::Fd, prefix: &str, target: &S::Fd) -> io::Result<()> {
    let at = |name: &str| s.open_at(tmpfs, Path::new(&format!("{prefix}{name}")), libc::O_PATH, Resolve::Beneath);
    s.attach(lower_tree.as_fd(), &at("lower")?)?;
    // Reopen: the fd from before the attach names the directory under it.
    let (lower, upper, work) = (at("lower")?, at("upper")?, at("work")?);
    let data = format!(
        "lowerdir={},upperdir={},workdir={},xino=on",
        s.fd_path(&lower).to_string_lossy(),
        s.fd_path(&upper).to_string_lossy(),
        s.fd_path(&work).to_string_lossy(),
    );
    // nodev: a device node in the image, or one the job makes in its root,
    // never opens a device (the job's own nodes are binds in /dev).
    s.mount_fs("overlay", target, MsFlags::MS_NODEV, Some(&data)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{e} (is the rootfs directory on a filesystem overlayfs accepts as a lower layer?)"),
        )
    })
}

/// Places the `n`th ware at `path` inside `root` (created if missing,
/// resolved as if `root` were `/`): a cached tree becomes an overlay of its
/// own there (writable like the root, its layers on the root's tmpfs at
/// `mount_base`; what a lower ware had below `path` is hidden); a tar is
/// unpacked there.
pub fn place<S: Syscall>(
    s: &S,
    root: &S::Fd,
    mount_base: &Path,
    n: usize,
    path: &Path,
    ware: &Rootfs,
) -> io::Result<()> {
    let at = s.resolve_in_root(root, path, Create::Dir)?;
    match ware {
        Rootfs::Dir { tree, owner } => {
            let tmpfs = s.open_dir(mount_base)?;
            let prefix = format!("w{n}.");
            overlay_dirs(s, &tmpfs, &prefix, *owner)?;
            overlay(s, tree, &tmpfs, &prefix, &at)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        Rootfs::Tar { file, .. } => unpack_at(s, &at, path, file),
    }
}

/// Unpacks the tar in `file` into the directory `at` (`path` in the job).
fn unpack_at<S: Syscall>(s: &S, at: &S::Fd, path: &Path, file: &File) -> io::Result<()> {
    let dir = s.open_at(at, Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, Resolve::Beneath)?;
    s.fs_work(&dir, "unpack a ware", |dir| {
        let reader = tar::decompressed(Box::new(file.try_clone()?)).map_err(io::Error::other)?;
        tar::unpack(reader, dir).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(())
    })
}
