//! `--rootfs X.tar` (or `.tar.gz`, or `-`) through the cache.
//!
//! The key is the SHA-256 of the tar's bytes as given (`bytes-<hex>`):
//! the same bytes always unpack to the same tree, and no two different
//! trees share it. The hash is computed while the first run unpacks (on
//! a second core, `archive::tee`), so that run costs what an unpack
//! costs.
//!
//! Hashing 600 MB again on every run would cost more than the run, so a
//! tar *file* is also indexed by its inode: `index/<dev>-<ino>` holds its
//! size, mtime and ctime and the key they had. A later run whose file has
//! all of them the same uses that key without reading the file. Size and
//! mtime alone could be faked (write the same number of bytes, then
//! `touch -d` the old mtime back), but ctime cannot: the kernel sets it to
//! the current time on every change of the data or the inode, utimensat
//! included, and no call sets it to a chosen value (only changing the
//! system clock does, which only root can). Two races remain and are
//! closed as git closes "racy" index entries: a file changed while it was
//! hashed has another ctime after the hash than before (then nothing is
//! recorded), and a file changed within the clock tick of its recorded
//! ctime would keep that ctime, so a record proves the file unchanged only
//! when its ctime is over a second older than the start of its hash; a
//! younger one is recorded "racy", and a run that finds it hashes the
//! file's bytes (a read, no unpack) and checks them against the key. A
//! replaced file is
//! another inode; a reused inode number has a new ctime. Stdin has no
//! inode to index: it is hashed as it is unpacked, and an entry already
//! there for its bytes is used (the fresh unpack is thrown away).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::error::CacheError;
use super::lock::{Held, Mode};
use super::store::{Cache, Entry, Filled};
use crate::archive::{self, tee};

/// What of a file's inode says it is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp { size: meta.size(), mtime: (meta.mtime(), meta.mtime_nsec()), ctime: (meta.ctime(), meta.ctime_nsec()) }
    }

    /// An index record: the stamp, the key, and whether the stamp is
    /// "racy" (see the module comment), i.e. proves nothing on its own.
    fn line(&self, key: &str, racy: bool) -> String {
        let Stamp { size, mtime, ctime } = self;
        let racy = if racy { " racy" } else { "" };
        format!("{size} {} {} {} {} {key}{racy}\n", mtime.0, mtime.1, ctime.0, ctime.1)
    }

    /// The key in an index record, and whether it is racy, if the record
    /// is this stamp's.
    fn key_in(&self, line: &str) -> Option<(String, bool)> {
        let line = line.trim_end();
        let (line, racy) = match line.strip_suffix(" racy") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let (_, key) = line.rsplit_once(' ')?;
        (format!("{line}\n") == self.line(key, false)).then(|| (key.to_string(), racy))
    }
}

/// The SHA-256 of the whole file, read from its start; the file is left at
/// its start.
fn hash_file(mut file: &File) -> io::Result<[u8; 32]> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => sha.update(&buf[..n]),
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(sha.finalize().into())
}

fn bytes_key(digest: [u8; 32]) -> String {
    format!("bytes-{}", crate::formula::Digest(digest))
}

impl Cache {
    /// The tree of the tar in `file`, unpacked into the cache if its bytes
    /// are not there yet. `from_stdin`: `file` is the runner's stdin, read
    /// to its end here.
    pub fn ensure_tar(&self, file: File, from_stdin: bool) -> Result<Entry, CacheError> {
        let meta = file.metadata().map_err(CacheError::io("look up", "the rootfs tar"))?;
        let indexed = !from_stdin && meta.is_file();
        if !indexed {
            return self.unpack_tar(file, None);
        }
        let name = format!("{}-{}", meta.dev(), meta.ino());
        if let Some(entry) = self.indexed(&name, &Stamp::of(&meta), &file)? {
            return Ok(entry);
        }
        // One first run per file at a time: the others wait, then find it.
        let _filling = Held::take(&self.fill_lock(&format!("stat-{name}")), Mode::Exclusive, true)?;
        if let Some(entry) = self.indexed(&name, &Stamp::of(&meta), &file)? {
            return Ok(entry);
        }
        self.unpack_tar(file, Some((name, Stamp::of(&meta))))
    }

    fn index_path(&self, name: &str) -> PathBuf {
        self.dir().join("index").join(name)
    }

    /// The entry the index gives for this inode, if its stamp matches and
    /// the entry is there; a racy record's key is checked against the
    /// hash of the file's bytes first (a read, but no unpack).
    fn indexed(&self, name: &str, stamp: &Stamp, file: &File) -> Result<Option<Entry>, CacheError> {
        let line = match fs::read_to_string(self.index_path(name)) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io("read", self.index_path(name))(e)),
        };
        let Some((key, racy)) = stamp.key_in(&line) else { return Ok(None) };
        if racy {
            log::info!("hashing the rootfs tar: it changed too recently for its inode to prove it unchanged");
            let digest = hash_file(file).map_err(CacheError::io("read", "the rootfs tar"))?;
            if bytes_key(digest) != key {
                return Ok(None);
            }
        }
        let held = Held::take(&self.use_lock(&key), Mode::Shared, true)?;
        match held {
            Some(held) if self.present(&key, &held)? => Ok(Some(self.entry(&key, held, false))),
            _ => Ok(None),
        }
    }

    /// Unpacks the tar into a temp entry while hashing its bytes, then
    /// publishes it under that hash (or uses the entry already there);
    /// `index`: the file's inode name and stamp, recorded if still valid.
    fn unpack_tar(&self, file: File, index: Option<(String, Stamp)>) -> Result<Entry, CacheError> {
        let started = SystemTime::now();
        log::info!("unpacking the rootfs tar into the cache (its bytes are not known there yet)");
        let tmp = self.new_temp("rootfs")?;
        let tree = File::open(tmp.path().join("tree")).map_err(CacheError::io("open", tmp.path()))?;
        let probe = file.try_clone().map_err(CacheError::io("open", "the rootfs tar"))?;
        let (pipe, hasher) = tee::split(file, |mut pipe| -> io::Result<[u8; 32]> {
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match pipe.read(&mut buf)? {
                    0 => return Ok(sha.finalize().into()),
                    n => sha.update(&buf[..n]),
                }
            }
        });
        let unpacked = archive::decompressed(Box::new(pipe)).and_then(|r| archive::unpack(r, tree.as_fd()));
        let digest =
            hasher.join().ok_or_else(|| CacheError::io("hash", "the rootfs tar")(io::Error::other("panicked")));
        let stats = unpacked?;
        let digest = digest?.map_err(CacheError::io("read", "the rootfs tar"))?;
        log::debug!("unpacked {} entries, {} bytes", stats.entries, stats.bytes);
        let key = bytes_key(digest);
        let held = Held::take(&self.use_lock(&key), Mode::Shared, true)?
            .ok_or_else(|| CacheError::io("lock", &key)(io::ErrorKind::WouldBlock.into()))?;
        if !self.present(&key, &held)? {
            self.publish(&key, tmp, Filled { entries: stats.entries })?;
        }
        held.touch()?;
        if let Some((name, stamp)) = index {
            self.record(&name, &stamp, &probe, started, &key)?;
        }
        Ok(self.entry(&key, held, true))
    }

    /// Records the inode's key, unless the file changed since `stamp`; as
    /// racy if it might change within its ctime's clock tick (see the
    /// module comment).
    fn record(&self, name: &str, stamp: &Stamp, file: &File, started: SystemTime, key: &str) -> Result<(), CacheError> {
        let now = file.metadata().map_err(CacheError::io("look up", "the rootfs tar"))?;
        if Stamp::of(&now) != *stamp {
            log::debug!("the rootfs tar changed while it was read: not indexing it");
            return Ok(());
        }
        let ctime = SystemTime::UNIX_EPOCH + Duration::new(stamp.ctime.0.max(0) as u64, stamp.ctime.1 as u32);
        let racy = ctime + Duration::from_secs(1) >= started;
        let path = self.index_path(name);
        let tmp = self.index_path(&format!(".{name}.{}", std::process::id()));
        fs::write(&tmp, stamp.line(key, racy)).map_err(CacheError::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(CacheError::io("write", &path))
    }
}
