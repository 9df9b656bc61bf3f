//! Is the runner that holds a lease still alive?
//!
//! The truth is the slot lock: the runner holds it for the job's whole life
//! and the kernel drops it on any death, already at the zombie stage, which
//! neither `kill(pid, 0)` nor a PID (reused by the next process) can tell.
//! A lease from another boot is stale whatever its lock says. The recorded
//! pid + start time only decide when the lock cannot be consulted (its file
//! was deleted or cannot be opened).

use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

use super::error::StateError;
use super::record::LeaseRecord;
use crate::sys;

/// Whether someone holds the lock file at `path`; `None` when that cannot
/// be known because the file cannot be opened. Opened read-only and never
/// created: this must also work on a state dir we cannot write, and a
/// missing file proves nothing about a holder of the unlinked one.
pub(crate) fn lock_held(path: &Path) -> Result<Option<bool>, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
            return Ok(None);
        }
        Err(e) => return Err(StateError::io("open lock file", path)(e)),
    };
    // Taken and dropped at once: holding it longer would make a concurrent
    // allocation skip the slot for nothing.
    match file.try_lock() {
        Ok(()) => Ok(Some(false)),
        Err(TryLockError::WouldBlock) => Ok(Some(true)),
        Err(TryLockError::Error(e)) => Err(StateError::io("lock", path)(e)),
    }
}

/// Whether the lease's runner is alive.
pub(crate) fn is_live(record: &LeaseRecord, lock_path: &Path, boot_id: &str) -> Result<bool, StateError> {
    if record.boot_id != boot_id {
        return Ok(false);
    }
    Ok(match lock_held(lock_path)? {
        Some(held) => held,
        None => process_matches(record.pid, record.start_time),
    })
}

/// The pid names the same process as when the lease was taken.
fn process_matches(pid: u32, start_time: u64) -> bool {
    libc::pid_t::try_from(pid).ok().and_then(|pid| sys::process_start_time(pid).ok()).is_some_and(|t| t == start_time)
}
