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

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::Connection;

use super::error::StateError;

/// The database's count.
pub(crate) fn in_db(conn: &Connection, db: &Path) -> Result<i64, StateError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get(0)).map_err(StateError::db(db))
}

/// Counts one more change, inside the caller's write transaction; returns
/// the new count, for [`write_file`] once the transaction has committed.
pub(crate) fn bump(conn: &Connection, db: &Path) -> Result<i64, StateError> {
    conn.query_row("UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value", [], |r| r.get(0))
        .map_err(StateError::db(db))
}

/// The file's count; `None` when it is missing or unreadable, which reads
/// as a mismatch (the safe answer).
pub(crate) fn in_file(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Records `generation` after a commit. Not atomic and not synced: a torn
/// or lost write reads back as a mismatch, which costs one full check.
pub(crate) fn write_file(path: &Path, generation: i64) {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{generation}\n").as_bytes()));
    if let Err(e) = written {
        log::warn!("{}: {e} (the next allocation checks every sidecar)", path.display());
    }
}
