//! Paths inside the job's root, resolved as if the root were `/`. Every
//! mount target inside the new root is found this way and mounted onto
//! through its fd, so a symlink in the image can never send a mount onto
//! the host (CVE-2021-30465, the runc symlink-exchange attack).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

use crate::sys::{self, Resolve};

/// What to create at a mount target that does not exist in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
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
