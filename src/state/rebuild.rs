//! `repeatr gc --rebuild`: a new state.db from the sidecars of live jobs.
//!
//! The damaged file is moved aside, never deleted, so it can be examined.
//! Only sidecars whose runner is alive come back; the others are removed,
//! since the slot they name is free.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::dir::{DB, DB_FILES, StateDir};
use super::error::StateError;
use super::leases::{insert, set_last_ip};
use super::lock::StateLock;
use super::record::LeaseRecord;
use super::slot::SlotFiles;
use super::{generation, schema, sidecar};
use crate::civil_time;

/// What a rebuild did.
#[derive(Clone, Debug, Serialize)]
pub struct RebuildReport {
    /// Where the previous state.db went (`state.db.corrupt-<time>`), if
    /// there was one.
    pub moved_aside: Option<PathBuf>,
    /// Leases of live jobs, now rows again.
    pub restored: Vec<LeaseRecord>,
    /// Sidecars of dead jobs, removed.
    pub dropped: Vec<PathBuf>,
    /// Sidecars of live jobs that could not be restored (unreadable, or an
    /// address or job id another live sidecar already claims). Allocation
    /// refuses to run while they exist; stop those jobs, then rebuild again.
    pub unrestorable: Vec<PathBuf>,
}

impl StateDir {
    /// Rebuilds the state dir at `root`; see the module comment.
    pub fn rebuild(root: &Path) -> Result<RebuildReport, StateError> {
        let dir = StateDir::layout(root)?;
        let _lock = StateLock::acquire(&dir.dir)?;
        let moved_aside = dir.move_db_aside()?;
        dir.create_db()?;
        dir.check_db_files()?;
        let mut conn = schema::connect(&dir.db, true)?;
        schema::migrate(&mut conn, &dir.db)?;
        let tx = schema::write_tx(&mut conn, &dir.db)?;

        let mut report =
            RebuildReport { moved_aside, restored: Vec::new(), dropped: Vec::new(), unrestorable: Vec::new() };
        let mut bridges = dir.bridges();
        for found in sidecar::scan(&mut bridges)? {
            if !dir.sidecar_live(&found, &mut bridges)? {
                if let Some(bridge_dir) = bridges.get(&found.bridge)? {
                    bridge_dir.remove(&SlotFiles::new(found.slot).json)?;
                }
                report.dropped.push(found.path);
                continue;
            }
            let Some(record) = found.record else {
                report.unrestorable.push(found.path);
                continue;
            };
            match insert(&tx, &record, &dir.db) {
                Ok(()) => report.restored.push(record),
                Err(StateError::Db { source, .. })
                    if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    report.unrestorable.push(found.path)
                }
                Err(e) => return Err(e),
            }
        }
        // Resume round-robin after each bridge's newest lease rather than
        // at the start of the subnet, where the addresses of jobs that just
        // died would come back first.
        let mut newest: Vec<&LeaseRecord> = report.restored.iter().collect();
        newest.sort_by(|a, b| (&a.bridge, &a.started_at).cmp(&(&b.bridge, &b.started_at)));
        for r in newest {
            set_last_ip(&tx, &r.bridge, r.ip, &dir.db)?;
        }
        // The rows now agree with every live sidecar: allocations may trust them.
        let count = generation::bump(&tx, &dir.db)?;
        tx.commit().map_err(StateError::db(&dir.db))?;
        generation::write_file(&dir.dir, count);
        Ok(report)
    }

    /// Renames state.db and its WAL and shared-memory files to
    /// `state.db.corrupt-<time>{,-wal,-shm}`, which keeps them openable
    /// together. Renaming opens no fd on the database, so it cannot drop
    /// anyone's SQLite locks; and no one has it open, because every user
    /// holds the state lock, which the caller has exclusively.
    fn move_db_aside(&self) -> Result<Option<PathBuf>, StateError> {
        let aside = format!("state.db.corrupt-{}", civil_time::stamp_now());
        let mut moved = None;
        for from in DB_FILES {
            let to = from.replacen("state.db", &aside, 1);
            if self.dir.rename_if_exists(from, &to)? && from == DB {
                moved = Some(self.dir.join(&to));
            }
        }
        Ok(moved)
    }
}
