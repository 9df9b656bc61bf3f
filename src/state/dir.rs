//! The state dir itself: its paths, the one SQLite connection a process
//! keeps (see `StateDir::conn`), and the checks every operation shares.
//! Taking and giving back leases is in `leases`, rebuilding in `rebuild`.

use std::cell::{RefCell, RefMut};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::error::StateError;
use super::lock::{SlotLock, StateLock, try_lock_slot_file};
use super::record::LeaseRecord;
use super::slot::{MAX_SLOTS, SlotPaths};
use super::{liveness, schema, sidecar};

/// An open state dir: paths, plus one SQLite connection reused by every
/// operation of this process (see `conn`).
#[derive(Debug)]
pub struct StateDir {
    pub(super) root: PathBuf,
    pub(super) db: PathBuf,
    pub(super) lock: PathBuf,
    /// `state.gen`: see `generation`.
    pub(super) generation: PathBuf,
    pub(super) slots: PathBuf,
    pub(super) boot_id: String,
    /// The connection and the inode of the file it opened.
    conn: RefCell<Option<(Connection, u64)>>,
}

impl StateDir {
    /// Opens the state dir at `root`, creating it (0700) and its database on
    /// first use, and brings the schema up to date.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let dir = StateDir::layout(root)?;
        let _lock = StateLock::acquire(&dir.lock)?;
        dir.init_db()?;
        Ok(dir)
    }

    /// Paths, directories and the boot id, without touching the database.
    pub(super) fn layout(root: &Path) -> Result<StateDir, StateError> {
        let slots = root.join("slots");
        private_dir(&slots).map_err(StateError::io("create state dir", &slots))?;
        let boot_id_path = Path::new("/proc/sys/kernel/random/boot_id");
        let boot_id = crate::sys::boot_id().map_err(StateError::io("read", boot_id_path))?;
        Ok(StateDir {
            root: root.to_path_buf(),
            db: root.join("state.db"),
            lock: root.join("state.lock"),
            generation: root.join("state.gen"),
            slots,
            boot_id,
            conn: RefCell::new(None),
        })
    }

    /// Creates or migrates state.db. Caller holds the state lock, so two
    /// first runs cannot race on the schema. A missing database while live
    /// jobs' sidecars exist means it was lost: starting empty would hand
    /// their addresses out again.
    fn init_db(&self) -> Result<(), StateError> {
        let exists = self.db.try_exists().map_err(StateError::io("look up", &self.db))?;
        if !exists && let Some(live) = self.live_sidecars()?.into_iter().next() {
            return Err(self.lost_lease(live));
        }
        let mut conn = schema::connect(&self.db, true)?;
        schema::migrate(&mut conn, &self.db)?;
        *self.conn.borrow_mut() = Some((conn, self.db_inode()?));
        Ok(())
    }

    /// The connection every operation of this process uses. A runner opens
    /// it once and keeps it until its lease is released: when the last
    /// connection to a WAL database closes, SQLite checkpoints the WAL into
    /// the database with fsyncs, and one connection per operation would put
    /// three of those on every job's start path. (A connection in the runner
    /// crosses the clone of the job child harmlessly: the child never
    /// touches it, its copies of the fds close at exec, and POSIX locks
    /// belong to the process that took them.)
    ///
    /// If `gc --rebuild` replaced the file meanwhile (another inode at the
    /// path), the old connection is dropped and the new file opened, so a
    /// runner that started before the rebuild releases its lease where the
    /// rebuild restored it.
    pub(super) fn conn(&self) -> Result<RefMut<'_, Connection>, StateError> {
        let mut slot = self.conn.borrow_mut();
        let inode = self.db_inode()?;
        if slot.as_ref().is_none_or(|(_, ino)| *ino != inode) {
            if let Some((old, _)) = slot.take() {
                // Never close a connection whose file was swapped: closing
                // may checkpoint and unlink `state.db-wal` *by name*, which
                // is now the new database's WAL. Its fds close at exit.
                std::mem::forget(old);
            }
            *slot = Some((schema::connect(&self.db, false)?, inode));
        }
        RefMut::filter_map(slot, |s| s.as_mut().map(|(c, _)| c))
            .map_err(|_| StateError::Request("state connection unavailable".into()))
    }

    /// The inode at `state.db` now (0 when missing).
    fn db_inode(&self) -> Result<u64, StateError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.db) {
            Ok(m) => Ok(m.ino()),
            // Missing: `connect` says so in its own words.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StateError::io("look up", &self.db)(e)),
        }
    }

    /// The error for a live job the database does not know.
    pub(super) fn lost_lease(&self, live: sidecar::Sidecar) -> StateError {
        StateError::LostLeases {
            db: self.db.clone(),
            job: live.record.map_or_else(|| "(unreadable record)".to_string(), |r| r.job),
            sidecar: live.path,
        }
    }

    /// Sidecars of live jobs.
    fn live_sidecars(&self) -> Result<Vec<sidecar::Sidecar>, StateError> {
        let mut live = Vec::new();
        for found in sidecar::scan(&self.slots)? {
            if self.sidecar_live(&found)? {
                live.push(found);
            }
        }
        Ok(live)
    }

    /// A sidecar that parses is judged like its lease; one that does not
    /// can only be judged by its lock (and without a lock file, nobody can
    /// be shown to hold it).
    pub(super) fn sidecar_live(&self, found: &sidecar::Sidecar) -> Result<bool, StateError> {
        match &found.record {
            Some(record) => self.is_live(record),
            None => Ok(liveness::lock_held(&self.slot_paths(&found.bridge, found.slot).lock)?.unwrap_or(false)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the lock of a slot if nobody holds it: the caller then owns the
    /// slot and may delete a leftover host veth `{bridge}-{slot}`. `None`
    /// means a live job (or another cleaner) has it.
    pub fn try_lock_slot(&self, bridge: &str, slot: u16) -> Result<Option<SlotLock>, StateError> {
        check_slot(bridge, slot)?;
        let paths = self.slot_paths(bridge, slot);
        self.create_bridge_dir(bridge)?;
        try_lock_slot_file(&paths.lock, bridge, slot)
    }

    pub(super) fn slot_paths(&self, bridge: &str, slot: u16) -> SlotPaths {
        SlotPaths::new(&self.slots, bridge, slot)
    }

    fn create_bridge_dir(&self, bridge: &str) -> Result<(), StateError> {
        let dir = self.slots.join(bridge);
        private_dir(&dir).map_err(StateError::io("create", &dir))
    }

    pub(super) fn is_live(&self, record: &LeaseRecord) -> Result<bool, StateError> {
        let path = self.slot_paths(&record.bridge, record.slot).lock;
        liveness::is_live(record, &path, &self.boot_id)
    }
}

impl Drop for StateDir {
    /// Closes the connection under the shared state lock, so no `rebuild`
    /// can swap the files while SQLite's close works on them by name; a
    /// connection to a file that was already swapped is not closed at all
    /// (see `conn`).
    fn drop(&mut self) {
        let Some((conn, ino)) = self.conn.get_mut().take() else {
            return;
        };
        let _lock = StateLock::acquire_shared(&self.lock);
        if self.db_inode().ok() == Some(ino) {
            drop(conn);
        } else {
            std::mem::forget(conn);
        }
    }
}

/// Creates a directory of the state dir (and its parents), 0700: what is in
/// it concerns root's jobs only.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Bridge names become path components and slot numbers file names: refuse
/// anything that could step outside `slots/`.
pub(super) fn check_slot(bridge: &str, slot: u16) -> Result<(), StateError> {
    crate::config::check_bridge(bridge).map_err(|p| StateError::Request(format!("bridge {bridge:?} {p}")))?;
    if slot >= MAX_SLOTS {
        return Err(StateError::Request(format!("slot {slot} is out of range 0..={}", MAX_SLOTS - 1)));
    }
    Ok(())
}
