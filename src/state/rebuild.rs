//! `repeatr gc --rebuild`: a new state.db from the sidecars of live jobs
//! (their leases and the host ports they publish).
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
use super::ports;
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

/// The new database while it is being filled, beside the old one. Only
/// the rebuild, under the state lock, ever has it.
const NEW: &str = "state.db.rebuild";

/// NEW and the files SQLite keeps beside it.
const NEW_FILES: [&str; 4] =
    ["state.db.rebuild", "state.db.rebuild-wal", "state.db.rebuild-shm", "state.db.rebuild-journal"];

impl StateDir {
    /// Rebuilds the state dir at `root`; see the module comment.
    ///
    /// The new database is filled under another name and put in place only
    /// once it is complete, so a rebuild that fails (a full disk) leaves the
    /// previous file where it was.
    pub fn rebuild(root: &Path) -> Result<RebuildReport, StateError> {
        let dir = StateDir::layout(root)?;
        let _lock = StateLock::acquire(&dir.dir)?;
        let built = dir.build_new();
        if built.is_err() {
            for name in NEW_FILES {
                // Best effort: the error that matters is the build's.
                let _ = dir.dir.remove(name);
            }
        }
        let (mut report, dead, count) = built?;
        report.moved_aside = dir.move_db_aside()?;
        dir.dir.rename(NEW, DB)?;
        for name in &NEW_FILES[1..] {
            dir.dir.remove(name)?;
        }
        generation::write_file(&dir.dir, count);
        // Only now: should the rebuild have failed, they would have been
        // left for the next one to judge again.
        for (bridge, slot) in dead {
            if let Some(bridge_dir) = dir.bridges().get(&bridge)? {
                bridge_dir.remove(&SlotFiles::new(slot).json)?;
            }
        }
        Ok(report)
    }

    /// Fills `NEW` from the live sidecars, closes it with its WAL copied in
    /// (so the file alone is the database), and returns the report, the
    /// dead sidecars' slots and the write count.
    #[allow(clippy::type_complexity)]
    fn build_new(&self) -> Result<(RebuildReport, Vec<(String, u16)>, i64), StateError> {
        for name in NEW_FILES {
            self.dir.remove(name)?;
        }
        self.dir.create_new(NEW)?;
        let path = self.dir.join(NEW);
        let mut conn = schema::connect(&path, true)?;
        schema::migrate(&mut conn, &path, true)?;
        let mut tx = schema::write_tx(&mut conn, &path)?;

        let mut report =
            RebuildReport { moved_aside: None, restored: Vec::new(), dropped: Vec::new(), unrestorable: Vec::new() };
        let mut dead = Vec::new();
        let mut bridges = self.bridges();
        for found in sidecar::scan(&mut bridges, |_, _| false)?.sidecars {
            if !self.sidecar_live(&found, &mut bridges)? {
                dead.push((found.bridge.clone(), found.slot));
                report.dropped.push(found.path);
                continue;
            }
            let Some(record) = found.record else {
                report.unrestorable.push(found.path);
                continue;
            };
            // The lease and its ports, or neither (a port two live
            // sidecars claim cannot be both's).
            let restored = tx.savepoint().map_err(StateError::db(&path)).and_then(|sp| {
                insert(&sp, &record, &path)?;
                let publisher = (record.job.as_str(), record.bridge.as_str(), record.ip);
                ports::restore(&sp, &path, publisher, &found.published)?;
                sp.commit().map_err(StateError::db(&path))
            });
            match restored {
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
            set_last_ip(&tx, &r.bridge, r.ip, &path)?;
        }
        // The rows now agree with every live sidecar: allocations may trust them.
        let count = generation::bump(&tx, &path)?;
        tx.commit().map_err(StateError::db(&path))?;
        let copied: i64 =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).map_err(StateError::db(&path))?;
        if copied != 0 {
            return Err(StateError::Corrupt { path, detail: "its WAL could not be copied in".into() });
        }
        drop(conn);
        Ok((report, dead, count))
    }

    /// Renames state.db and its WAL and shared-memory files to
    /// `state.db.corrupt-<time>{,-wal,-shm}`, which keeps them openable
    /// together; `<time>` gets a `.N` if an earlier rebuild used it, and no
    /// rename ever replaces a file. Renaming opens no fd on the database, so
    /// it cannot drop anyone's SQLite locks; and no one has it open, because
    /// every user holds the state lock, which the caller has exclusively.
    fn move_db_aside(&self) -> Result<Option<PathBuf>, StateError> {
        let stamp = civil_time::stamp_now();
        let mut aside = format!("state.db.corrupt-{stamp}");
        let mut n = 0;
        let taken = |base: &str| -> Result<bool, StateError> {
            for from in DB_FILES {
                let name = from.replacen("state.db", base, 1);
                if self.dir.stat(&name).map_err(StateError::io("look up", &self.dir.join(&name)))?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        while taken(&aside)? {
            n += 1;
            aside = format!("state.db.corrupt-{stamp}.{n}");
        }
        let mut moved = None;
        for from in DB_FILES {
            let to = from.replacen("state.db", &aside, 1);
            if self.dir.rename_new(from, &to)? && from == DB {
                moved = Some(self.dir.join(&to));
            }
        }
        Ok(moved)
    }
}
