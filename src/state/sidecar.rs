//! The JSON copy of each lease beside its slot lock
//! (`slots/{bridge}/{slot}.json`). It lets a lost or corrupt state.db be
//! rebuilt from the jobs that are still alive, and lets an allocation check
//! that no live job holds an address the database has forgotten.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::StateError;
use super::record::LeaseRecord;
use super::slot::{MAX_SLOTS, SlotPaths};
use crate::config::check_bridge;

/// Writes the record atomically (temp file + rename), so a reader never sees
/// half a record. No fsync: after a power cut the runner is gone, its slot
/// lock is free and the file is ignored whatever it holds.
pub(crate) fn write(paths: &SlotPaths, record: &LeaseRecord) -> Result<(), StateError> {
    // Serialising plain strings and numbers cannot fail; map it anyway.
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| StateError::io("encode", &paths.json)(std::io::Error::other(e)))?;
    // 0600 like everything in the state dir: the command line may hold
    // secrets. Truncate: a crashed writer may have left a longer file.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&paths.tmp)
        .map_err(StateError::io("write", &paths.tmp))?;
    file.write_all(&text).map_err(StateError::io("write", &paths.tmp))?;
    drop(file);
    std::fs::rename(&paths.tmp, &paths.json).map_err(StateError::io("rename into", &paths.json))
}

/// Removes a sidecar; one already gone is fine.
pub(crate) fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(StateError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// A sidecar found on disk.
#[derive(Debug)]
pub(crate) struct Sidecar {
    pub bridge: String,
    pub slot: u16,
    pub path: PathBuf,
    /// `None` when the file does not parse (or names another slot).
    pub record: Option<LeaseRecord>,
}

/// Every `slots/{bridge}/{slot}.json`. Names that are not ours (no valid
/// bridge dir, no slot number) are left alone.
pub(crate) fn scan(slots_dir: &Path) -> Result<Vec<Sidecar>, StateError> {
    let mut found = Vec::new();
    for bridge_dir in read_dir(slots_dir)? {
        let Some(bridge) = bridge_dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if check_bridge(&bridge).is_err() || !bridge_dir.is_dir() {
            continue;
        }
        for path in read_dir(&bridge_dir)? {
            let slot = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|s| *s < MAX_SLOTS);
            let Some(slot) = slot else { continue };
            let record = match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice::<LeaseRecord>(&bytes).ok(),
                // Removed by a release between readdir and here.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StateError::io("read", &path)(e)),
            };
            let record = record.filter(|r| r.bridge == bridge && r.slot == slot);
            found.push(Sidecar { bridge: bridge.clone(), slot, path, record });
        }
    }
    found.sort_by(|a, b| (&a.bridge, a.slot).cmp(&(&b.bridge, b.slot)));
    Ok(found)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, StateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::io("list", dir)(e)),
    };
    entries.map(|e| e.map(|e| e.path()).map_err(StateError::io("list", dir))).collect()
}
