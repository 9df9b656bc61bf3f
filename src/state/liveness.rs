//! Is the runner that holds a lease still alive?
//!
//! The truth is the slot lock: the runner holds it for the job's whole life
//! and the kernel drops it on any death, already at the zombie stage, which
//! neither `kill(pid, 0)` nor a PID (reused by the next process) can tell.
//! A lease from another boot is stale whatever its lock says. The recorded
//! pid + start time only decide when the lock cannot be consulted (its file
//! was deleted or cannot be opened).

use std::collections::{HashMap, HashSet};
use std::fs::TryLockError;
use std::io::ErrorKind;

use nix::fcntl::OFlag;
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};

use super::error::StateError;
use super::private::{PrivateDir, Subdirs};
use super::record::LeaseRecord;
use super::slot::SlotFiles;
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

/// Which inodes some lock is on, from one read of `/proc/locks`, so that a
/// sweep over many leases (`gc`, `leases`) need not open and probe every
/// slot lock (four syscalls each: 10,000 stale leases cost `gc` ~40 ms in
/// those alone). It only ever proves a lock free: a lock file whose inode
/// no lock names is free; one it names is probed as before, since the
/// number may be another filesystem's inode or its holder may have died
/// since. Taken while no row can be committed (under the state lock that
/// the rows it judges were read under, or after they were read): a lease's
/// holder locks its slot before its row is committed, so a live row's lock
/// is listed.
///
/// Listed, that is, unless another lock goes away while the file is read:
/// `/proc/locks` is a seq_file, read a page per `read` call, each call
/// resuming at a position in the kernel's list, so a lock released before
/// that position between two calls shifts the rest back and one is never
/// shown. Locks come and go all the time (every command flocks
/// `state.lock`), so a missing inode alone proves nothing; it proves the
/// lock free only if the lease's runner pid is not running either, from
/// one listing of /proc made after the read. A live job's runner is
/// running, so its lease is always probed; a dead runner's lease, the
/// case this is for, has no process.
pub(crate) struct LockSnapshot {
    /// `None`: this view of the kernel's locks may leave some out, so it
    /// proves nothing.
    locked: Option<HashSet<u64>>,
    /// The pids running when the snapshot was taken (`None`: unknown).
    running: Option<HashSet<u32>>,
    /// Per bridge dir, its slot locks' inode numbers by slot (`None`: a
    /// filesystem whose directory entries may not carry the inode number
    /// that `/proc/locks` prints).
    inodes: HashMap<String, Option<HashMap<u16, u64>>>,
}

impl LockSnapshot {
    /// Reads `/proc/locks`; a snapshot that proves nothing if it cannot.
    /// The read takes the kernel's lock table for writing (fs/locks.c,
    /// `locks_start`: `percpu_down_write(&file_rwsem)`), which first waits
    /// for an RCU grace period: milliseconds, however few locks there are.
    pub(crate) fn take() -> LockSnapshot {
        let locked = if procfs_sees_every_pid() {
            std::fs::read_to_string("/proc/locks").ok().map(|text| locked_inodes(&text))
        } else {
            None
        };
        // After the locks: a runner running through both reads is in this.
        let running = locked.as_ref().and_then(|_| running_pids());
        LockSnapshot { locked, running, inodes: HashMap::new() }
    }

    /// A snapshot that proves nothing: every lock is probed.
    pub(crate) fn none() -> LockSnapshot {
        LockSnapshot { locked: None, running: None, inodes: HashMap::new() }
    }

    /// Whether the lock of `slot` in the dir of `bridge`, of a lease whose
    /// runner was `pid`, is certainly free. Reads the dir's listing once per
    /// snapshot. A missing file is not free here: its holder may hold the
    /// unlinked inode (see [`lock_held`]).
    pub(crate) fn surely_free(
        &mut self,
        bridges: &mut Subdirs<'_>,
        bridge: &str,
        slot: u16,
        pid: u32,
    ) -> Result<bool, StateError> {
        let (Some(locked), Some(running)) = (&self.locked, &self.running) else { return Ok(false) };
        if running.contains(&pid) {
            return Ok(false);
        }
        if !self.inodes.contains_key(bridge) {
            self.inodes.insert(bridge.to_string(), lock_inodes(bridges, bridge)?);
        }
        let ino = self.inodes.get(bridge).and_then(Option::as_ref).and_then(|m| m.get(&slot));
        Ok(ino.is_some_and(|ino| !locked.contains(ino)))
    }
}

/// The pids in one listing of /proc.
fn running_pids() -> Option<HashSet<u32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// `/proc/locks` leaves out a lock whose owner has no pid in the pid
/// namespace of the procfs read (fs/locks.c, `locks_show`: a lock for which
/// `locks_translate_pid` gives 0): complete only in the initial pid
/// namespace's procfs. Kernel threads live only there, and kthreadd is
/// always pid 2: a /proc that shows pid 2 as a kernel thread (PF_KTHREAD in
/// its stat flags) belongs to the initial pid namespace.
fn procfs_sees_every_pid() -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = std::fs::read_to_string("/proc/2/stat") else { return false };
    // After the comm, which ends with the last ')': state, ppid, pgrp,
    // session, tty_nr, tpgid, flags (field 9).
    let flags = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok());
    flags.is_some_and(|f| f & PF_KTHREAD != 0)
}

/// The inode numbers of every lock in `/proc/locks` text, of any kind
/// (more inodes than flocks only make more probes): lines such as
/// `1: FLOCK  ADVISORY  WRITE 8694 00:28:3212 0 EOF`, the id
/// `MAJOR:MINOR:INODE`, a waiter's line (`1: -> FLOCK ...`) alike.
fn locked_inodes(text: &str) -> HashSet<u64> {
    text.lines()
        .filter_map(|line| {
            let id = line.split_whitespace().find(|t| t.bytes().filter(|b| *b == b':').count() == 2)?;
            id.rsplit(':').next()?.parse::<u64>().ok()
        })
        .collect()
}

/// The inode numbers of `dir`'s slot locks, on the filesystems whose
/// directory entries carry the inode's own number, which `/proc/locks`
/// prints (`i_ino`); `None` on others (overlayfs may give the lower or
/// upper file's, FUSE and NFS what the server says).
fn lock_inodes(bridges: &mut Subdirs<'_>, bridge: &str) -> Result<Option<HashMap<u16, u64>>, StateError> {
    let trusted = [TMPFS_MAGIC, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC];
    let Some((dir, entries)) = bridges.listing(bridge)? else { return Ok(None) };
    if !dir.fs_type().is_some_and(|t| trusted.contains(&t)) {
        return Ok(None);
    }
    Ok(Some(entries.iter().filter_map(|(name, ino)| Some((SlotFiles::slot_of_lock(name)?, *ino))).collect()))
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

/// Judges the lease's runner by its slot's lock. `dir` is the lease's
/// bridge dir (`None` if missing); `proven_free`: a [`LockSnapshot`] proved
/// that lock free, so it needs no probe.
pub(crate) fn judge(
    record: &LeaseRecord,
    dir: Option<&PrivateDir>,
    boot_id: &str,
    proven_free: bool,
) -> Result<Verdict, StateError> {
    if record.boot_id != boot_id {
        return Ok(Verdict::Dead);
    }
    if proven_free && dir.is_some() {
        return Ok(Verdict::DeadLockFree);
    }
    Ok(match lock_held(dir, &SlotFiles::lock_name(record.slot))? {
        Some(true) => Verdict::Live,
        Some(false) => Verdict::DeadLockFree,
        None if process_matches(record.pid, record.start_time) => Verdict::Live,
        None => Verdict::Dead,
    })
}

/// Whether the lease's runner is alive (see [`judge`]).
pub(crate) fn is_live(record: &LeaseRecord, dir: Option<&PrivateDir>, boot_id: &str) -> Result<bool, StateError> {
    Ok(judge(record, dir, boot_id, false)? == Verdict::Live)
}

/// The pid names the same process as when the lease was taken.
pub(crate) fn process_matches(pid: u32, start_time: u64) -> bool {
    libc::pid_t::try_from(pid).ok().and_then(|pid| sys::process_start_time(pid).ok()).is_some_and(|t| t == start_time)
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn every_lock_line_names_its_inode() {
        let text = "1: FLOCK  ADVISORY  WRITE 8694 00:28:3212 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 8700 00:28:3212 0 EOF\n\
                    2: POSIX  ADVISORY  READ 8694 fd:01:15 128 128\n\
                    3: OFDLCK ADVISORY  WRITE -1 00:1b:99 0 EOF\n\
                    garbage line\n";
        assert_eq!(locked_inodes(text), HashSet::from([3212, 15, 99]));
    }

    #[test]
    fn the_test_hosts_procfs_is_the_initial_pid_namespaces() {
        // The suite runs on the host (CI as root, outside any container): if
        // this fails, the snapshot proves nothing there and gc probes every
        // lock again.
        assert!(procfs_sees_every_pid());
    }

    #[test]
    fn a_snapshot_proves_free_only_locks_nobody_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let slots = PrivateDir::create(&tmp.path().join("slots")).unwrap();
        let dir = slots.create_subdir("b").unwrap();
        for slot in 0..3 {
            File::create(dir.join(&SlotFiles::lock_name(slot))).unwrap();
        }
        // Another open file description, as another runner's would be.
        let held = File::open(dir.join(&SlotFiles::lock_name(1))).unwrap();
        held.lock().unwrap();
        let mut bridges = Subdirs::new(&slots);
        // The kernel's list names the held lock (a read can miss it while
        // other tests' locks come and go, see LockSnapshot: so a few reads).
        let ino = std::os::unix::fs::MetadataExt::ino(&held.metadata().unwrap());
        let listed = (0..20).any(|_| LockSnapshot::take().locked.is_some_and(|l| l.contains(&ino)));
        assert!(listed, "/proc/locks never listed a held flock");
        // The rest judges that view, whatever other locks did meanwhile.
        let mut snapshot = LockSnapshot::take();
        snapshot.locked = Some(HashSet::from([ino]));
        snapshot.running = Some(HashSet::new());
        let dead = dead_pid();
        assert!(snapshot.surely_free(&mut bridges, "b", 0, dead).unwrap());
        assert!(!snapshot.surely_free(&mut bridges, "b", 1, dead).unwrap(), "a held lock is never proven free");
        assert!(snapshot.surely_free(&mut bridges, "b", 2, dead).unwrap());
        assert!(!snapshot.surely_free(&mut bridges, "b", 3, dead).unwrap(), "a missing lock file proves nothing");
        assert!(!snapshot.surely_free(&mut bridges, "c", 0, dead).unwrap(), "nor does a missing dir");
        drop(held);
        // The snapshot is of its moment: a lock freed since is probed.
        assert!(!snapshot.surely_free(&mut bridges, "b", 1, dead).unwrap());
        assert!(LockSnapshot::take().surely_free(&mut bridges, "b", 1, dead).unwrap());
    }

    /// A read of /proc/locks can miss a held lock while other locks come
    /// and go (see [`LockSnapshot`]): a snapshot that missed it still
    /// proves nothing of a lease whose runner is running.
    #[test]
    fn a_lock_the_read_missed_is_not_free_while_its_runner_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let slots = PrivateDir::create(&tmp.path().join("slots")).unwrap();
        let dir = slots.create_subdir("b").unwrap();
        File::create(dir.join(&SlotFiles::lock_name(0))).unwrap();
        let held = File::open(dir.join(&SlotFiles::lock_name(0))).unwrap();
        held.lock().unwrap();
        let mut bridges = Subdirs::new(&slots);
        let mut missed = LockSnapshot::take();
        // What the read would have shown had a lock before ours gone away
        // between two pages of it.
        missed.locked = Some(HashSet::new());
        assert!(!missed.surely_free(&mut bridges, "b", 0, std::process::id()).unwrap());
    }

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }
}
