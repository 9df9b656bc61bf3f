//! Reading tars, for every user of them: the compression check in front
//! of the stream, and the entry names and PAX times both the unpacker and
//! the packer (`formula::source`) must read the same way.

use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;
use nix::sys::time::TimeSpec;

use super::error::TarError;

/// Magic numbers of compressions we refuse, with the tool that undoes them.
const REFUSED: &[(&[u8], &str, &str, &str)] = &[
    (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], "xz", "xz", "xz"),
    (&[0x28, 0xB5, 0x2F, 0xFD], "zstd", "zstd", "zst"),
    (b"BZh", "bzip2", "bzip2", "bz2"),
    (&[0x04, 0x22, 0x4D, 0x18], "lz4", "lz4", "lz4"),
];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];

/// Wraps a raw tar stream: gzip (detected by its magic bytes, never by a file
/// name, which the user may have got wrong) is decompressed, a plain tar
/// passes through, and xz / zstd / bzip2 / lz4 are refused with an error
/// saying how to decompress them.
pub fn decompressed(mut reader: Box<dyn Read>) -> Result<Box<dyn Read>, TarError> {
    let mut magic = [0u8; 6];
    let len = read_up_to(&mut reader, &mut magic).map_err(TarError::Read)?;
    let head = &magic[..len];
    if let Some(&(_, format, tool, ext)) = REFUSED.iter().find(|(m, ..)| head.starts_with(m)) {
        return Err(TarError::UnsupportedCompression { format, tool, ext });
    }
    let gzip = head.starts_with(GZIP_MAGIC);
    // The bytes we peeked at are put back in front of the rest of the stream.
    let stream = BufReader::with_capacity(1 << 16, io::Cursor::new(head.to_vec()).chain(reader));
    if gzip {
        // Multi-member: `cat a.gz b.gz` and pigz output are valid gzip too.
        Ok(Box::new(MultiGzDecoder::new(stream)))
    } else {
        Ok(Box::new(stream))
    }
}

/// Fills `buf` as far as the stream allows; short only at end of stream.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Parses a PAX time, `seconds[.fraction]`, possibly negative.
pub(crate) fn pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut seconds: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nanos: i64 = digits.parse().ok()?;
    if secs.starts_with('-') && nanos > 0 {
        seconds -= 1;
        nanos = 1_000_000_000 - nanos;
    }
    Some(TimeSpec::new(seconds, nanos))
}

/// Normalises an entry path: `./` prefixes, `.` and empty components are
/// dropped. Absolute paths and `..` components are refused outright, not
/// clamped: a tar that carries them was not made from a directory tree.
pub(crate) fn clean(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.is_empty() {
        return Err("has an empty name");
    }
    if raw.starts_with(b"/") {
        return Err("is an absolute path");
    }
    let mut out = Vec::with_capacity(raw.len());
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err("contains a `..` component"),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(component);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_normalises_and_refuses_escapes() {
        assert_eq!(clean(b"./").unwrap(), b"");
        assert_eq!(clean(b".").unwrap(), b"");
        assert_eq!(clean(b"./etc//hosts").unwrap(), b"etc/hosts");
        assert_eq!(clean(b"usr/./lib/").unwrap(), b"usr/lib");
        assert_eq!(clean(b"..foo/x..").unwrap(), b"..foo/x..");
        assert!(clean(b"/etc/passwd").is_err());
        assert!(clean(b"../evil").is_err());
        assert!(clean(b"a/../../evil").is_err());
        assert!(clean(b"a/..").is_err());
        assert!(clean(b"").is_err());
    }

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        assert_eq!(pax_time(b"1500000000"), Some(TimeSpec::new(1_500_000_000, 0)));
        assert_eq!(pax_time(b"1500000000.25"), Some(TimeSpec::new(1_500_000_000, 250_000_000)));
        assert_eq!(pax_time(b"-1.5"), Some(TimeSpec::new(-2, 500_000_000)));
        assert_eq!(pax_time(b"1.1234567899"), Some(TimeSpec::new(1, 123_456_789)));
        assert_eq!(pax_time(b"12x"), None);
        assert_eq!(pax_time(b"1.-5"), None);
    }
}
