//! Is the runner that holds a lease still alive?
//!
//! The truth is the slot lock: the runner holds it for the job's whole life
//! and the kernel drops it on any death, already at the zombie stage, which
//! neither `kill(pid, 0)` nor a PID (reused by the next process) can tell.
//! A lease from another boot is stale whatever its lock says. The recorded
//! pid + start time only decide when the lock cannot be consulted (its file
//! was deleted or cannot be opened).

use std::fs::TryLockError;
use std::io::ErrorKind;

use nix::fcntl::OFlag;

use super::error::StateError;
use super::private::PrivateDir;
use super::record::LeaseRecord;
use crate::sys;

/// Whether someone holds the lock file `name` in `dir` (`None`: the
/// bridge's dir is missing); `None` when that cannot be known because the
/// file cannot be opened. Opened read-only and never created: this must
/// also work on a state dir we cannot write, and a missing file proves
/// nothing about a holder of the unlinked one.
pub(crate) fn lock_held(dir: Option<&PrivateDir>, name: &str) -> Result<Option<bool>, StateError> {
    let Some(dir) = dir else { return Ok(None) };
    let file = match dir.open_file(name, OFlag::O_RDONLY, "open lock file") {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(None),
        Err(StateError::Io { source, .. }) if source.kind() == ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(e),
    };
    // Taken and dropped at once: holding it longer would make a concurrent
    // allocation skip the slot for nothing.
    match file.try_lock() {
        Ok(()) => Ok(Some(false)),
        Err(TryLockError::WouldBlock) => Ok(Some(true)),
        Err(TryLockError::Error(e)) => Err(StateError::io("lock", &dir.join(name))(e)),
    }
}

/// What a lease's judgement found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Live,
    /// Dead, and its slot lock was free when probed: nobody holds the slot,
    /// so nobody can own what its files hold (under the state lock, nobody
    /// can lease it meanwhile).
    DeadLockFree,
    /// Dead by its boot id or by the pid fallback: its slot may be held.
    Dead,
}

/// Judges the lease's runner. `dir` is the lease's bridge dir (`None` if
/// missing).
pub(crate) fn judge(
    record: &LeaseRecord,
    dir: Option<&PrivateDir>,
    lock: &str,
    boot_id: &str,
) -> Result<Verdict, StateError> {
    if record.boot_id != boot_id {
        return Ok(Verdict::Dead);
    }
    Ok(match lock_held(dir, lock)? {
        Some(true) => Verdict::Live,
        Some(false) => Verdict::DeadLockFree,
        None if process_matches(record.pid, record.start_time) => Verdict::Live,
        None => Verdict::Dead,
    })
}

/// Whether the lease's runner is alive (see [`judge`]).
pub(crate) fn is_live(
    record: &LeaseRecord,
    dir: Option<&PrivateDir>,
    lock: &str,
    boot_id: &str,
) -> Result<bool, StateError> {
    Ok(judge(record, dir, lock, boot_id)? == Verdict::Live)
}

/// The pid names the same process as when the lease was taken.
pub(crate) fn process_matches(pid: u32, start_time: u64) -> bool {
    libc::pid_t::try_from(pid).ok().and_then(|pid| sys::process_start_time(pid).ok()).is_some_and(|t| t == start_time)
}
