//! The cache directory and its entries.
//!
//! Layout (everything root's, the top 0700: entries hold the wares'
//! setuid-root files, which no other user of the host may reach):
//!
//! - `entries/<key>/tree/`: an unpacked tree, used read-only as an overlay
//!   lower layer; `entries/<key>/meta.json`: its size and entry count.
//!   `<key>` is `tar-<hash>` for the ware `tar:<hash>` and `bytes-<sha256>`
//!   for a `--rootfs` tar, named by the SHA-256 of its bytes.
//! - `tmp/<key>.<pid>.<n>/`: an entry being unpacked; renamed to
//!   `entries/<key>` only once complete and checked (RENAME_NOREPLACE, so
//!   a name only ever stands for a whole entry and the first one stays).
//! - `locks/<key>` (use) and `locks/<key>.fill`: see `lock`.
//! - `index/<dev>-<ino>`: which `bytes-` key a `--rootfs` tar file has
//!   (see `tar_root`).
//!
//! Entries are not fsynced (neither are podman's or docker's layers): a
//! power cut can leave a published entry with lost data. `meta.json`
//! records the boot it was made in, and an entry from an earlier boot is
//! used only after `repeatr gc` synced the cache and marked it durable, or
//! else it is made again.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::error::CacheError;
use super::lock::{Held, Mode};
use crate::container::{Rootfs, SpecError, spec};
use crate::state::PrivateDir;

/// The unpacked-ware cache at one directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// `[cache] max_size`: the budget `repeatr gc` evicts down to.
    pub max_size: u64,
}

/// An entry in use: its tree stays (eviction skips it) while this lives.
#[derive(Debug)]
pub struct Entry {
    key: String,
    tree: PathBuf,
    /// Made by this call (false: it was there already).
    pub fresh: bool,
    _use: Held,
}

impl Entry {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The unpacked tree; read-only to jobs (an overlay lower layer).
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    /// The tree as a job's root (or a ware's place): a detached read-only
    /// copy of it, the overlay's lower layer.
    pub fn rootfs(&self) -> Result<Rootfs, SpecError> {
        spec::open_rootfs(&self.tree)
    }
}

/// What a fill put into an entry, for `meta.json`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filled {
    pub entries: u64,
}

/// `entries/<key>/meta.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) key: String,
    /// Disk use of the tree (st_blocks), what the budget counts.
    pub(crate) bytes: u64,
    pub(crate) entries: u64,
    /// /proc/sys/kernel/random/boot_id when it was published.
    pub(crate) boot: String,
    /// `repeatr gc` synced the cache after it was published.
    #[serde(default)]
    pub(crate) durable: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating if missing) the cache at `dir`: root's, checked like
    /// the state dir (`state::PrivateDir`), and closed to everyone else.
    pub fn open(dir: &Path, max_size: u64) -> Result<Cache, CacheError> {
        let top = PrivateDir::create(dir)?;
        Cache::checked(top, max_size)
    }

    /// [`open`](Cache::open), but `None` for a cache that does not exist:
    /// for a look (`repeatr gc`) that must not make one.
    pub fn open_existing(dir: &Path, max_size: u64) -> Result<Option<Cache>, CacheError> {
        match PrivateDir::open(dir, false)? {
            Some(top) => Cache::checked(top, max_size).map(Some),
            None => Ok(None),
        }
    }

    fn checked(top: PrivateDir, max_size: u64) -> Result<Cache, CacheError> {
        let mode = fs::metadata(top.path()).map_err(CacheError::io("look up", top.path()))?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CacheError::Open { path: top.path().to_path_buf(), mode });
        }
        for sub in ["entries", "tmp", "locks", "index"] {
            top.create_subdir(sub)?;
        }
        Ok(Cache { dir: top.path().to_path_buf(), max_size })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join("entries").join(key)
    }

    pub(crate) fn use_lock(&self, key: &str) -> PathBuf {
        self.dir.join("locks").join(key)
    }

    pub(crate) fn fill_lock(&self, name: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{name}.fill"))
    }

    /// The entry `key`, unpacked by `fill` into an empty directory first if
    /// absent. Concurrent callers for one absent key fill it once: the
    /// others wait on its fill lock, then use what the first published.
    /// `fill` may fail (a corrupt ware): nothing of it is then kept.
    pub fn ensure(
        &self,
        key: &str,
        fill: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> Result<Filled, CacheError>,
    ) -> Result<Entry, CacheError> {
        check_key(key)?;
        let held = Held::take(&self.use_lock(key), Mode::Shared, true)?.ok_or_else(never_busy)?;
        if self.present(key, &held)? {
            return Ok(self.entry(key, held, false));
        }
        let filling = Held::take(&self.fill_lock(key), Mode::Exclusive, true)?.ok_or_else(never_busy)?;
        if self.present(key, &held)? {
            return Ok(self.entry(key, held, false));
        }
        let tmp = self.new_temp(key)?;
        let filled = {
            let tree = fs::File::open(tmp.path().join("tree")).map_err(CacheError::io("open", tmp.path()))?;
            fill(tree.as_fd())?
        };
        self.publish(key, tmp, filled)?;
        drop(filling);
        held.touch()?;
        Ok(self.entry(key, held, true))
    }

    pub(crate) fn entry(&self, key: &str, held: Held, fresh: bool) -> Entry {
        Entry { key: key.to_string(), tree: self.entry_dir(key).join("tree"), fresh, _use: held }
    }

    /// A fresh temp dir with an empty `tree/`, removed on drop unless
    /// published.
    pub(crate) fn new_temp(&self, key: &str) -> Result<TempEntry, CacheError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join("tmp").join(format!("{key}.{}.{n}", std::process::id()));
        let mut b = fs::DirBuilder::new();
        b.mode(0o700);
        b.create(&path).map_err(CacheError::io("create", &path))?;
        let tmp = TempEntry(Some(path));
        b.create(tmp.path().join("tree")).map_err(CacheError::io("create", tmp.path()))?;
        Ok(tmp)
    }

    /// Renames a filled temp dir to `entries/<key>`; one already there
    /// (same key, same content) is kept and ours thrown away.
    pub(crate) fn publish(&self, key: &str, tmp: TempEntry, filled: Filled) -> Result<(), CacheError> {
        let meta = Meta {
            key: key.to_string(),
            bytes: disk_usage(&tmp.path().join("tree")).map_err(CacheError::io("measure", tmp.path()))?,
            entries: filled.entries,
            boot: boot_id(),
            durable: false,
        };
        write_meta(tmp.path(), &meta)?;
        let to = self.entry_dir(key);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            tmp.path(),
            nix::fcntl::AT_FDCWD,
            &to,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                tmp.keep();
                log::info!("unpacked {key} into the cache: {} entries, {} bytes", meta.entries, meta.bytes);
                Ok(())
            }
            Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => Ok(()),
            Err(e) => Err(CacheError::io("publish", &to)(e.into())),
        }
    }

    /// The entry `key` if it is published and trustworthy; one from an
    /// earlier boot never made durable is removed (its data may not have
    /// reached the disk). Called with its use lock held.
    pub(crate) fn present(&self, key: &str, held: &Held) -> Result<bool, CacheError> {
        let dir = self.entry_dir(key);
        let meta = match read_meta(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(CacheError::io("read the metadata of", &dir)(e)),
        };
        if !meta.durable && meta.boot != boot_id() {
            log::warn!("cache entry {key} was made before the last boot and never synced: making it again");
            self.discard(key)?;
            return Ok(false);
        }
        held.touch()?;
        Ok(true)
    }

    /// Moves the entry out of `entries/` (it is gone from that moment)
    /// and deletes it. The caller holds its use lock or knows nobody can.
    pub(crate) fn discard(&self, key: &str) -> Result<(), CacheError> {
        let from = self.entry_dir(key);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let to = self.dir.join("tmp").join(format!("evicted-{key}.{}.{n}", std::process::id()));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CacheError::io("remove", &from)(e)),
        }
        fs::remove_dir_all(&to).map_err(CacheError::io("remove", &to))
    }
}

/// A temp entry, removed on drop unless [`keep`](TempEntry::keep) was called.
pub(crate) struct TempEntry(Option<PathBuf>);

impl TempEntry {
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = fs::remove_dir_all(&path)
        {
            log::warn!("removing {}: {e}", path.display());
        }
    }
}

/// A waiting lock always ends held.
fn never_busy() -> CacheError {
    CacheError::io("lock", "a cache lock")(io::Error::other("a blocking lock returned unheld"))
}

/// Keys are file names: letters, digits and `-` only.
fn check_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(CacheError::io("use the key", key)(io::ErrorKind::InvalidInput.into()));
    }
    Ok(())
}

pub(crate) fn read_meta(entry_dir: &Path) -> io::Result<Meta> {
    let text = fs::read(entry_dir.join("meta.json"))?;
    serde_json::from_slice(&text).map_err(io::Error::other)
}

pub(crate) fn write_meta(entry_dir: &Path, meta: &Meta) -> Result<(), CacheError> {
    let path = entry_dir.join("meta.json");
    let tmp = entry_dir.join(".meta.json.tmp");
    let text = serde_json::to_vec(meta).map_err(|e| CacheError::io("encode", &path)(io::Error::other(e)))?;
    fs::write(&tmp, text).map_err(CacheError::io("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(CacheError::io("write", &path))
}

/// This boot's id: an entry made in another boot may have lost data.
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// What the tree takes on disk, as du counts it (allocated blocks).
fn disk_usage(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        total += fs::symlink_metadata(&dir)?.blocks() * 512;
        for ent in fs::read_dir(&dir)? {
            let ent = ent?;
            let meta = ent.metadata()?;
            if meta.is_dir() {
                stack.push(ent.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}
