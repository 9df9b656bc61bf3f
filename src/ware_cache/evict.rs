//! Eviction: the least recently used entries go until the cache fits its
//! budget; an entry in use (its use lock held by a job) always stays.

use std::fs;
use std::io;
use std::time::SystemTime;

use serde::Serialize;

use super::error::CacheError;
use super::lock::{Held, Mode};
use super::store::{Cache, boot_id, read_meta, write_meta};

/// One entry as `gc` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub key: String,
    pub bytes: u64,
    /// Seconds since the epoch of its last use.
    pub last_used: u64,
}

/// What an eviction did (or, dry, would do).
#[derive(Debug, Default, Serialize)]
pub struct Eviction {
    pub dry_run: bool,
    pub budget: u64,
    /// All entries together, before.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub evicted: Vec<EntryInfo>,
    /// Over budget but in use: kept.
    pub in_use: Vec<EntryInfo>,
    /// Leftover temp dirs of dead runners, and index records of gone
    /// entries, removed.
    pub leftovers_removed: u64,
}

impl Cache {
    /// Every published entry, least recently used first.
    pub fn list(&self) -> Result<Vec<EntryInfo>, CacheError> {
        let entries = self.dir().join("entries");
        let mut out = Vec::new();
        for ent in fs::read_dir(&entries).map_err(CacheError::io("list", &entries))? {
            let ent = ent.map_err(CacheError::io("list", &entries))?;
            let Some(key) = ent.file_name().to_str().map(String::from) else { continue };
            let Ok(meta) = read_meta(&ent.path()) else { continue };
            let used = fs::metadata(self.use_lock(&key)).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            let last_used = used.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            out.push(EntryInfo { key, bytes: meta.bytes, last_used });
        }
        out.sort_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)));
        Ok(out)
    }

    /// Evicts least recently used entries not in use until all of them
    /// take at most `budget` bytes; `dry_run`: only says which.
    pub fn evict(&self, budget: u64, dry_run: bool) -> Result<Eviction, CacheError> {
        let list = self.list()?;
        let total: u64 = list.iter().map(|e| e.bytes).sum();
        let mut out = Eviction { dry_run, budget, bytes_before: total, bytes_after: total, ..Default::default() };
        for info in list {
            if out.bytes_after <= budget {
                break;
            }
            let Some(held) = Held::take(&self.use_lock(&info.key), Mode::Exclusive, false)? else {
                out.in_use.push(info);
                continue;
            };
            if !dry_run {
                self.discard(&info.key)?;
                held.remove()?;
                if let Some(fill) = Held::take(&self.fill_lock(&info.key), Mode::Exclusive, false)? {
                    fill.remove()?;
                }
            }
            out.bytes_after -= info.bytes;
            out.evicted.push(info);
        }
        if !dry_run {
            out.leftovers_removed = self.remove_leftovers()?;
        }
        Ok(out)
    }

    /// Syncs the cache's filesystem and marks this boot's entries durable,
    /// so that they survive a reboot (see `store`).
    pub fn mark_durable(&self) -> Result<(), CacheError> {
        let boot = boot_id();
        let mut pending = Vec::new();
        for info in self.list()? {
            let entry = self.entry_dir(&info.key);
            if let Ok(meta) = read_meta(&entry)
                && !meta.durable
                && meta.boot == boot
            {
                pending.push((entry, meta));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let dir = fs::File::open(self.dir()).map_err(CacheError::io("open", self.dir()))?;
        nix::unistd::syncfs(&dir).map_err(|e| CacheError::io("sync", self.dir())(e.into()))?;
        for (entry, mut meta) in pending {
            meta.durable = true;
            write_meta(&entry, &meta)?;
        }
        Ok(())
    }

    /// Temp dirs of runners that are gone (`tmp/<name>.<pid>.<n>`), and
    /// index records whose entry is gone.
    fn remove_leftovers(&self) -> Result<u64, CacheError> {
        let mut removed = 0;
        let tmp = self.dir().join("tmp");
        for ent in fs::read_dir(&tmp).map_err(CacheError::io("list", &tmp))?.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| fs::metadata(format!("/proc/{p}")).is_ok());
            if !alive {
                fs::remove_dir_all(ent.path()).map_err(CacheError::io("remove", ent.path()))?;
                removed += 1;
            }
        }
        // Fill locks nobody holds (a fill in progress holds its own).
        let locks = self.dir().join("locks");
        for ent in fs::read_dir(&locks).map_err(CacheError::io("list", &locks))?.flatten() {
            if ent.file_name().to_string_lossy().ends_with(".fill")
                && let Some(idle) = Held::take(&ent.path(), Mode::Exclusive, false)?
            {
                idle.remove()?;
            }
        }
        let index = self.dir().join("index");
        for ent in fs::read_dir(&index).map_err(CacheError::io("list", &index))?.flatten() {
            let key =
                fs::read_to_string(ent.path()).ok().and_then(|l| l.trim_end().rsplit(' ').next().map(String::from));
            let gone = key.is_none_or(|k| !self.entry_dir(&k).exists());
            if gone {
                match fs::remove_file(ent.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CacheError::io("remove", ent.path())(e)),
                }
            }
        }
        Ok(removed)
    }
}
