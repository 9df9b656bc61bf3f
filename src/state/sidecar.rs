//! The JSON copy of each lease beside its slot lock
//! (`slots/{bridge}/{slot}.json`). It lets a lost or corrupt state.db be
//! rebuilt from the jobs that are still alive, and lets an allocation check
//! that no live job holds an address the database has forgotten.

use std::io::{Read, Write};
use std::path::PathBuf;

use nix::fcntl::OFlag;

use super::error::StateError;
use super::private::{PrivateDir, Subdirs};
use super::record::LeaseRecord;
use super::slot::{MAX_SLOTS, SlotFiles};
use crate::config::check_bridge;

/// Writes the record atomically (temp file + rename) into its bridge's
/// dir, so a reader never sees half a record. No fsync: after a power cut
/// the runner is gone, its slot lock is free and the file is ignored
/// whatever it holds.
pub(crate) fn write(dir: &PrivateDir, files: &SlotFiles, record: &LeaseRecord) -> Result<(), StateError> {
    let tmp = dir.join(&files.tmp);
    // Serialising plain strings and numbers cannot fail; map it anyway.
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| StateError::io("encode", &dir.join(&files.json))(std::io::Error::other(e)))?;
    // 0600 like everything in the state dir: the command line may hold
    // secrets. New (O_EXCL): a crashed writer's temp file, or a link
    // planted at its name, is removed first, never written through.
    let mut file = dir.create_temp(&files.tmp)?;
    file.write_all(&text).map_err(StateError::io("write", &tmp))?;
    drop(file);
    dir.rename(&files.tmp, &files.json)
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
/// bridge dir, no slot number) are left alone; a link or a file of
/// another user's at one of our names is refused (see `private`).
pub(crate) fn scan(bridges: &mut Subdirs<'_>) -> Result<Vec<Sidecar>, StateError> {
    let mut found = Vec::new();
    for bridge in bridges.parent().names()? {
        if check_bridge(&bridge).is_err() {
            continue;
        }
        let st = bridges.parent().stat(&bridge).map_err(StateError::io("look up", &bridges.parent().join(&bridge)))?;
        // Anything but a directory is not ours, except a symlink, which
        // `subdir` refuses.
        if st.is_some_and(|st| !matches!(st.st_mode & libc::S_IFMT, libc::S_IFDIR | libc::S_IFLNK)) {
            continue;
        }
        // Removed between the listing and here: nothing to scan.
        let Some(dir) = bridges.get(&bridge)? else { continue };
        for name in dir.names()? {
            let slot = name.strip_suffix(".json").and_then(|n| n.parse::<u16>().ok()).filter(|s| *s < MAX_SLOTS);
            let Some(slot) = slot else { continue };
            let path = dir.join(&name);
            // Missing: removed by a release between the listing and here.
            let Some(mut file) = dir.open_file(&name, OFlag::O_RDONLY, "read")? else { continue };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(StateError::io("read", &path))?;
            let record = serde_json::from_slice::<LeaseRecord>(&bytes).ok();
            let record = record.filter(|r| r.bridge == bridge && r.slot == slot);
            found.push(Sidecar { bridge: bridge.clone(), slot, path, record });
        }
    }
    found.sort_by(|a, b| (&a.bridge, a.slot).cmp(&(&b.bridge, b.slot)));
    Ok(found)
}
