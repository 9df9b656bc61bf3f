//! The state dir itself: its paths, the one SQLite connection a process
//! keeps (see `StateDir::conn`), and the checks every operation shares.
//! Taking and giving back leases is in `leases`, rebuilding in `rebuild`.

use std::cell::{RefCell, RefMut};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::error::StateError;
use super::lock::{SlotLock, StateLock, try_lock_slot_file};
use super::private::{PrivateDir, Subdirs};
use super::record::LeaseRecord;
use super::slot::{MAX_SLOTS, SlotFiles, check_domain_bridge};
use super::{generation, liveness, schema, sidecar};

/// The database, in the state dir. Only SQLite opens it.
pub(super) const DB: &str = "state.db";

/// The database and the files SQLite keeps beside it, which it creates
/// with the database's mode and owner.
pub(super) const DB_FILES: [&str; 3] = ["state.db", "state.db-wal", "state.db-shm"];

/// An open state dir: its checked directories, held open (see `private`),
/// plus one SQLite connection reused by every operation of this process
/// (see `conn`).
#[derive(Debug)]
pub struct StateDir {
    pub(super) dir: PrivateDir,
    pub(super) slots: PrivateDir,
    /// `state.db` in the checked dir: the path SQLite opens.
    pub(super) db: PathBuf,
    pub(super) boot_id: String,
    /// The connection and the inode of the file it opened.
    conn: RefCell<Option<(Connection, u64)>>,
}

impl StateDir {
    /// Opens the state dir at `root`, creating it (0700) and its database on
    /// first use, and brings the schema up to date. A state dir another
    /// user could have written is refused (see `private`).
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let dir = StateDir::layout(root)?;
        let _lock = StateLock::acquire(&dir.dir)?;
        dir.init_db()?;
        Ok(dir)
    }

    /// Directories, checks and the boot id, without touching the database.
    pub(super) fn layout(root: &Path) -> Result<StateDir, StateError> {
        let dir = PrivateDir::create(root)?;
        let slots = dir.create_subdir("slots")?;
        // Written in place after each commit, where a failure is only
        // logged: a link planted at its name is refused here instead.
        dir.check(generation::FILE)?;
        let boot_id_path = Path::new("/proc/sys/kernel/random/boot_id");
        let boot_id = crate::sys::boot_id().map_err(StateError::io("read", boot_id_path))?;
        Ok(StateDir { db: dir.join(DB), dir, slots, boot_id, conn: RefCell::new(None) })
    }

    /// Creates or migrates state.db. Caller holds the state lock, so two
    /// first runs cannot race on the schema. A missing database while live
    /// jobs' sidecars exist means it was lost: starting empty would hand
    /// their addresses out again.
    fn init_db(&self) -> Result<(), StateError> {
        let size = self.dir.stat(DB).map_err(StateError::io("look up", &self.db))?.map(|st| st.st_size);
        // A 0-byte file is what SQLite would take for a new, empty database;
        // but repeatr leaves one only when killed between making the file
        // and writing the schema, before any lease: with live jobs about, it
        // is a lost database too (truncated, or emptied by hand).
        if size.is_none_or(|s| s == 0)
            && let Some(live) = self.live_sidecars()?.into_iter().next()
        {
            return Err(self.lost_lease(live));
        }
        if size.is_none() {
            self.create_db()?;
        }
        self.check_db_files()?;
        let mut conn = schema::connect(&self.db, true)?;
        schema::migrate(&mut conn, &self.db, size.is_none_or(|s| s == 0))?;
        *self.conn.borrow_mut() = Some((conn, self.db_inode()?));
        Ok(())
    }

    /// An empty state.db, 0600, for SQLite to fill: SQLite would create it
    /// 0644, and gives its -wal and -shm the database's mode.
    pub(super) fn create_db(&self) -> Result<(), StateError> {
        self.dir.create_new(DB).map(drop)
    }

    /// Before SQLite opens state.db by its path: it and its -wal and -shm
    /// must be regular files of root's with one link (SQLite opens them
    /// O_NOFOLLOW, but a hard link it would write through), and 0600,
    /// since the leases hold command lines: one created with SQLite's
    /// default mode is narrowed.
    ///
    /// A database is whole pages of 512 bytes or more (a power of two): a
    /// size that is not a multiple of 512 is a file cut short, said so at
    /// once rather than found by SQLite somewhere in the middle of a read.
    pub(super) fn check_db_files(&self) -> Result<(), StateError> {
        for name in DB_FILES {
            let Some(st) = self.dir.check(name)? else { continue };
            if st.st_mode & 0o077 != 0 {
                self.dir.chmod(name, 0o600)?;
            }
            if name == DB && st.st_size % 512 != 0 {
                let detail = format!("{} bytes, not a whole number of pages: it was cut short", st.st_size);
                return Err(StateError::Corrupt { path: self.db.clone(), detail });
            }
        }
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
            self.check_db_files()?;
            *slot = Some((schema::connect(&self.db, false)?, inode));
        }
        RefMut::filter_map(slot, |s| s.as_mut().map(|(c, _)| c))
            .map_err(|_| StateError::Request("state connection unavailable".into()))
    }

    /// The size of `state.db-wal` (0 when missing or unreadable).
    pub(super) fn wal_size(&self) -> i64 {
        self.dir.stat(DB_FILES[1]).ok().flatten().map_or(0, |st| st.st_size)
    }

    /// The inode at `state.db` now (0 when missing).
    fn db_inode(&self) -> Result<u64, StateError> {
        // Missing (0): `connect` says so in its own words.
        Ok(self.dir.stat(DB).map_err(StateError::io("look up", &self.db))?.map_or(0, |st| st.st_ino))
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
        let mut bridges = self.bridges();
        for found in sidecar::scan(&mut bridges, |_, _| false)?.sidecars {
            if self.sidecar_live(&found, &mut bridges)? {
                live.push(found);
            }
        }
        Ok(live)
    }

    /// A sidecar that parses is judged like its lease; one that does not
    /// can only be judged by its lock (and without a lock file, nobody can
    /// be shown to hold it).
    pub(super) fn sidecar_live(&self, found: &sidecar::Sidecar, bridges: &mut Subdirs<'_>) -> Result<bool, StateError> {
        match &found.record {
            Some(record) => self.is_live(record, bridges),
            None => {
                let lock = SlotFiles::new(found.slot).lock;
                Ok(liveness::lock_held(bridges.get(&found.bridge)?, &lock)?.unwrap_or(false))
            }
        }
    }

    /// The state dir, every symlink resolved.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Takes the lock of a slot if nobody holds it: the caller then owns the
    /// slot and may delete a leftover host veth `{bridge}-{slot}`. `None`
    /// means a live job (or another cleaner) has it. A lock file deleted by
    /// hand is made again only if the slot's sidecar names no live process:
    /// a job whose lock file is gone is judged by its pid and start time,
    /// as everywhere else (`liveness`), and keeps its veth.
    pub fn try_lock_slot(&self, bridge: &str, slot: u16) -> Result<Option<SlotLock>, StateError> {
        check_slot(bridge, slot)?;
        let dir = self.slots.create_subdir(bridge)?;
        let files = SlotFiles::new(slot);
        if self.lock_file_missing(&dir, &files)? && self.sidecar_process_alive(&dir, &files)? {
            return Ok(None);
        }
        try_lock_slot_file(&dir, &files.lock, bridge, slot)
    }

    /// Whether nobody holds the slot, judged as [`try_lock_slot`] judges it
    /// but creating nothing (for `gc --dry-run`).
    ///
    /// [`try_lock_slot`]: StateDir::try_lock_slot
    pub fn slot_is_free(&self, bridge: &str, slot: u16) -> Result<bool, StateError> {
        check_slot(bridge, slot)?;
        let Some(dir) = self.slots.subdir(bridge, false)? else { return Ok(true) };
        let files = SlotFiles::new(slot);
        Ok(match liveness::lock_held(Some(&dir), &files.lock)? {
            Some(held) => !held,
            None => !self.sidecar_process_alive(&dir, &files)?,
        })
    }

    fn lock_file_missing(&self, dir: &PrivateDir, files: &SlotFiles) -> Result<bool, StateError> {
        Ok(dir.stat(&files.lock).map_err(StateError::io("look up", &dir.join(&files.lock)))?.is_none())
    }

    /// The slot's sidecar names a process of this boot that is alive (pid
    /// and start time).
    fn sidecar_process_alive(&self, dir: &PrivateDir, files: &SlotFiles) -> Result<bool, StateError> {
        Ok(sidecar::read(dir, files)?
            .is_some_and(|r| r.boot_id == self.boot_id && liveness::process_matches(r.pid, r.start_time)))
    }

    /// The bridges' dirs below `slots/`, each opened once per operation.
    pub(super) fn bridges(&self) -> Subdirs<'_> {
        Subdirs::new(&self.slots)
    }

    pub(super) fn is_live(&self, record: &LeaseRecord, bridges: &mut Subdirs<'_>) -> Result<bool, StateError> {
        Ok(self.judge(record, bridges, None)? == liveness::Verdict::Live)
    }

    /// Judges a lease's runner (see `liveness::judge`); a sweep over many
    /// leases passes one `snapshot` for all of them.
    pub(super) fn judge(
        &self,
        record: &LeaseRecord,
        bridges: &mut Subdirs<'_>,
        snapshot: Option<&mut liveness::LockSnapshot>,
    ) -> Result<liveness::Verdict, StateError> {
        // A name that is no bridge's (a damaged row) has no lock file to
        // consult, and must not become a path.
        let valid = check_domain_bridge(&record.bridge).is_ok();
        let proven_free = match snapshot {
            Some(snapshot) if valid => snapshot.surely_free(bridges, &record.bridge, record.slot, record.pid)?,
            _ => false,
        };
        let dir = if valid { bridges.get(&record.bridge)? } else { None };
        liveness::judge(record, dir, &self.boot_id, proven_free)
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
        let _lock = StateLock::acquire_shared(&self.dir);
        if self.db_inode().ok() == Some(ino) {
            drop(conn);
        } else {
            std::mem::forget(conn);
        }
    }
}

/// `name` in the state dir `root`, created 0700 if missing (both are
/// checked, see `private`); returned with every symlink resolved.
pub fn private_subdir(root: &Path, name: &str) -> Result<PathBuf, StateError> {
    Ok(PrivateDir::create(root)?.create_subdir(name)?.path().to_path_buf())
}

/// Bridge names become path components and slot numbers file names: refuse
/// anything that could step outside `slots/`.
pub(super) fn check_slot(bridge: &str, slot: u16) -> Result<(), StateError> {
    check_domain_bridge(bridge).map_err(|p| StateError::Request(format!("bridge {bridge:?} {p}")))?;
    if slot >= MAX_SLOTS {
        return Err(StateError::Request(format!("slot {slot} is out of range 0..={}", MAX_SLOTS - 1)));
    }
    Ok(())
}
