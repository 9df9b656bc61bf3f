//! The JSON copy of each lease beside its slot lock
//! (`slots/{bridge}/{slot}.json`), with the host ports the job publishes.
//! It lets a lost or corrupt state.db be rebuilt from the jobs that are
//! still alive (their addresses and their ports: a port whose row a rebuild
//! lost would go to the next job that asks for it while the live job's map
//! element still forwards it), and lets an allocation check that no live
//! job holds an address the database has forgotten.

use std::io::{Read, Write};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::private::{PrivateDir, Subdirs};
use super::record::LeaseRecord;
use super::slot::{MAX_SLOTS, SlotFiles, check_domain_bridge};
use crate::publish::Publish;

/// A sidecar's JSON: the lease's fields, and `published` when it has ports.
#[derive(Serialize, Deserialize)]
struct OnDisk<R> {
    #[serde(flatten)]
    record: R,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    published: Vec<Publish>,
}

/// Writes the record atomically (temp file + rename) into its bridge's
/// dir, so a reader never sees half a record. No fsync: after a power cut
/// the runner is gone, its slot lock is free and the file is ignored
/// whatever it holds.
pub(crate) fn write(
    dir: &PrivateDir,
    files: &SlotFiles,
    record: &LeaseRecord,
    published: &[Publish],
) -> Result<(), StateError> {
    let tmp = dir.join(&files.tmp);
    // Serialising plain strings and numbers cannot fail; map it anyway.
    let text = serde_json::to_vec_pretty(&OnDisk { record, published: published.to_vec() })
        .map_err(|e| StateError::io("encode", &dir.join(&files.json))(std::io::Error::other(e)))?;
    // 0600 like everything in the state dir: the command line may hold
    // secrets. New (O_EXCL): a crashed writer's temp file, or a link
    // planted at its name, is removed first, never written through.
    let mut file = dir.create_temp(&files.tmp)?;
    file.write_all(&text).map_err(StateError::io("write", &tmp))?;
    drop(file);
    dir.rename(&files.tmp, &files.json)
}

/// The record in a slot's sidecar; `None` if there is none or it does not
/// parse (or names another slot).
pub(crate) fn read(dir: &PrivateDir, files: &SlotFiles) -> Result<Option<LeaseRecord>, StateError> {
    let Some(mut file) = dir.open_file(&files.json, OFlag::O_RDONLY, "read")? else { return Ok(None) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(StateError::io("read", &dir.join(&files.json)))?;
    Ok(parse(&bytes).map(|d| d.record).filter(|r| files.json == SlotFiles::new(r.slot).json))
}

fn parse(bytes: &[u8]) -> Option<OnDisk<LeaseRecord>> {
    serde_json::from_slice(bytes).ok()
}

/// A sidecar found on disk.
#[derive(Debug)]
pub(crate) struct Sidecar {
    pub bridge: String,
    pub slot: u16,
    /// Its file name in its bridge's dir.
    pub name: String,
    pub path: PathBuf,
    /// `None` when the file does not parse (or names another slot), or
    /// was not read.
    pub record: Option<LeaseRecord>,
    /// The host ports the record says the job publishes.
    pub published: Vec<Publish>,
    /// False when the caller asked for it not to be read.
    pub read: bool,
}

/// A temp file (`.N.json.tmp`) in a bridge's dir: a writer that died or
/// failed (ENOSPC) between creating one and renaming it left it. They are
/// only written under the state lock, so one found by a holder of that lock
/// is nobody's.
#[derive(Debug)]
pub(crate) struct Temp {
    pub bridge: String,
    pub name: String,
    pub path: PathBuf,
}

/// What one pass over the bridges' dirs found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub sidecars: Vec<Sidecar>,
    pub temps: Vec<Temp>,
}

/// Every `slots/{bridge}/{slot}.json`, and every temp file beside them, in
/// one listing of each dir. Names that are not ours (no valid bridge dir,
/// no slot number) are left alone; a link or a file of another user's at
/// one of our names is refused (see `private`). Those `unread` names
/// (bridge, slot) are listed without being opened.
pub(crate) fn scan(bridges: &mut Subdirs<'_>, unread: impl Fn(&str, u16) -> bool) -> Result<Scan, StateError> {
    let mut found = Scan::default();
    for bridge in bridge_names(bridges)? {
        // Removed between the listing and here: nothing to scan.
        let Some((dir, entries)) = bridges.listing(&bridge)? else { continue };
        for (name, _) in entries {
            if let Some(slot) = name.strip_suffix(".json").and_then(slot_number) {
                let path = dir.join(name);
                if unread(&bridge, slot) {
                    found.sidecars.push(Sidecar {
                        bridge: bridge.clone(),
                        slot,
                        name: name.clone(),
                        path,
                        record: None,
                        published: Vec::new(),
                        read: false,
                    });
                    continue;
                }
                // Missing: removed by a release between the listing and here.
                let Some(mut file) = dir.open_file(name, OFlag::O_RDONLY, "read")? else { continue };
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(StateError::io("read", &path))?;
                let on_disk = parse(&bytes).filter(|d| d.record.bridge == bridge && d.record.slot == slot);
                let (record, published) = on_disk.map_or((None, Vec::new()), |d| (Some(d.record), d.published));
                found.sidecars.push(Sidecar {
                    bridge: bridge.clone(),
                    slot,
                    name: name.clone(),
                    path,
                    record,
                    published,
                    read: true,
                });
            } else if name.strip_prefix('.').and_then(|n| n.strip_suffix(".json.tmp")).and_then(slot_number).is_some() {
                found.temps.push(Temp { bridge: bridge.clone(), path: dir.join(name), name: name.clone() });
            }
        }
    }
    found.sidecars.sort_by(|a, b| (&a.bridge, a.slot).cmp(&(&b.bridge, b.slot)));
    found.temps.sort_by(|a, b| (&a.bridge, &a.name).cmp(&(&b.bridge, &b.name)));
    Ok(found)
}

/// The slot a file name's number names, if it is one.
fn slot_number(digits: &str) -> Option<u16> {
    digits.parse::<u16>().ok().filter(|s| *s < MAX_SLOTS)
}

/// The names below `slots/` that may be bridges' dirs. Names that are not
/// ours (no valid bridge name, not a directory) are left alone, except a
/// symlink, which opening it refuses.
fn bridge_names(bridges: &Subdirs<'_>) -> Result<Vec<String>, StateError> {
    let mut names = Vec::new();
    for bridge in bridges.parent().names()? {
        if check_domain_bridge(&bridge).is_err() {
            continue;
        }
        let st = bridges.parent().stat(&bridge).map_err(StateError::io("look up", &bridges.parent().join(&bridge)))?;
        if st.is_some_and(|st| !matches!(st.st_mode & libc::S_IFMT, libc::S_IFDIR | libc::S_IFLNK)) {
            continue;
        }
        names.push(bridge);
    }
    Ok(names)
}
