//! Safe, faithful unpacking of rootfs tars.
//!
//! A rootfs tar is user input: a hostile one may try to write outside the
//! target directory with `..` or absolute entry names, or by first planting
//! a symlink (`link -> /etc`) and then writing through it (`link/passwd`).
//! Every entry is therefore created with `*at` calls relative to a parent
//! directory resolved with `openat2(RESOLVE_BENEATH)`, which fails with
//! EXDEV instead of following anything out of the root. Any such attempt
//! fails the whole unpack: a half-unpacked rootfs with holes is worse than
//! none.
//!
//! Faithful means: modes (setuid/setgid/sticky too), numeric ownership,
//! mtimes, symlinks verbatim, hardlinks, fifos and `SCHILY.xattr.*` PAX
//! records are kept, except `security.*` and `trusted.*` xattrs, which are
//! never restored from any tar (`restorable`). Device nodes are skipped
//! (the container gets its own /dev); global PAX headers carry no file and
//! are ignored.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use super::error::TarError;
use super::read::{clean, pax_time};
use crate::escape::{escaped, escaped_error};
use crate::sys::{self, Resolve};

/// The size of the reads of file data. Larger than the buffer of a reader
/// made by `decompressed`, so that a `BufReader` passes them straight to
/// read(2) instead of copying every byte out of its own buffer.
pub const DATA_CHUNK: usize = 1 << 20;

/// What an unpack did, for the job log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries unpacked or skipped (global PAX headers not counted).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    /// Character and block devices that were not created.
    pub skipped_devices: u64,
    /// `security.*` and `trusted.*` xattrs that were not restored.
    pub skipped_xattrs: u64,
}

/// Unpacks every entry of the tar below `root` (an O_DIRECTORY fd, normally
/// an empty directory on a tmpfs). Never writes outside `root`: an entry that
/// would (by its name, or through a symlink or hardlink) fails the whole
/// unpack. Must run as root to keep ownership, setid bits and xattrs.
pub fn unpack(reader: impl Read, root: BorrowedFd<'_>) -> Result<UnpackStats, TarError> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacker =
        Unpacker { root, stats: UnpackStats::default(), dir_times: BTreeMap::new(), buf: vec![0u8; DATA_CHUNK] };
    for entry in archive.entries().map_err(TarError::Read)? {
        let mut entry = entry.map_err(TarError::Read)?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()
}

/// An entry's metadata, read from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
    /// xattrs of the entry that `restorable` refused.
    skipped_xattrs: u64,
}

/// The state of one unpack.
struct Unpacker<'r> {
    root: BorrowedFd<'r>,
    stats: UnpackStats,
    /// Directory mtimes, keyed by cleaned path ("" is the root). Set at the
    /// end, because creating a child changes its parent's mtime; a BTreeMap
    /// walked in reverse visits children ("a/b") before parents ("a") and
    /// keeps only the last entry's time when a directory appears twice.
    dir_times: BTreeMap<Vec<u8>, TimeSpec>,
    /// File data passes through here, one buffer for the whole unpack.
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), TarError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = escaped(&raw);
        let path = clean(&raw).map_err(|problem| unsafe_path(&name, problem))?;
        let meta = read_meta(entry, &name)?;
        self.stats.entries += 1;
        self.stats.skipped_xattrs += meta.skipped_xattrs;
        if path.is_empty() {
            return match kind {
                EntryType::Directory => self.root_dir(&meta, &name),
                _ => Err(unsafe_path(&name, "names the root directory but is not a directory")),
            };
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.file(entry, &path, &meta, &name),
            EntryType::Directory => self.dir(&path, &meta, &name),
            EntryType::Symlink => self.symlink(entry, &path, &meta, &name),
            EntryType::Link => self.hardlink(entry, &path, &name),
            EntryType::Fifo => self.fifo(&path, &meta, &name),
            EntryType::Char | EntryType::Block => {
                log::debug!("skipping device node {name} from the rootfs tar");
                self.stats.skipped_devices += 1;
                Ok(())
            }
            other => Err(TarError::UnsupportedType { entry: name, kind: char::from(other.as_byte()) }),
        }
    }

    fn file<R: Read>(&mut self, data: &mut R, path: &[u8], meta: &Meta, name: &str) -> Result<(), TarError> {
        let (parent, leaf) = self.prepare(path, false, name)?;
        // O_EXCL|O_NOFOLLOW: after `prepare` removed any earlier entry, the
        // name must be fresh; a symlink planted there is never followed.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = sys::openat2(parent.as_fd(), as_path(leaf), flags, 0o600, Resolve::Beneath)
            .map_err(|e| write_err(name, "create the file", e))?;
        let mut file = File::from(fd);
        self.stats.bytes += copy_data(data, &mut file, &mut self.buf, name)?;
        apply_meta(file.as_fd(), meta, true, name)
    }

    fn dir(&mut self, path: &[u8], meta: &Meta, name: &str) -> Result<(), TarError> {
        let (parent, leaf) = self.prepare(path, true, name)?;
        // A directory entry over an existing directory only updates its
        // metadata, so EEXIST here is that case (`prepare` kept it).
        match stat::mkdirat(parent.as_fd(), leaf, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(write_err(name, "create the directory", e.into())),
        }
        let fd = open_dir(parent.as_fd(), as_path(leaf)).map_err(|e| write_err(name, "open the directory", e))?;
        apply_meta(fd.as_fd(), meta, false, name)?;
        self.dir_times.insert(path.to_vec(), meta.mtime);
        Ok(())
    }

    /// `./` in the tar: its metadata belongs to the root directory itself.
    fn root_dir(&mut self, meta: &Meta, name: &str) -> Result<(), TarError> {
        let fd = open_dir(self.root, Path::new(".")).map_err(|e| write_err(name, "open the root directory", e))?;
        apply_meta(fd.as_fd(), meta, false, name)?;
        self.dir_times.insert(Vec::new(), meta.mtime);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        path: &[u8],
        meta: &Meta,
        name: &str,
    ) -> Result<(), TarError> {
        // The target is only data (`etc/mtab -> /proc/mounts` is normal): it
        // is kept verbatim and never resolved here.
        let target = entry.link_name_bytes().ok_or_else(|| corrupt(name, "symlink without a target"))?;
        let (parent, leaf) = self.prepare(path, false, name)?;
        unistd::symlinkat(&*target, parent.as_fd(), leaf)
            .map_err(|e| write_err(name, "create the symlink", e.into()))?;
        // AT_SYMLINK_NOFOLLOW: change the link itself, not what it points to.
        unistd::fchownat(
            parent.as_fd(),
            leaf,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| write_err(name, "set the owner", e.into()))?;
        stat::utimensat(parent.as_fd(), leaf, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| write_err(name, "set the mtime", e.into()))?;
        if !meta.xattrs.is_empty() {
            log::debug!("not setting xattrs on symlink {name}: Linux allows none on symlinks");
        }
        Ok(())
    }

    fn hardlink<R: Read>(&mut self, entry: &tar::Entry<'_, R>, path: &[u8], name: &str) -> Result<(), TarError> {
        let raw = entry.link_name_bytes().ok_or_else(|| corrupt(name, "hardlink without a target"))?;
        // Same rules as entry names: a hardlink to `../x` or `/etc/shadow`
        // would expose a host file inside the container.
        let target = clean(&raw)
            .map_err(|problem| unsafe_path(name, &format!("is a hardlink to `{}`, which {problem}", escaped(&raw))))?;
        if target.is_empty() {
            return Err(unsafe_path(name, "is a hardlink to the root directory"));
        }
        if target == path {
            return Ok(());
        }
        let (tparent, tleaf) = split(&target);
        let tparent = self.resolve(tparent, false, name)?;
        let (parent, leaf) = self.prepare(path, false, name)?;
        // Flags 0 (no AT_SYMLINK_FOLLOW): a target that is a symlink is
        // linked itself, never followed out of the root.
        unistd::linkat(tparent.as_fd(), tleaf, parent.as_fd(), leaf, AtFlags::empty())
            .map_err(|e| write_err(name, "create the hardlink", e.into()))
    }

    fn fifo(&mut self, path: &[u8], meta: &Meta, name: &str) -> Result<(), TarError> {
        let (parent, leaf) = self.prepare(path, false, name)?;
        stat::mknodat(parent.as_fd(), leaf, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
            .map_err(|e| write_err(name, "create the fifo", e.into()))?;
        // O_NONBLOCK: opening a fifo for reading would otherwise wait for a
        // writer forever.
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW;
        let fd = sys::openat2(parent.as_fd(), as_path(leaf), flags, 0, Resolve::Beneath)
            .map_err(|e| write_err(name, "open the fifo", e))?;
        apply_meta(fd.as_fd(), meta, true, name)
    }

    /// Resolves the parent of `path` (creating missing directories) and
    /// clears the final name for a new entry: an earlier non-directory is
    /// removed, an earlier directory is kept if `keep_dir` and otherwise
    /// removed (only possible while empty).
    fn prepare<'p>(&self, path: &'p [u8], keep_dir: bool, name: &str) -> Result<(OwnedFd, &'p [u8]), TarError> {
        let (parent, leaf) = split(path);
        let parent = self.resolve(parent, true, name)?;
        remove_existing(parent.as_fd(), leaf, keep_dir)
            .map_err(|e| write_err(name, "replace an earlier entry of the same name", e))?;
        Ok((parent, leaf))
    }

    /// Opens the directory `dir` (a cleaned path, "" for the root) with
    /// RESOLVE_BENEATH: any symlink on the way that leads out of the root
    /// (absolute, or `..` past the top) makes the kernel fail with EXDEV.
    fn resolve(&self, dir: &[u8], create: bool, name: &str) -> Result<OwnedFd, TarError> {
        match open_path(self.root, dir) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => self.create_dirs(dir),
            other => other,
        }
        .map_err(|e| resolve_err(name, e))
    }

    /// Walks `dir` from the root, creating missing directories (0755, owned
    /// by us) as some tars omit their parent directory entries.
    fn create_dirs(&self, dir: &[u8]) -> io::Result<OwnedFd> {
        let mut current = open_path(self.root, b"")?;
        let mut end = 0;
        for component in dir.split(|&b| b == b'/') {
            end += component.len();
            // Resolved from the root each time, so that symlinks using `..`
            // are judged against the root, not against the current directory.
            current = match open_path(self.root, &dir[..end]) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => make_implicit_dir(current.as_fd(), component)?,
                other => other?,
            };
            end += 1;
        }
        Ok(current)
    }

    /// Sets directory mtimes, children before parents, once nothing will be
    /// created in them any more.
    fn finish(self) -> Result<UnpackStats, TarError> {
        for (path, mtime) in self.dir_times.iter().rev() {
            let fd = match open_dir(self.root, as_dir_path(path)) {
                Ok(fd) => fd,
                // Replaced by a later non-directory entry: nothing to date.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => {
                    continue;
                }
                Err(e) => return Err(write_err(&escaped(path), "open the directory", e)),
            };
            stat::futimens(fd.as_fd(), mtime, mtime)
                .map_err(|e| write_err(&escaped(path), "set the mtime", e.into()))?;
        }
        Ok(self.stats)
    }
}

/// Ownership, then mode, then xattrs, then times, in that order: chown(2)
/// clears setuid/setgid bits and the security.capability xattr, and writing
/// data or xattrs would not touch the mtime, but chown must not undo the rest.
fn apply_meta(fd: BorrowedFd<'_>, meta: &Meta, set_times: bool, name: &str) -> Result<(), TarError> {
    unistd::fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
        .map_err(|e| write_err(name, "set the owner", e.into()))?;
    stat::fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))
        .map_err(|e| write_err(name, "set the mode", e.into()))?;
    for (key, value) in &meta.xattrs {
        match sys::fsetxattr(fd, key, value) {
            Ok(()) => {}
            // The filesystem cannot store this namespace (e.g. security.selinux
            // on a host without SELinux): nothing we can do but say so.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                let key = escaped(key.to_bytes());
                log::warn!("xattr {key} of {name} not kept: the filesystem does not support it");
            }
            Err(e) => return Err(write_err(name, "set an xattr", e)),
        }
    }
    if set_times {
        stat::futimens(fd, &meta.mtime, &meta.mtime).map_err(|e| write_err(name, "set the mtime", e.into()))?;
    }
    Ok(())
}

/// Copies an entry's data, telling a truncated tar apart from a full disk.
fn copy_data(data: &mut dyn Read, file: &mut File, buf: &mut [u8], name: &str) -> Result<u64, TarError> {
    let mut total = 0u64;
    loop {
        let n = match data.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(name, &escaped_error(&e))),
        };
        file.write_all(&buf[..n]).map_err(|e| write_err(name, "write the file data", e))?;
        total += n as u64;
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, TarError> {
    let header = entry.header();
    let field = |e: io::Error| corrupt(name, &escaped_error(&e));
    let mode = header.mode().map_err(field)?;
    // PAX uid/gid records were already folded into the header by the tar crate.
    let uid = id(header.uid().map_err(field)?, name)?;
    let gid = id(header.gid().map_err(field)?, name)?;
    let secs = i64::try_from(header.mtime().map_err(field)?).map_err(|_| corrupt(name, "mtime out of range"))?;
    let mut meta = Meta { mode, uid, gid, mtime: TimeSpec::new(secs, 0), xattrs: Vec::new(), skipped_xattrs: 0 };
    let Some(records) = entry.pax_extensions().map_err(|e| corrupt(name, &escaped_error(&e)))? else {
        return Ok(meta);
    };
    for record in records {
        // The tar crate splits records on newlines; a binary xattr value that
        // contains one is refused here rather than silently dropped.
        let record =
            record.map_err(|e| corrupt(name, &format!("{} (maybe a binary xattr value)", escaped_error(&e))))?;
        let key = record.key_bytes();
        if key == b"mtime" {
            meta.mtime = pax_time(record.value_bytes()).ok_or_else(|| corrupt(name, "bad PAX mtime"))?;
        } else if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
            if !restorable(attr) {
                log::debug!("not restoring xattr {} of {name}", escaped(attr));
                meta.skipped_xattrs += 1;
                continue;
            }
            let attr = CString::new(attr).map_err(|_| corrupt(name, "NUL byte in an xattr name"))?;
            meta.xattrs.push((attr, record.value_bytes().to_vec()));
        }
    }
    Ok(meta)
}

/// Whether an xattr from a tar may be set. Never `security.*`: a
/// `security.capability` gives a binary privileges for whoever runs it
/// (cap_setuid on an unpacked binary makes any user who runs it root), and SELinux, Smack, AppArmor, IMA and EVM labels are the host's
/// policy, not the tar's. Never `trusted.*`: only CAP_SYS_ADMIN sees them,
/// and overlayfs steers lookups by them (`trusted.overlay.redirect`,
/// `opaque`, `metacopy`). One rule for every tar: a ware is unpacked by the
/// same code as a `--rootfs` tar, and a job gets nothing from file
/// capabilities anyway (no_new_privs makes exec ignore them).
fn restorable(attr: &[u8]) -> bool {
    !(attr.starts_with(b"security.") || attr.starts_with(b"trusted."))
}

fn id(value: u64, name: &str) -> Result<u32, TarError> {
    u32::try_from(value).map_err(|_| corrupt(name, &format!("owner id {value} does not fit 32 bits")))
}

/// Splits a cleaned, non-empty path into parent ("" for the root) and name.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Removes what an earlier entry left at `leaf`, without following it.
fn remove_existing(parent: BorrowedFd<'_>, leaf: &[u8], keep_dir: bool) -> io::Result<()> {
    let st = match stat::fstatat(parent, leaf, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let result = match (is_dir, keep_dir) {
        (true, true) => Ok(()),
        (true, false) => unistd::unlinkat(parent, leaf, UnlinkatFlags::RemoveDir),
        (false, _) => unistd::unlinkat(parent, leaf, UnlinkatFlags::NoRemoveDir),
    };
    result.map_err(io::Error::from)
}

/// A directory some entry needs but the tar never listed.
fn make_implicit_dir(parent: BorrowedFd<'_>, component: &[u8]) -> io::Result<OwnedFd> {
    stat::mkdirat(parent, component, Mode::from_bits_truncate(0o755))?;
    let fd = open_dir(parent, as_path(component))?;
    // Explicitly, so the result does not depend on the runner's umask.
    stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o755))?;
    Ok(fd)
}

/// An O_PATH handle on a directory below the root, for use as an *at base.
fn open_path(root: BorrowedFd<'_>, dir: &[u8]) -> io::Result<OwnedFd> {
    sys::openat2(root, as_dir_path(dir), libc::O_PATH | libc::O_DIRECTORY, 0, Resolve::Beneath)
}

/// A readable directory fd (fchmod, fsetxattr and futimens refuse O_PATH).
/// O_NOFOLLOW: the final component must be the directory itself.
fn open_dir(base: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    sys::openat2(base, path, flags, 0, Resolve::Beneath)
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn as_dir_path(bytes: &[u8]) -> &Path {
    if bytes.is_empty() { Path::new(".") } else { as_path(bytes) }
}

fn unsafe_path(name: &str, problem: &str) -> TarError {
    TarError::UnsafePath { entry: name.to_string(), problem: problem.to_string() }
}

fn corrupt(name: &str, problem: &str) -> TarError {
    TarError::Corrupt { entry: name.to_string(), problem: problem.to_string() }
}

fn write_err(name: &str, action: &'static str, source: io::Error) -> TarError {
    TarError::Write { entry: name.to_string(), action, source }
}

/// EXDEV is RESOLVE_BENEATH refusing an escape; ELOOP is a magic link (or a
/// symlink loop, which a rootfs has no business containing either).
fn resolve_err(name: &str, source: io::Error) -> TarError {
    match source.raw_os_error() {
        Some(libc::EXDEV | libc::ELOOP) => TarError::Escape { entry: name.to_string(), source },
        _ => write_err(name, "open the parent directory", source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_parent_and_name() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn messages_are_one_line_and_name_the_entry() {
        let err = unsafe_path(&escaped(b"a\n/../../evil"), "contains a `..` component");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("a\\n/../../evil"), "{msg}");
    }
}
