//! A warehouse: a local directory of content-addressed wares.
//!
//! Layout: `DIR/tar/<64 hex digits>.tar`, one normalized, uncompressed tar
//! per ware, named for its ware hash and made read-only (0444). Writers
//! create `DIR/tar/.tmp-*` files and rename them into place with
//! RENAME_NOREPLACE, so a ware's name only ever appears complete, and a ware
//! that is already there is kept (it has the same content by its name). A
//! crash can leave `.tmp-*` files behind; deleting them is always safe when
//! no pack is running.
//!
//! A stored ware is trusted only as far as `verify` reads it: byte for byte
//! what `normtar` writes for the tree its name says, nothing more.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::RenameFlags;

use super::error::WareError;
use super::filter::Filters;
use super::normtar::TarOut;
use super::pack::{Source, emit};
use super::source::CHUNK;
use super::verify::{StoredError, stored_id};
use super::ware_id::WareId;
use crate::archive::{DATA_CHUNK, UnpackStats, tee, unpack};

#[derive(Clone, Debug)]
pub struct Warehouse {
    dir: PathBuf,
}

/// Removes a temp file unless it was renamed into place.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl Warehouse {
    pub fn new(dir: impl Into<PathBuf>) -> Warehouse {
        Warehouse { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tar_dir(&self) -> PathBuf {
        self.dir.join("tar")
    }

    /// Where the ware `id` is (or would be) stored.
    pub fn ware_path(&self, id: &WareId) -> PathBuf {
        self.tar_dir().join(format!("{}.tar", id.hash))
    }

    fn err(&self, action: &'static str) -> impl FnOnce(io::Error) -> WareError + '_ {
        move |source| WareError::Warehouse { dir: self.dir.clone(), action, source }
    }

    /// Packs `source` (a directory, a plain or gzip tar, or `-` for a tar on
    /// stdin) with `filters` and stores it; returns its id.
    pub fn pack(&self, source: &Path, filters: &Filters) -> Result<WareId, WareError> {
        let source = Source::open(source)?;
        let tar_dir = self.tar_dir();
        fs::create_dir_all(&tar_dir).map_err(self.err("create its tar/ directory"))?;
        // A tar's data waits in an anonymous file on the warehouse's
        // filesystem (gone when closed, even after a crash).
        let spool = match source {
            Source::Tar(_) => Some(anonymous_file(&tar_dir).map_err(self.err("create a spool file (O_TMPFILE)"))?),
            Source::Dir(_) => None,
        };
        let (nodes, mut data) = source.scan(filters, spool)?;

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp_name = format!(".tmp-{}-{}.tar", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let tmp_path = tar_dir.join(&tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp_path)
            .map_err(self.err("create a temp file"))?;
        let guard = TempGuard(Some(tmp_path));
        let mut out = TarOut::new(BufWriter::with_capacity(CHUNK, file));
        let (id, _) = emit(&nodes, &mut data, Some(&mut out), false)?;
        let file = out
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(self.err("write the ware"))?;
        // Durable before it has its name: a name must never stand for a
        // partly written ware after a power cut.
        file.sync_all().map_err(self.err("sync the ware to disk"))?;
        drop(file);

        let dir_fd = OwnedFd::from(File::open(&tar_dir).map_err(self.err("open its tar/ directory"))?);
        let final_name = format!("{}.tar", id.hash);
        match nix::fcntl::renameat2(
            dir_fd.as_fd(),
            tmp_name.as_str(),
            dir_fd.as_fd(),
            final_name.as_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                let mut guard = guard;
                guard.0 = None;
                nix::unistd::fsync(dir_fd.as_fd()).map_err(|e| self.err("sync its tar/ directory")(e.into()))?;
            }
            Err(nix::errno::Errno::EEXIST) => {
                log::debug!("ware {id} is already in the warehouse; keeping that copy");
            }
            Err(e) => return Err(self.err("rename the ware into place")(e.into())),
        }
        Ok(id)
    }

    fn open_ware(&self, id: &WareId) -> Result<File, WareError> {
        let path = self.ware_path(id);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => WareError::NotFound { id: id.to_string(), dir: self.dir.clone() },
            _ => self.err("open a ware")(e),
        })
    }

    /// Reads `file` from where it is to its end: `Corrupt` unless it holds
    /// exactly the bytes `pack` writes for some tree, `HashMismatch` unless
    /// that tree is `id`.
    fn check(&self, id: &WareId, file: &File) -> Result<(), WareError> {
        self.judge(id, stored_id(BufReader::with_capacity(CHUNK, file)))
    }

    /// What the verifier's reading of the ware `id` means.
    fn judge(&self, id: &WareId, read: Result<WareId, StoredError>) -> Result<(), WareError> {
        let path = self.ware_path(id);
        let actual = read.map_err(|e| match e {
            StoredError::NotCanonical(problem) => {
                WareError::Corrupt { id: id.to_string(), path: path.clone(), problem }
            }
            // Unreadable is corrupt too (README, exit codes): delete and fetch again.
            StoredError::Io(e) => {
                WareError::Corrupt { id: id.to_string(), path: path.clone(), problem: format!("cannot read it ({e})") }
            }
        })?;
        if actual != *id {
            return Err(WareError::HashMismatch { id: id.to_string(), path, actual: actual.to_string() });
        }
        Ok(())
    }

    /// Re-hashes the stored ware: `NotFound` if it is not there,
    /// `Corrupt` / `HashMismatch` if it is damaged.
    pub fn verify(&self, id: &WareId) -> Result<(), WareError> {
        let file = self.open_ware(id)?;
        self.check(id, &file)
    }

    /// The stored ware, verified, as an open file at its start: what the
    /// launcher hands to the job's child to unpack (the same open file, so
    /// a ware swapped after the check cannot slip through).
    ///
    /// A stored file that neither root nor we own is first copied to a file
    /// only we can reach, and the copy is checked and returned: its owner
    /// could otherwise rewrite it in place (the open file sees the change)
    /// between the check and the unpack.
    pub fn open_verified(&self, id: &WareId) -> Result<File, WareError> {
        let mut file = self.open_private(id)?;
        self.check(id, &file)?;
        file.seek(SeekFrom::Start(0)).map_err(self.err("read a ware"))?;
        Ok(file)
    }

    /// The stored ware, not yet verified: the file itself if root or we
    /// own it, else a private copy (see [`open_verified`](Self::open_verified)).
    fn open_private(&self, id: &WareId) -> Result<File, WareError> {
        let stored = self.open_ware(id)?;
        let owner = stored.metadata().map_err(self.err("read a ware"))?.uid();
        if owner == 0 || owner == nix::unistd::geteuid().as_raw() {
            Ok(stored)
        } else {
            log::debug!("ware {id} is owned by uid {owner}: checking a private copy");
            self.private_copy(stored)
        }
    }

    /// Verifies the ware while unpacking it into `dest` (an empty
    /// directory), in one read of the file on two threads. What lands in
    /// `dest` is trusted only if this returns `Ok`: the caller unpacks
    /// into a directory nobody uses yet and throws it away otherwise.
    pub fn unpack_checked(&self, id: &WareId, dest: BorrowedFd<'_>) -> Result<UnpackStats, WareError> {
        let file = self.open_private(id)?;
        let (pipe, verifier) = tee::split(file, |pipe| stored_id(BufReader::with_capacity(CHUNK, pipe)));
        let unpacked = unpack(BufReader::with_capacity(DATA_CHUNK / 16, pipe), dest);
        let read =
            verifier.join().ok_or_else(|| self.err("verify a ware")(io::Error::other("the verifier panicked")))?;
        // The verifier's word first: a ware that is not what its id says
        // is corrupt, whatever the unpacker made of it.
        self.judge(id, read)?;
        unpacked.map_err(|source| WareError::Unpack { id: id.to_string(), source })
    }

    /// A copy of `stored` in a file with no name (in the warehouse, or in
    /// the temp dir if the warehouse is not ours to write), at its start.
    fn private_copy(&self, mut stored: File) -> Result<File, WareError> {
        let mut copy = anonymous_file(&self.tar_dir())
            .or_else(|_| anonymous_file(&std::env::temp_dir()))
            .map_err(self.err("create a private copy of a ware (O_TMPFILE)"))?;
        io::copy(&mut stored, &mut copy).map_err(self.err("copy a ware"))?;
        copy.seek(SeekFrom::Start(0)).map_err(self.err("copy a ware"))?;
        Ok(copy)
    }

    /// Verifies the ware, then unpacks it into `dest`, an existing empty
    /// directory (which takes the metadata of the ware's root). Both read the
    /// same open file, so a ware swapped in between cannot slip through.
    pub fn unpack(&self, id: &WareId, dest: &Path) -> Result<UnpackStats, WareError> {
        let dest_err = |problem: String| WareError::Dest { dir: dest.to_path_buf(), problem };
        let dir = File::open(dest).map_err(|e| dest_err(e.to_string()))?;
        let meta = dir.metadata().map_err(|e| dest_err(e.to_string()))?;
        if !meta.is_dir() {
            return Err(dest_err("it is not a directory".into()));
        }
        if fs::read_dir(dest).map_err(|e| dest_err(e.to_string()))?.next().is_some() {
            return Err(dest_err("it is not empty".into()));
        }
        let file = self.open_verified(id)?;
        // A buffer smaller than the unpacker's reads: file data is read
        // straight into the unpacker's buffer (see DATA_CHUNK).
        unpack(BufReader::with_capacity(DATA_CHUNK / 16, file), dir.as_fd())
            .map_err(|source| WareError::Unpack { id: id.to_string(), source })
    }
}

/// A file with no name in `dir` (O_TMPFILE): gone when closed, even after a
/// crash, and nobody else can open it.
pub(crate) fn anonymous_file(dir: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir)
}
