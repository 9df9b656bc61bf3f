//! The write counter that lets an allocation trust the rows without
//! reading every sidecar (state-layout.md, "state.gen").
//!
//! After every lease-changing commit made under the state lock, the
//! database's `meta.generation` and the file `state.gen` hold the same
//! number. A database that differs from the file is not the one the
//! runners last wrote (an old copy put back, another file put in its
//! place), or a runner died between its commit and the file write: the
//! allocation then compares every sidecar with the rows, as it would
//! without the counter. Comparing one number instead of reading one JSON
//! file per live job keeps an allocation's cost flat as jobs pile up.

use std::io::{Read, Write};
use std::path::Path;

use nix::fcntl::OFlag;
use rusqlite::Connection;

use super::error::StateError;
use super::private::PrivateDir;
use super::schema;

/// The file, in the state dir.
pub(crate) const FILE: &str = "state.gen";

/// The database's count.
pub(crate) fn in_db(conn: &Connection, db: &Path) -> Result<i64, StateError> {
    schema::query_row(conn, "SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get(0))
        .map_err(StateError::db(db))
}

/// Counts one more change, inside the caller's write transaction; returns
/// the new count, for [`write_file`] once the transaction has committed.
pub(crate) fn bump(conn: &Connection, db: &Path) -> Result<i64, StateError> {
    schema::query_row(conn, "UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value", [], |r| {
        r.get(0)
    })
    .map_err(StateError::db(db))
}

/// The file's count; `None` when it is missing or unreadable, which reads
/// as a mismatch (the safe answer).
pub(crate) fn in_file(dir: &PrivateDir) -> Option<i64> {
    let mut text = String::new();
    dir.open_file(FILE, OFlag::O_RDONLY, "read").ok()??.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Records `generation` after a commit. Not atomic and not synced: a torn
/// or lost write reads back as a mismatch, which costs one full check.
///
/// Truncated only once opened and checked: a hard link planted at this
/// name must not cut the file it links to.
pub(crate) fn write_file(dir: &PrivateDir, generation: i64) {
    let written = dir.open_file(FILE, OFlag::O_WRONLY | OFlag::O_CREAT, "write").and_then(|f| {
        let mut f = f.ok_or_else(|| StateError::io("write", &dir.join(FILE))(std::io::ErrorKind::NotFound.into()))?;
        f.set_len(0)
            .and_then(|()| f.write_all(format!("{generation}\n").as_bytes()))
            .map_err(StateError::io("write", &dir.join(FILE)))
    });
    if let Err(e) = written {
        log::warn!("{e} (the next allocation checks every sidecar)");
    }
}
