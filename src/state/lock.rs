//! flock(2)-based locks: the state lock that serialises critical sections,
//! and the per-slot locks that tell live jobs from dead ones.
//!
//! flock locks belong to an open file description, and the kernel drops
//! them when the last fd to it closes, which includes every kind of death.
//! std opens files with O_CLOEXEC, so an exec'd child never inherits one.
//! Lock files are never unlinked: a process waiting on an unlinked file
//! would lock an inode nobody else can find.

use std::fs::{File, TryLockError};

use nix::fcntl::OFlag;

use super::error::StateError;
use super::private::PrivateDir;
use super::slot::iface_name;

/// The state lock's file, in the state dir.
pub(crate) const STATE_LOCK: &str = "state.lock";

/// Opens (creating if needed) a lock file, readable and writable by root
/// only, never through a symlink.
fn open_lock_file(dir: &PrivateDir, name: &str) -> Result<File, StateError> {
    dir.open_file(name, OFlag::O_RDWR | OFlag::O_CREAT, "open lock file")?
        .ok_or_else(|| StateError::io("open lock file", &dir.join(name))(std::io::ErrorKind::NotFound.into()))
}

/// Exclusive hold on `state.lock`; released on drop.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

impl StateLock {
    /// Blocks until no other repeatr is inside a critical section. Each one
    /// is a few milliseconds, so waiting is always short.
    pub(crate) fn acquire(dir: &PrivateDir) -> Result<StateLock, StateError> {
        let file = open_lock_file(dir, STATE_LOCK)?;
        file.lock().map_err(StateError::io("lock", &dir.join(STATE_LOCK)))?;
        Ok(StateLock { _file: file })
    }

    /// Shared hold for readers: waits out a writer, excludes `rebuild`
    /// (which moves state.db), and lets other readers in.
    pub(crate) fn acquire_shared(dir: &PrivateDir) -> Result<StateLock, StateError> {
        let file = open_lock_file(dir, STATE_LOCK)?;
        file.lock_shared().map_err(StateError::io("lock", &dir.join(STATE_LOCK)))?;
        Ok(StateLock { _file: file })
    }
}

/// An exclusive hold on one bridge slot's lock file. While it exists the
/// slot (and the host veth `{bridge}-{slot}`) belongs to its holder; dropping
/// it frees the slot.
#[derive(Debug)]
pub struct SlotLock {
    _file: File,
    bridge: String,
    slot: u16,
}

impl SlotLock {
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The bridge (hub or leaf) the slot is on.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The host-side veth name this slot owns.
    pub fn iface(&self) -> String {
        iface_name(&self.bridge, self.slot)
    }
}

/// Takes the lock `name` in `dir` without waiting: `None` when someone
/// holds it.
pub(crate) fn try_lock_slot_file(
    dir: &PrivateDir,
    name: &str,
    bridge: &str,
    slot: u16,
) -> Result<Option<SlotLock>, StateError> {
    let file = open_lock_file(dir, name)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(SlotLock { _file: file, bridge: bridge.to_string(), slot })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(StateError::io("lock", &dir.join(name))(e)),
    }
}
