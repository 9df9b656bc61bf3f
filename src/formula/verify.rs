//! Reading a stored ware back: only the exact bytes that `normtar` writes
//! for a tree are accepted, and that tree's id is returned.
//!
//! A tar reader is not enough. A tar can carry what the tree hash does not
//! cover (PAX records such as `SCHILY.xattr.security.capability`, user
//! names, atimes, bytes in padding or after the end blocks), and an unpacker
//! restores some of it onto a tree that its id says is plain (such a record
//! added to a stored ware leaves the tree hash as it is, and would give a
//! binary cap_setuid). So each header is parsed, the header(s)
//! `TarOut` writes for the parsed entry are rebuilt and must be
//! byte-identical, padding must be zeros, and the file must end right after
//! the two zero blocks. The stored bytes are then a function of the hashed
//! tree, which is all an unpack can restore.

use std::collections::HashSet;
use std::io::{self, BufRead};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::normtar::{BLOCK, TarOut};
use super::tree::{Entry, Kind, TreeHasher, display_path};
use super::ware_id::{Digest, WareId};
use crate::archive::clean;
use crate::escape::{escaped, escaped_error};

/// More than the largest PAX header `TarOut` writes (a path and a link
/// target); a bigger one is refused before it is read into memory.
const MAX_PAX: u64 = 1 << 20;

/// Why a stored ware was not read to its end.
#[derive(Debug)]
pub(crate) enum StoredError {
    /// The file could not be read.
    Io(io::Error),
    /// The bytes are not what repeatr writes: what is wrong, on one line.
    NotCanonical(String),
}

type Result<T> = std::result::Result<T, StoredError>;

fn bad(problem: String) -> StoredError {
    StoredError::NotCanonical(problem)
}

/// The id of the tree whose canonical tar `reader` holds, if it holds
/// exactly that and nothing else.
pub(crate) fn stored_id(reader: impl BufRead) -> Result<WareId> {
    let mut r = Blocks { reader, offset: 0 };
    let mut hasher = TreeHasher::new(false);
    let mut order = Order::default();
    // The header bytes of one entry as stored, and as TarOut writes them.
    let mut got = Vec::new();
    let mut want = Vec::new();
    loop {
        let start = r.offset;
        let mut block = [0u8; BLOCK];
        r.fill(&mut block, || "before the two zero blocks that end a tar".into())?;
        if block == [0; BLOCK] {
            r.end(start)?;
            return Ok(hasher.finish().0);
        }
        got.clear();
        got.extend_from_slice(&block);
        let mut pax = Pax::default();
        if Header::from_byte_slice(&block).entry_type().is_pax_local_extensions() {
            let at = format!("the PAX header at byte {start}");
            let size = Header::from_byte_slice(&block)
                .entry_size()
                .map_err(|e| bad(format!("{at} is damaged ({})", escaped_error(&e))))?;
            if size > MAX_PAX {
                return Err(bad(format!("{at} is {size} bytes long, more than repeatr ever writes")));
            }
            let data = got.len();
            got.resize(data + (size as usize).next_multiple_of(BLOCK), 0);
            r.fill(&mut got[data..], || format!("inside {at}"))?;
            pax = Pax::parse(&got[data..data + size as usize]).map_err(|p| bad(format!("{at} {p}")))?;
            r.fill(&mut block, || format!("after {at}"))?;
            got.extend_from_slice(&block);
        }
        let (entry, name) = parse(&block, &pax, start)?;
        if let Some(key) = &pax.other {
            return Err(bad(format!(
                "entry `{name}` has a PAX record `{}`, which repeatr never writes (a ware holds no xattrs, \
                 user names or atimes)",
                escaped(key)
            )));
        }
        order.add(&entry, &name)?;
        want.clear();
        TarOut::new(&mut want).header(&entry).map_err(StoredError::Io)?;
        if want != got {
            return Err(bad(format!(
                "entry `{name}` (at byte {start}) has header bytes other than the ones repeatr writes for it"
            )));
        }
        let digest = match entry.kind {
            Kind::File { size } => Some(r.data(size, &name)?),
            _ => None,
        };
        hasher.add(&entry, digest.as_ref());
    }
}

/// The PAX records `TarOut` writes, and the first key it never writes.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    mtime: Option<i64>,
    other: Option<Vec<u8>>,
}

impl Pax {
    /// Splits `LEN KEY=VALUE\n` records by their lengths. A value with a
    /// newline is refused: the `tar` crate, which unpacks the ware, splits
    /// records on newlines and would read another name.
    fn parse(mut data: &[u8]) -> std::result::Result<Pax, &'static str> {
        let mut pax = Pax::default();
        while !data.is_empty() {
            let space = data.iter().position(|&b| b == b' ').ok_or("has a record without a length")?;
            let len: usize = decimal(&data[..space]).ok_or("has a record with a bad length")?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err("has a record whose length is wrong");
            }
            let record = &data[space + 1..len - 1];
            let eq = record.iter().position(|&b| b == b'=').ok_or("has a record without `=`")?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            if value.contains(&b'\n') {
                return Err("has a value with a newline in it, which the tar reader would split");
            }
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"mtime" => pax.mtime = Some(decimal(value).ok_or("has a bad `mtime` record")?),
                _ => {
                    pax.other.get_or_insert_with(|| key.to_vec());
                }
            }
            data = &data[len..];
        }
        Ok(pax)
    }
}

fn decimal<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The bytes up to the first NUL of a header field.
fn until_nul(field: &[u8]) -> &[u8] {
    field.iter().position(|&b| b == 0).map_or(field, |i| &field[..i])
}

/// The entry a header (with its PAX records) describes, and its name for
/// messages. Anything the packer could not have written for some tree is
/// refused here; the byte comparison after this catches the rest.
fn parse(block: &[u8; BLOCK], pax: &Pax, start: u64) -> Result<(Entry, String)> {
    let h = Header::from_byte_slice(block);
    let raw = pax.path.as_deref().unwrap_or_else(|| until_nul(&h.as_old().name));
    let name = escaped(raw);
    let damaged = |e: io::Error| bad(format!("entry `{name}` (at byte {start}) is damaged ({})", escaped_error(&e)));
    let not_ours = |what: &str| bad(format!("entry `{name}` (at byte {start}) {what}, which repeatr never writes"));
    let kind = match h.entry_type() {
        EntryType::Directory => Kind::Dir,
        EntryType::Regular => Kind::File { size: h.entry_size().map_err(damaged)? },
        EntryType::Symlink => {
            let target = pax.linkpath.as_deref().unwrap_or_else(|| until_nul(&h.as_old().linkname));
            if target.is_empty() || target.contains(&0) {
                return Err(not_ours("is a symlink with an empty target or a NUL in it"));
            }
            Kind::Symlink { target: target.to_vec() }
        }
        EntryType::Fifo => Kind::Fifo,
        kind @ (EntryType::Char | EntryType::Block) => {
            let major = h.device_major().map_err(damaged)?.ok_or_else(|| not_ours("has no device numbers"))?;
            let minor = h.device_minor().map_err(damaged)?.ok_or_else(|| not_ours("has no device numbers"))?;
            if kind == EntryType::Char { Kind::CharDev { major, minor } } else { Kind::BlockDev { major, minor } }
        }
        other => return Err(not_ours(&format!("has type {:?}", char::from(other.as_byte())))),
    };
    let path = raw.strip_prefix(b"./").ok_or_else(|| not_ours("has a name not starting with `./`"))?;
    let path = match kind {
        Kind::Dir => path.strip_suffix(b"/").unwrap_or(path),
        _ => path,
    };
    let clean_path = if path.is_empty() {
        matches!(kind, Kind::Dir)
    } else {
        clean(path).is_ok_and(|c| c == path) && !path.contains(&0)
    };
    if !clean_path {
        return Err(not_ours("has a name that is not a clean relative path"));
    }
    let mode = h.mode().map_err(damaged)?;
    if mode > 0o7777 {
        return Err(not_ours(&format!("has mode {mode:o}")));
    }
    let id = |v: u64| u32::try_from(v).map_err(|_| not_ours("has an owner id over 32 bits"));
    let uid = id(h.uid().map_err(damaged)?)?;
    let gid = id(h.gid().map_err(damaged)?)?;
    let mtime = match pax.mtime {
        Some(t) => t,
        None => i64::try_from(h.mtime().map_err(damaged)?).map_err(|_| not_ours("has an mtime out of range"))?,
    };
    Ok((Entry { path: path.to_vec(), kind, mode, uid, gid, mtime }, name))
}

/// What the entries so far must satisfy: strictly increasing paths (the
/// manifest order `TreeHasher` relies on), the root first, and each entry
/// inside a directory listed before it, as in every tree `pack` writes.
#[derive(Default)]
struct Order {
    last: Option<Vec<u8>>,
    dirs: HashSet<Vec<u8>>,
}

impl Order {
    fn add(&mut self, entry: &Entry, name: &str) -> Result<()> {
        match &self.last {
            None if !entry.path.is_empty() => {
                return Err(bad(format!("the first entry is `{name}`, not the root directory `./`")));
            }
            Some(last) if *last >= entry.path => {
                return Err(bad(format!("entry `{name}` comes after `{}`: out of order", display_path(last))));
            }
            _ => {}
        }
        if !entry.path.is_empty() {
            let parent = entry.path.iter().rposition(|&b| b == b'/').map_or(&[][..], |i| &entry.path[..i]);
            if !self.dirs.contains(parent) {
                return Err(bad(format!("entry `{name}` is not inside a directory listed before it")));
            }
        }
        if matches!(entry.kind, Kind::Dir) {
            self.dirs.insert(entry.path.clone());
        }
        self.last = Some(entry.path.clone());
        Ok(())
    }
}

/// The stored file, read in order, with the offset for messages.
struct Blocks<R> {
    reader: R,
    offset: u64,
}

impl<R: BufRead> Blocks<R> {
    /// Fills `buf`. The file ending first is the ware's fault; `at` says
    /// where it ended.
    fn fill(&mut self, buf: &mut [u8], at: impl FnOnce() -> String) -> Result<()> {
        match self.reader.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(bad(format!("the file ends {}", at()))),
            Err(e) => Err(StoredError::Io(e)),
        }
    }

    /// A regular file's data, hashed where the reader buffered it (no
    /// copy: this is most of the bytes of a ware), then its zero padding.
    fn data(&mut self, size: u64, name: &str) -> Result<Digest> {
        let mut sha = Sha256::new();
        let mut left = size;
        while left > 0 {
            let chunk = match self.reader.fill_buf() {
                Ok([]) => return Err(bad(format!("the file ends inside the data of entry `{name}`"))),
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoredError::Io(e)),
            };
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            sha.update(&chunk[..n]);
            self.reader.consume(n);
            self.offset += n as u64;
            left -= n as u64;
        }
        let mut padding = [0u8; BLOCK];
        let padding = &mut padding[..(BLOCK - (size % BLOCK as u64) as usize) % BLOCK];
        let at = self.offset;
        self.fill(padding, || format!("inside the padding after entry `{name}`"))?;
        if padding.iter().any(|&b| b != 0) {
            return Err(bad(format!("the padding after entry `{name}` (at byte {at}) is not zeros")));
        }
        Ok(Digest(sha.finalize().into()))
    }

    /// After the zero block at `first`: a second one, then nothing.
    fn end(&mut self, first: u64) -> Result<()> {
        let mut block = [0u8; BLOCK];
        self.fill(&mut block, || format!("after a single zero block (at byte {first})"))?;
        if block != [0; BLOCK] {
            return Err(bad(format!("a single zero block (at byte {first}) is followed by more data")));
        }
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(bad(format!("there is data after the end of the tar (at byte {})", self.offset))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoredError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_split_by_length() {
        let pax = Pax::parse(b"12 mtime=-5\n12 path=a b\n").unwrap();
        assert_eq!(pax.mtime, Some(-5));
        assert_eq!(pax.path.as_deref(), Some(&b"a b"[..]));
        assert!(pax.other.is_none());
        let pax = Pax::parse(b"12 comment=\n").unwrap();
        assert_eq!(pax.other.as_deref(), Some(&b"comment"[..]));
        assert!(Pax::parse(b"12 path=a\nb\n").is_err(), "a newline in a value");
        assert!(Pax::parse(b"99 path=a\n").is_err(), "a length past the end");
        assert!(Pax::parse(b"8 path=a\n").is_err(), "a length short of the newline");
        assert!(Pax::parse(b"x path=a\n").is_err());
    }
}
