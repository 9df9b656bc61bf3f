//! The normalized file tree a ware is, and its canonical encoding: the
//! *manifest*, whose SHA-256 is the ware hash. The exact format is in
//! docs/ware-hash.md; this file is its reference implementation.

use sha2::{Digest as _, Sha256};

use super::ware_id::{Digest, WareId};
use crate::escape::escaped;

/// First line of every manifest; a new encoding would get a new version.
pub const MANIFEST_MAGIC: &[u8] = b"repeatr-ware-v1\n";

/// One file-tree entry with its final (filtered) metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative, cleaned: no `./`, no trailing or doubled `/`, no `..`;
    /// the root directory is the empty path.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Whole seconds since the epoch (rounded down: a tar keeps no more).
    pub mtime: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file (a hardlink is one too: link structure is not kept).
    File {
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    Fifo,
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
}

impl Kind {
    pub fn letter(&self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File { .. } => b'f',
            Kind::Symlink { .. } => b'l',
            Kind::Fifo => b'p',
            Kind::CharDev { .. } => b'c',
            Kind::BlockDev { .. } => b'b',
        }
    }
}

impl Entry {
    /// The path for messages: `.` for the root, the rest `escaped`.
    pub fn display_path(&self) -> String {
        display_path(&self.path)
    }
}

pub fn display_path(path: &[u8]) -> String {
    if path.is_empty() { ".".into() } else { escaped(path) }
}

/// Appends the manifest line of `entry`; `digest` is the SHA-256 of a
/// regular file's content and ignored for other kinds.
pub fn manifest_line(entry: &Entry, digest: Option<&Digest>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}:", entry.path.len());
    out.extend_from_slice(&entry.path);
    let _ = write!(
        out,
        " {} {:04o} {} {} {} ",
        char::from(entry.kind.letter()),
        entry.mode & 0o7777,
        entry.uid,
        entry.gid,
        entry.mtime
    );
    match &entry.kind {
        Kind::File { size } => {
            let digest = digest.map(Digest::to_string).unwrap_or_default();
            let _ = write!(out, "{size} {digest}");
        }
        Kind::Symlink { target } => {
            let _ = write!(out, "{}:", target.len());
            out.extend_from_slice(target);
        }
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            let _ = write!(out, "{major},{minor}");
        }
        Kind::Dir | Kind::Fifo => out.push(b'-'),
    }
    out.push(b'\n');
}

/// Feeds manifest lines, in path order, into SHA-256.
pub struct TreeHasher {
    sha: Sha256,
    line: Vec<u8>,
    /// Kept only when asked for (tests, docs): a big tree's is big.
    manifest: Option<Vec<u8>>,
    last: Option<Vec<u8>>,
}

impl TreeHasher {
    pub fn new(keep_manifest: bool) -> TreeHasher {
        let mut sha = Sha256::new();
        sha.update(MANIFEST_MAGIC);
        TreeHasher { sha, line: Vec::new(), manifest: keep_manifest.then(|| MANIFEST_MAGIC.to_vec()), last: None }
    }

    /// Adds the next entry. Entries must come in strictly increasing path
    /// order; anything else is a bug in the caller, caught here because a
    /// wrong order would silently give a wrong hash.
    pub fn add(&mut self, entry: &Entry, digest: Option<&Digest>) {
        if let Some(last) = &self.last {
            assert!(last < &entry.path, "manifest entries out of order");
        }
        self.last = Some(entry.path.clone());
        self.line.clear();
        manifest_line(entry, digest, &mut self.line);
        self.sha.update(&self.line);
        if let Some(m) = &mut self.manifest {
            m.extend_from_slice(&self.line);
        }
    }

    pub fn finish(self) -> (WareId, Option<Vec<u8>>) {
        let hash = Digest(self.sha.finalize().into());
        (WareId { hash }, self.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_length_prefixed() {
        let mut out = Vec::new();
        let e = Entry {
            path: b"a b\nc".to_vec(),
            kind: Kind::Symlink { target: b"../x".to_vec() },
            mode: 0o777,
            uid: 1000,
            gid: 1000,
            mtime: -5,
        };
        manifest_line(&e, None, &mut out);
        assert_eq!(out, b"5:a b\nc l 0777 1000 1000 -5 4:../x\n");
        out.clear();
        let root = Entry { path: Vec::new(), kind: Kind::Dir, mode: 0o1755, ..e };
        manifest_line(&root, None, &mut out);
        assert_eq!(out, b"0: d 1755 1000 1000 -5 -\n");
    }
}
