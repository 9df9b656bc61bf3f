//! A lock file that its holder unlinks while it still holds it: for locks
//! named by a job id (`outputs/<job>.lock`, `jobs/<job>.lock`), of which
//! one per id ever run would pile up if they stayed.
//!
//! Unlinking a lock file is safe only if taking it is lock-then-verify:
//! after the flock, the path must still name the inode that was locked. A
//! process that opened the file just before its holder unlinked it locks an
//! orphan inode, sees the mismatch and opens the path again; so two
//! processes never both hold "the" lock of one name.

use std::fs::{File, TryLockError};

use nix::fcntl::OFlag;

use super::error::StateError;
use super::private::PrivateDir;

/// An exclusive hold on the lock file `name` of one [`PrivateDir`];
/// dropping it releases the lock and leaves the file, [`remove`] unlinks it
/// first.
///
/// [`remove`]: RemovableLock::remove
#[derive(Debug)]
pub(crate) struct RemovableLock {
    file: File,
    name: String,
    /// The file's size when the lock was taken.
    len: u64,
}

impl RemovableLock {
    /// Takes the lock file `name` in `dir`; `None` if someone holds it.
    /// With `create` a missing file is created (0600); without, a missing
    /// one is `None` too (a look that must leave no file behind). Opened
    /// as the state dir's files are (`PrivateDir::open_file`: never through
    /// a link).
    pub(crate) fn try_take(dir: &PrivateDir, name: &str, create: bool) -> Result<Option<RemovableLock>, StateError> {
        let flags = if create { OFlag::O_RDWR | OFlag::O_CREAT } else { OFlag::O_RDWR };
        let path = || dir.join(name);
        loop {
            let Some(file) = dir.open_file(name, flags, "open lock file")? else {
                // With O_CREAT, only when `dir` itself is gone.
                return if create {
                    Err(StateError::io("create", &path())(std::io::ErrorKind::NotFound.into()))
                } else {
                    Ok(None)
                };
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(StateError::io("lock", &path())(e)),
            }
            let held = nix::sys::stat::fstat(&file).map_err(|e| StateError::io("look up", &path())(e.into()))?;
            match dir.stat(name).map_err(StateError::io("look up", &path()))? {
                Some(now) if now.st_dev == held.st_dev && now.st_ino == held.st_ino => {
                    let len = u64::try_from(held.st_size).unwrap_or(0);
                    return Ok(Some(RemovableLock { file, name: name.to_string(), len }));
                }
                // Unlinked (and maybe made again) by its holder meanwhile.
                Some(_) => continue,
                None if create => continue,
                None => return Ok(None),
            }
        }
    }

    /// The locked file, for what its holder keeps in it.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Whether the file was empty when it was taken (a dead holder's file
    /// still holds what that holder wrote).
    pub(crate) fn was_empty(&self) -> bool {
        self.len == 0
    }

    /// Unlinks the lock file from `dir` (the one it was taken in) while it
    /// is still held, then releases it.
    pub(crate) fn remove(self, dir: &PrivateDir) -> Result<(), StateError> {
        dir.remove(&self.name)?;
        drop(self.file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, PrivateDir) {
        let t = tempfile::tempdir().unwrap();
        let d = PrivateDir::open(t.path(), false).unwrap().unwrap();
        (t, d)
    }

    #[test]
    fn a_held_lock_is_not_taken_twice_and_a_missing_one_is_not_created() {
        let (t, d) = dir();
        assert!(RemovableLock::try_take(&d, "j.lock", false).unwrap().is_none());
        assert!(!t.path().join("j.lock").exists(), "a look created the file");
        let held = RemovableLock::try_take(&d, "j.lock", true).unwrap().expect("free");
        assert!(held.was_empty());
        assert!(RemovableLock::try_take(&d, "j.lock", true).unwrap().is_none());
        assert!(RemovableLock::try_take(&d, "j.lock", false).unwrap().is_none());
        held.remove(&d).unwrap();
        assert!(!t.path().join("j.lock").exists());
    }

    #[test]
    fn a_lock_unlinked_by_its_holder_is_not_taken_through_a_stale_open() {
        let (t, d) = dir();
        let held = RemovableLock::try_take(&d, "j.lock", true).unwrap().unwrap();
        // Someone opened the file before the holder removed it...
        let stale = File::open(t.path().join("j.lock")).unwrap();
        held.remove(&d).unwrap();
        stale.try_lock().unwrap();
        // ...and holds the orphan inode: a new taker must still get the path's lock.
        let fresh = RemovableLock::try_take(&d, "j.lock", true).unwrap().expect("the path's lock is free");
        assert!(RemovableLock::try_take(&d, "j.lock", true).unwrap().is_none());
        fresh.remove(&d).unwrap();
    }

    #[test]
    fn a_dead_holders_file_is_taken_as_it_is() {
        let (t, d) = dir();
        std::fs::write(t.path().join("j.lock"), "old\n").unwrap();
        let taken = RemovableLock::try_take(&d, "j.lock", false).unwrap().expect("free");
        assert!(!taken.was_empty());
        drop(taken);
        assert!(t.path().join("j.lock").exists(), "dropping a lock leaves its file");
    }
}
