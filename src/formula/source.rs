//! Reading a tree to pack: a directory (walked fd by fd, never following a
//! symlink) or a tar (read with the `tar` crate). Both give the same list of
//! filtered entries, so a directory and a tar of it hash the same.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::error::WareError;
use super::filter::{Filters, Refused};
use super::tree::{Entry, Kind, display_path};
use super::ware_id::Digest;
use crate::archive::{clean, pax_time};
use crate::escape::{escaped, escaped_error};

/// Where a regular file's bytes are when the tree is written out.
#[derive(Clone, Debug)]
pub(crate) enum Content {
    /// Not a regular file.
    None,
    /// In the source directory; (dev, ino) tell if it was swapped meanwhile.
    Disk { dev: u64, ino: u64 },
    /// Copied out of a source tar into the spool file, already hashed.
    Spool { offset: u64, digest: Digest },
    /// Hashed while reading a tar that is only hashed, not stored.
    Hashed(Digest),
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub entry: Entry,
    pub content: Content,
}

/// Chunk size for reading file data: large reads keep syscalls off the
/// profile of a pack, which should be bound by SHA-256.
pub(crate) const CHUNK: usize = 1 << 20;

// ---------------------------------------------------------------- directory

/// Walks the directory `root`, applying `filters`; returns the entries in
/// path order. Nothing is followed: every name is looked at with
/// AT_SYMLINK_NOFOLLOW and directories are opened with O_NOFOLLOW relative
/// to their parent's fd.
pub(crate) fn walk_dir(root: &OwnedFd, filters: &Filters) -> Result<Vec<Node>, WareError> {
    let st = nix::sys::stat::fstat(root.as_fd()).map_err(|e| source_err(b"", e.into()))?;
    let mut nodes = Vec::new();
    let mut root_entry = node_from_stat(Vec::new(), &st, None)?;
    if !matches!(root_entry.entry.kind, Kind::Dir) {
        return Err(source_err(b"", io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    let mut refused = Refused::default();
    filters.apply(&mut root_entry.entry, &mut refused);
    nodes.push(root_entry);
    let fd = root.try_clone().map_err(|e| source_err(b"", e))?;
    visit(fd, &[], filters, &mut refused, &mut nodes)?;
    refused.check()?;
    note_owners(&refused);
    // Byte order of whole paths, which is not the order of a depth-first
    // walk ("a.txt" < "a/b"); see docs/ware-hash.md.
    nodes.sort_unstable_by(|a, b| a.entry.path.cmp(&b.entry.path));
    Ok(nodes)
}

fn visit(
    dirfd: OwnedFd,
    dir: &[u8],
    filters: &Filters,
    refused: &mut Refused,
    nodes: &mut Vec<Node>,
) -> Result<(), WareError> {
    let mut d = Dir::from_fd(dirfd).map_err(|e| source_err(dir, e.into()))?;
    let mut names: Vec<CString> = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| source_err(dir, e.into()))?;
        let name = ent.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    let mut subdirs = Vec::new();
    for name in names {
        let mut path = dir.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        let st = nix::sys::stat::fstatat(d.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| source_err(&path, e.into()))?;
        let mut node = node_from_stat(path, &st, Some((d.as_fd(), &name)))?;
        if !filters.apply(&mut node.entry, refused) {
            continue;
        }
        if matches!(node.entry.kind, Kind::Dir) {
            subdirs.push((name, node.entry.path.clone()));
        }
        nodes.push(node);
    }
    for (name, path) in subdirs {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(d.as_fd(), name.as_c_str(), flags, Mode::empty())
            .map_err(|e| source_err(&path, e.into()))?;
        visit(fd, &path, filters, refused, nodes)?;
    }
    Ok(())
}

/// Flattened owners are no error, but a root filesystem packed that way
/// would not work (every file its users' own): say how to keep them.
fn note_owners(refused: &Refused) {
    if refused.owners_changed > 0 {
        log::info!(
            "{} entries were given the uid filter's owner; --filter uid=keep --filter gid=keep \
             (or --filter preset=rootfs) keeps their own",
            refused.owners_changed
        );
    }
}

fn node_from_stat(path: Vec<u8>, st: &FileStat, at: Option<(BorrowedFd<'_>, &CString)>) -> Result<Node, WareError> {
    let mut content = Content::None;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => {
            content = Content::Disk { dev: st.st_dev, ino: st.st_ino };
            Kind::File { size: st.st_size as u64 }
        }
        libc::S_IFLNK => {
            let (dirfd, name) = at.ok_or_else(|| source_err(&path, io::Error::from_raw_os_error(libc::ENOTDIR)))?;
            let target = nix::fcntl::readlinkat(dirfd, name.as_c_str()).map_err(|e| source_err(&path, e.into()))?;
            Kind::Symlink { target: target.into_vec() }
        }
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR => Kind::CharDev { major: libc::major(st.st_rdev), minor: libc::minor(st.st_rdev) },
        libc::S_IFBLK => Kind::BlockDev { major: libc::major(st.st_rdev), minor: libc::minor(st.st_rdev) },
        _ => {
            return Err(WareError::Socket { path: display_path(&path) });
        }
    };
    Ok(Node {
        entry: Entry {
            path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            // st_mtime is already rounded down (st_mtime_nsec is >= 0).
            mtime: st.st_mtime,
        },
        content,
    })
}

fn source_err(path: &[u8], source: io::Error) -> WareError {
    WareError::Source {
        path: Path::new(OsStr::from_bytes(if path.is_empty() { b"." } else { path })).to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------- tar

fn bad_tar(entry: &str, problem: impl std::fmt::Display) -> WareError {
    WareError::SourceTar {
        problem: if entry.is_empty() { problem.to_string() } else { format!("entry `{entry}` {problem}") },
    }
}

/// Reads every entry of a tar. Regular-file data is hashed and, with a
/// `spool`, appended to it for writing out later (a tar's order is not
/// ours, so data must wait until every entry is known). A later entry of the
/// same name replaces an earlier one, as when unpacking; directories that the
/// tar leaves out are added as 0755, 0:0, mtime 0, before filters.
pub(crate) fn scan_tar(
    reader: impl Read,
    mut spool: Option<&mut File>,
    filters: &Filters,
) -> Result<Vec<Node>, WareError> {
    let mut archive = tar::Archive::new(reader);
    let mut tree: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    let mut spooled = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // xattrs are not part of a ware (docs/ware-hash.md): left out, but said.
    let mut dropped_xattrs: (u64, Option<String>) = (0, None);
    for entry in archive.entries().map_err(|e| bad_tar("", escaped_error(&e)))? {
        let mut entry = entry.map_err(|e| bad_tar("", escaped_error(&e)))?;
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let name = escaped(&raw);
        let path = clean(&raw).map_err(|problem| bad_tar(&name, problem))?;
        if kind == EntryType::Link {
            // A hardlink is hashed as a copy of what it links to, with that
            // entry's metadata (they share an inode once unpacked); its own
            // header fields are not looked at, as tar does not fill them.
            let raw = entry.link_name_bytes().ok_or_else(|| bad_tar(&name, "is a hardlink without a target"))?;
            let target = clean(&raw).map_err(|p| bad_tar(&name, format!("links to a path that {p}")))?;
            let node = tree
                .get(&target)
                .filter(|n| !matches!(n.entry.kind, Kind::Dir))
                .ok_or_else(|| bad_tar(&name, "is a hardlink to something that is not an earlier file of the tar"))?;
            let mut node = node.clone();
            node.entry.path = path.clone();
            tree.insert(path, node);
            continue;
        }
        let field = |e: io::Error| bad_tar(&name, escaped_error(&e));
        let mode = header.mode().map_err(field)? & 0o7777;
        let uid = id32(header.uid().map_err(field)?, &name)?;
        let gid = id32(header.gid().map_err(field)?, &name)?;
        let mut mtime =
            i64::try_from(header.mtime().map_err(field)?).map_err(|_| bad_tar(&name, "has an mtime out of range"))?;
        let device = |header: &tar::Header| -> Result<(u32, u32), WareError> {
            let major = header.device_major().map_err(field)?.unwrap_or(0);
            let minor = header.device_minor().map_err(field)?.unwrap_or(0);
            Ok((major, minor))
        };
        let (major, minor) = match kind {
            EntryType::Char | EntryType::Block => device(header)?,
            _ => (0, 0),
        };
        if let Some(records) = entry.pax_extensions().map_err(|e| bad_tar(&name, escaped_error(&e)))? {
            for record in records {
                let record = record.map_err(|e| bad_tar(&name, escaped_error(&e)))?;
                if let Some(attr) = record.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    dropped_xattrs.0 += 1;
                    dropped_xattrs.1.get_or_insert_with(|| format!("{} on `{name}`", escaped(attr)));
                }
                if record.key_bytes() == b"mtime" {
                    // TimeSpec seconds are already rounded down.
                    mtime =
                        pax_time(record.value_bytes()).ok_or_else(|| bad_tar(&name, "has a bad PAX mtime"))?.tv_sec();
                }
            }
        }
        let mut content = Content::None;
        let kind = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut sha = Sha256::new();
                let mut size = 0u64;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(bad_tar(&name, escaped_error(&e))),
                    };
                    sha.update(&buf[..n]);
                    if let Some(spool) = spool.as_deref_mut() {
                        spool.write_all(&buf[..n]).map_err(|e| WareError::Source {
                            path: "(spool file in the warehouse)".into(),
                            source: e,
                        })?;
                    }
                    size += n as u64;
                }
                let digest = Digest(sha.finalize().into());
                content = if spool.is_some() {
                    let offset = spooled;
                    spooled += size;
                    Content::Spool { offset, digest }
                } else {
                    Content::Hashed(digest)
                };
                Kind::File { size }
            }
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink {
                target: entry
                    .link_name_bytes()
                    .ok_or_else(|| bad_tar(&name, "is a symlink without a target"))?
                    .into_owned(),
            },
            EntryType::Fifo => Kind::Fifo,
            EntryType::Char => Kind::CharDev { major, minor },
            EntryType::Block => Kind::BlockDev { major, minor },
            other => {
                return Err(bad_tar(&name, format!("has unsupported type {:?}", char::from(other.as_byte()))));
            }
        };
        if path.is_empty() && !matches!(kind, Kind::Dir) {
            return Err(bad_tar(&name, "names the root directory but is not a directory"));
        }
        let entry = Entry { path: path.clone(), kind, mode, uid, gid, mtime };
        tree.insert(path, Node { entry, content });
    }
    if let (n, Some(example)) = dropped_xattrs {
        log::warn!("left out {n} xattrs of the tar (e.g. {example}): a ware holds no xattrs");
    }
    add_parents(&mut tree)?;
    let mut nodes = Vec::with_capacity(tree.len());
    let mut refused = Refused::default();
    for (_, mut node) in tree {
        if filters.apply(&mut node.entry, &mut refused) {
            nodes.push(node);
        }
    }
    refused.check()?;
    note_owners(&refused);
    Ok(nodes)
}

/// Adds the directories a tar implies but does not list, and refuses an
/// entry below a non-directory (e.g. `link/file` after `link -> /etc`: an
/// unpack would write through the symlink).
fn add_parents(tree: &mut BTreeMap<Vec<u8>, Node>) -> Result<(), WareError> {
    let mut missing = Vec::new();
    for path in tree.keys() {
        let mut cur: &[u8] = path;
        while !cur.is_empty() {
            let parent = match cur.iter().rposition(|&b| b == b'/') {
                Some(i) => &cur[..i],
                None => &[][..],
            };
            match tree.get(parent) {
                Some(n) if matches!(n.entry.kind, Kind::Dir) => break,
                Some(_) => {
                    return Err(bad_tar(
                        &display_path(path),
                        format!("is below `{}`, which is not a directory", display_path(parent)),
                    ));
                }
                None => missing.push(parent.to_vec()),
            }
            cur = parent;
        }
    }
    for path in missing {
        tree.entry(path.clone()).or_insert(Node {
            entry: Entry { path, kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0 },
            content: Content::None,
        });
    }
    Ok(())
}

fn id32(value: u64, name: &str) -> Result<u32, WareError> {
    u32::try_from(value).map_err(|_| bad_tar(name, format!("has owner id {value}, which does not fit 32 bits")))
}
