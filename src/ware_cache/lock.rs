//! The cache's lock files, `locks/<key>` (use) and `locks/<key>.fill`.
//!
//! A job holds its entry's use lock shared for its whole life; eviction
//! takes it exclusive without waiting, so an entry in use is never
//! evicted. The fill lock is exclusive while one runner unpacks an absent
//! entry; the others wait on it, then find the entry. flock locks belong
//! to an open file description: the kernel drops them when their holder
//! dies, so a crash never leaves an entry locked.
//!
//! Eviction unlinks the lock files it holds, so taking one is
//! lock-then-verify (as `state::RemovableLock`): after the flock, the path
//! must still name the inode that was locked, or the taker opens it again.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::CacheError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// A held lock file.
#[derive(Debug)]
pub(crate) struct Held {
    file: File,
    path: PathBuf,
}

impl Held {
    /// Takes the lock at `path` (created if missing); with `wait` false,
    /// `None` when someone else holds it in a conflicting mode.
    pub(crate) fn take(path: &Path, mode: Mode, wait: bool) -> Result<Option<Held>, CacheError> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(CacheError::io("open the lock file", path))?;
            let locked = match (mode, wait) {
                (Mode::Shared, true) => file.lock_shared().map(|()| true),
                (Mode::Exclusive, true) => file.lock().map(|()| true),
                (Mode::Shared, false) => flatten(file.try_lock_shared()),
                (Mode::Exclusive, false) => flatten(file.try_lock()),
            }
            .map_err(CacheError::io("lock", path))?;
            if !locked {
                return Ok(None);
            }
            let held = file.metadata().map_err(CacheError::io("look up", path))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(Held { file, path: path.to_path_buf() }));
                }
                // Unlinked by an evictor meanwhile (and maybe made again).
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CacheError::io("look up", path)(e)),
            }
        }
    }

    /// The file's mtime is the entry's last use, which eviction sorts by.
    pub(crate) fn touch(&self) -> Result<(), CacheError> {
        let now = std::fs::FileTimes::new().set_modified(std::time::SystemTime::now());
        self.file.set_times(now).map_err(CacheError::io("mark the use of", &self.path))
    }

    /// Unlinks the file while it is still held, then releases it.
    pub(crate) fn remove(self) -> Result<(), CacheError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io("remove", &self.path)(e)),
        }
    }
}

fn flatten(r: Result<(), TryLockError>) -> std::io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
