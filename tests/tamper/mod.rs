//! Editing a stored ware in place, as someone with write access to the
//! warehouse would: the tests of "a ware is what its id says".
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A `security.capability` value (VFS_CAP_REVISION_2, effective) granting
/// cap_setuid and cap_setgid: what `setcap cap_setuid,cap_setgid=ep` writes.
pub const CAP_SETUID_EP: [u8; 20] = {
    let mut v = [0u8; 20];
    // magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, little endian.
    v[0] = 0x01;
    v[3] = 0x02;
    // permitted[0]: CAP_SETGID (6) and CAP_SETUID (7).
    v[4] = 0xC0;
    v
};

pub fn offset_of(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack.windows(needle.len()).position(|w| w == needle).unwrap() as u64
}

/// Flips one byte of the stored ware at `offset` (as root, despite 0444).
pub fn flip(path: &Path, offset: u64) {
    let mut f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x20]).unwrap();
}

/// The byte offset of the header of the entry named `name` (e.g.
/// `./bin/run`) in a stored ware.
pub fn header_of(bytes: &[u8], name: &str) -> usize {
    let mut field = name.as_bytes().to_vec();
    field.push(0);
    let at = offset_of(bytes, &field) as usize;
    assert_eq!(at % 512, 0, "{name} is not at a header");
    at
}

/// Inserts a PAX `x` header with `records` in front of the entry `name` of
/// the stored ware at `path`, keeping its file name (the old id): the tree
/// hash does not look at such records.
pub fn insert_pax(path: &Path, name: &str, records: &[(&str, &[u8])]) {
    let mut bytes = fs::read(path).unwrap();
    let at = header_of(&bytes, name);
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions(records.iter().copied()).unwrap();
    let mut pax = b.into_inner().unwrap();
    // Without the two zero blocks that end the builder's archive.
    pax.truncate(pax.len() - 1024);
    bytes.splice(at..at, pax);
    fs::write(path, bytes).unwrap();
}

/// Rewrites the header of entry `name` with `edit`, fixing its checksum:
/// a tar reader sees a valid header.
pub fn edit_header(path: &Path, name: &str, edit: impl FnOnce(&mut tar::Header)) {
    let mut bytes = fs::read(path).unwrap();
    let at = header_of(&bytes, name);
    let mut header = tar::Header::from_byte_slice(&bytes[at..at + 512]).clone();
    edit(&mut header);
    header.set_cksum();
    bytes[at..at + 512].copy_from_slice(header.as_bytes());
    fs::write(path, bytes).unwrap();
}
