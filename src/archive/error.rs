//! What can go wrong reading or unpacking a tar.

use std::io;

use crate::escape::escaped_error;

/// Why a rootfs tar could not be unpacked. Each message is one line: what is
/// wrong (naming the tar entry) and what to do about it. Every name and
/// problem from the tar is passed through `escaped` before it lands here.
#[derive(thiserror::Error, Debug)]
pub enum TarError {
    #[error(
        "the rootfs tar is {format}-compressed, which is not supported; decompress it first, \
         e.g. `{tool} -d rootfs.tar.{ext}`, and pass the plain (or gzip) tar"
    )]
    UnsupportedCompression { format: &'static str, tool: &'static str, ext: &'static str },

    #[error(
        "cannot read the rootfs tar: {}; check that it is a complete, uncorrupted tar \
         (plain or gzip)",
        escaped_error(&.0)
    )]
    Read(#[source] io::Error),

    #[error(
        "tar entry `{entry}` is corrupt ({problem}); the tar is damaged or truncated, \
         re-create it"
    )]
    Corrupt { entry: String, problem: String },

    #[error(
        "tar entry `{entry}` {problem}; refusing to unpack a rootfs that could write outside \
         its root, re-create the tar with relative paths (e.g. `tar -C rootfs -cf rootfs.tar .`)"
    )]
    UnsafePath { entry: String, problem: String },

    #[error(
        "tar entry `{entry}` would be written through a symlink leading outside the rootfs \
         ({source}); refusing to unpack it, the tar is malformed or hostile"
    )]
    Escape { entry: String, source: io::Error },

    #[error(
        "tar entry `{entry}` has unsupported type {kind:?}; re-create the tar with only files, \
         directories, links, fifos and devices"
    )]
    UnsupportedType { entry: String, kind: char },

    #[error(
        "cannot {action} for tar entry `{entry}`: {source}; unpack into an empty directory on a \
         filesystem with enough space (run as root to keep owners and xattrs)"
    )]
    Write { entry: String, action: &'static str, source: io::Error },
}
