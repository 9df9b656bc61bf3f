//! Writing the normalized tar of a ware: entries in manifest order, the
//! filtered metadata and nothing else (no user or group names, no xattrs,
//! no atime/ctime), so the same tree always gives the same bytes.
//!
//! Each entry is one GNU-format header (`tar::Header::new_gnu`, whose numeric
//! fields fall back to base-256 when octal is too small); a name or link
//! target longer than 100 bytes, or a negative mtime, is carried in a PAX
//! `x` header in front of it, which GNU tar, bsdtar and the `tar` crate read.
//!
//! These bytes are the only ones a stored ware may have: `verify` rebuilds
//! each header with `TarOut::header` and compares.

use std::io::{self, Write};

use tar::{EntryType, Header};

use super::tree::{Entry, Kind};

pub(crate) const BLOCK: usize = 512;
/// The size of a header's name and link name fields.
const NAME_FIELD: usize = 100;

pub(crate) struct TarOut<W: Write> {
    out: W,
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W) -> TarOut<W> {
        TarOut { out }
    }

    /// Writes the header(s) of `entry`; a regular file's data must follow
    /// through `data`, then `pad`.
    pub fn header(&mut self, entry: &Entry) -> io::Result<()> {
        let name = tar_name(entry);
        let mut header = Header::new_gnu();
        let (kind, size) = match &entry.kind {
            Kind::Dir => (EntryType::Directory, 0),
            Kind::File { size } => (EntryType::Regular, *size),
            Kind::Symlink { .. } => (EntryType::Symlink, 0),
            Kind::Fifo => (EntryType::Fifo, 0),
            Kind::CharDev { .. } => (EntryType::Char, 0),
            Kind::BlockDev { .. } => (EntryType::Block, 0),
        };
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(entry.mode);
        header.set_uid(entry.uid.into());
        header.set_gid(entry.gid.into());
        header.set_mtime(entry.mtime.max(0) as u64);
        if let Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } = entry.kind {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        if entry.mtime < 0 {
            pax.push(("mtime", entry.mtime.to_string().into_bytes()));
        }
        put(&mut header.as_old_mut().name, &name, "path", &mut pax);
        if let Kind::Symlink { target } = &entry.kind {
            put(&mut header.as_old_mut().linkname, target, "linkpath", &mut pax);
        }
        header.set_cksum();
        if !pax.is_empty() {
            self.pax(&pax)?;
        }
        self.out.write_all(header.as_bytes())
    }

    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Zero-fills the last block of `size` bytes of file data.
    pub fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn pax(&mut self, records: &[(&str, Vec<u8>)]) -> io::Result<()> {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN KEY=VALUE\n", where LEN counts itself: try the length
            // that the rest implies until it is a fixed point.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // A fixed name, so the bytes do not depend on the entry.
        put(&mut header.as_old_mut().name, b"././@PaxHeader", "", &mut Vec::new());
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(&data)?;
        self.pad(data.len() as u64)
    }

    /// Writes the end-of-archive marker (two zero blocks).
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

/// The name of `entry` in the tar. Directories end in `/`, and everything
/// starts with `./`, like `tar -C DIR -cf - .`: the root is `./`.
fn tar_name(entry: &Entry) -> Vec<u8> {
    let mut name = b"./".to_vec();
    name.extend_from_slice(&entry.path);
    if matches!(entry.kind, Kind::Dir) && !entry.path.is_empty() {
        name.push(b'/');
    }
    name
}

/// Why `entry` cannot be written into a ware, if it cannot: a name or link
/// target that needs a PAX record (over 100 bytes) must not hold a newline,
/// because the `tar` crate, which unpacks wares, splits PAX records on
/// newlines instead of by their lengths and would read another name.
pub(crate) fn unstorable(entry: &Entry) -> Option<&'static str> {
    let long_with_newline = |v: &[u8]| v.len() > NAME_FIELD && v.contains(&b'\n');
    if long_with_newline(&tar_name(entry)) {
        return Some("has a name over 100 bytes long with a newline in it");
    }
    match &entry.kind {
        Kind::Symlink { target } if long_with_newline(target) => {
            Some("is a symlink whose target is over 100 bytes long with a newline in it")
        }
        _ => None,
    }
}

/// Stores `value` in a fixed header field; a value that does not fit (the
/// field needs room for it, NUL-terminated or exactly full) goes into a PAX
/// record and the field keeps its first bytes.
fn put<'a>(field: &mut [u8], value: &[u8], key: &'a str, pax: &mut Vec<(&'a str, Vec<u8>)>) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    if value.len() > field.len() {
        pax.push((key, value.to_vec()));
    }
}
