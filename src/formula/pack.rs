//! Turning a source (directory or tar) into a hash and, optionally, a
//! normalized tar: one pass over the entries in manifest order.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::error::WareError;
use super::filter::Filters;
use super::normtar::{TarOut, unstorable};
use super::source::{CHUNK, Content, Node, scan_tar, walk_dir};
use super::tree::{Kind, TreeHasher, display_path};
use super::ware_id::{Digest, WareId};
use crate::archive::decompressed;
use crate::sys::{self, Resolve};

/// Where regular-file data comes from while writing.
pub(crate) enum Data {
    /// The source directory (an O_DIRECTORY fd).
    Disk(OwnedFd),
    /// The spool a source tar was copied into.
    Spool(File),
    /// Nothing: every file was hashed while scanning (a tar that is only
    /// hashed, not stored).
    Hashed,
}

/// A source opened for packing: the root of the walk, or a tar stream.
pub(crate) enum Source {
    Dir(OwnedFd),
    Tar(Box<dyn Read>),
}

impl Source {
    /// Opens `path`: a directory, or a plain or gzip tar; `-` is a tar on
    /// stdin. The path itself may be a symlink (the user named it); nothing
    /// below it is followed.
    pub fn open(path: &Path) -> Result<Source, WareError> {
        if path.as_os_str().as_bytes() == b"-" {
            return Ok(Source::Tar(Box::new(io::stdin())));
        }
        let err = |source| WareError::Source { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if meta.is_dir() { Ok(Source::Dir(OwnedFd::from(file))) } else { Ok(Source::Tar(Box::new(file))) }
    }

    /// Reads and filters the entries; a tar's file data goes to `spool`.
    pub fn scan(self, filters: &Filters, spool: Option<File>) -> Result<(Vec<Node>, Data), WareError> {
        match self {
            Source::Dir(fd) => {
                let nodes = walk_dir(&fd, filters)?;
                Ok((nodes, Data::Disk(fd)))
            }
            Source::Tar(reader) => {
                let reader = decompressed(reader).map_err(|e| WareError::SourceTar { problem: e.to_string() })?;
                match spool {
                    Some(mut spool) => {
                        let nodes = scan_tar(reader, Some(&mut spool), filters)?;
                        Ok((nodes, Data::Spool(spool)))
                    }
                    None => Ok((scan_tar(reader, None, filters)?, Data::Hashed)),
                }
            }
        }
    }
}

/// Hashes the entries in order and, given `out`, writes the normalized tar.
/// Returns the ware id and, if asked, the manifest.
pub(crate) fn emit<W: Write>(
    nodes: &[Node],
    data: &mut Data,
    mut out: Option<&mut TarOut<W>>,
    keep_manifest: bool,
) -> Result<(WareId, Option<Vec<u8>>), WareError> {
    let mut hasher = TreeHasher::new(keep_manifest);
    let mut buf = Vec::new();
    let write_err = |e: io::Error| WareError::Warehouse {
        dir: "(the ware being written)".into(),
        action: "write the ware",
        source: e,
    };
    for node in nodes {
        let entry = &node.entry;
        if let Some(problem) = unstorable(entry) {
            return Err(WareError::Unstorable { path: entry.display_path(), problem });
        }
        if let Some(out) = out.as_deref_mut() {
            out.header(entry).map_err(write_err)?;
        }
        let Kind::File { size } = entry.kind else {
            hasher.add(entry, None);
            continue;
        };
        let digest = match (&node.content, &mut *data) {
            (Content::Disk { dev, ino }, Data::Disk(root)) => {
                if buf.is_empty() {
                    buf = vec![0u8; CHUNK];
                }
                let path = Path::new(std::ffi::OsStr::from_bytes(&entry.path));
                let fd = sys::openat2(root.as_fd(), path, libc::O_RDONLY | libc::O_NOFOLLOW, 0, Resolve::Beneath)
                    .map_err(|e| WareError::Source { path: path.to_path_buf(), source: e })?;
                let mut file = File::from(fd);
                let st = nix::sys::stat::fstat(file.as_fd())
                    .map_err(|e| WareError::Source { path: path.to_path_buf(), source: e.into() })?;
                if (st.st_dev, st.st_ino) != (*dev, *ino) {
                    return Err(changed(entry, "replaced by another file"));
                }
                copy_hashing(&mut file, size, &mut buf, out.as_deref_mut(), entry)?
            }
            (Content::Spool { offset, digest }, Data::Spool(spool)) => {
                if let Some(out) = out.as_deref_mut() {
                    if buf.is_empty() {
                        buf = vec![0u8; CHUNK];
                    }
                    spool.seek(SeekFrom::Start(*offset)).map_err(write_err)?;
                    let mut left = size;
                    while left > 0 {
                        let n = (left.min(buf.len() as u64)) as usize;
                        spool.read_exact(&mut buf[..n]).map_err(write_err)?;
                        out.data(&buf[..n]).map_err(write_err)?;
                        left -= n as u64;
                    }
                    out.pad(size).map_err(write_err)?;
                }
                *digest
            }
            (Content::Hashed(digest), Data::Hashed) if out.is_none() => *digest,
            // Sources and data always come in the pairs above; anything
            // else is a bug of ours, reported rather than aborting the run.
            _ => return Err(write_err(io::Error::other("internal error: a file's content does not match its source"))),
        };
        hasher.add(entry, Some(&digest));
    }
    Ok(hasher.finish())
}

/// Copies exactly `size` bytes of `file` into `out` while hashing them.
fn copy_hashing<W: Write>(
    file: &mut File,
    size: u64,
    buf: &mut [u8],
    mut out: Option<&mut TarOut<W>>,
    entry: &super::tree::Entry,
) -> Result<Digest, WareError> {
    let read_err = |e: io::Error| WareError::Source { path: display_path(&entry.path).into(), source: e };
    let write_err = |e: io::Error| WareError::Warehouse {
        dir: "(the ware being written)".into(),
        action: "write the ware",
        source: e,
    };
    let mut sha = Sha256::new();
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(changed(entry, "it shrank")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        sha.update(&buf[..n]);
        if let Some(out) = out.as_deref_mut() {
            out.data(&buf[..n]).map_err(write_err)?;
        }
        left -= n as u64;
    }
    // The header already promised `size` bytes: a file that grew since it
    // was listed would make the tar lie.
    if file.read(&mut buf[..1]).map_err(read_err)? != 0 {
        return Err(changed(entry, "it grew"));
    }
    if let Some(out) = out {
        out.pad(size).map_err(write_err)?;
    }
    Ok(Digest(sha.finalize().into()))
}

fn changed(entry: &super::tree::Entry, what: &'static str) -> WareError {
    WareError::Changed { path: entry.display_path(), what }
}

/// The ware id `path` (a directory or a tar) would get with `filters`,
/// without storing anything; with its manifest if `keep_manifest`.
pub fn hash_path(path: &Path, filters: &Filters, keep_manifest: bool) -> Result<(WareId, Option<Vec<u8>>), WareError> {
    let (nodes, mut data) = Source::open(path)?.scan(filters, None)?;
    emit::<io::Sink>(&nodes, &mut data, None, keep_manifest)
}
