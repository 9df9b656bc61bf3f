//! The download area: a local warehouse (`DIR/tar/<hash>.tar`) of wares
//! fetched from remote warehouses, each one downloaded once per host and
//! named only once verified. `store_verified` writes a ware into any local
//! warehouse from a stream: into a file with no name (O_TMPFILE, gone if
//! anything fails or the process dies), checked to be exactly the ware
//! `pack` writes for that id, made read-only, synced, then linked under its
//! name, which never replaces one already there. `WareLock` makes N
//! processes that need one ware wait for the first one's download instead
//! of each making their own.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;

use super::error::RemoteError;
use crate::formula::source::CHUNK;
use crate::formula::verify::{StoredError, stored_id};
use crate::formula::warehouse::anonymous_file;
use crate::formula::{WareId, Warehouse};

/// The download area at `dir`.
#[derive(Clone, Debug)]
pub struct DownloadArea {
    dir: PathBuf,
}

impl DownloadArea {
    pub fn new(dir: impl Into<PathBuf>) -> DownloadArea {
        DownloadArea { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The area as the local warehouse it is.
    pub fn warehouse(&self) -> Warehouse {
        Warehouse::new(&self.dir)
    }

    pub fn has(&self, id: &WareId) -> bool {
        present(&self.warehouse(), id)
    }

    fn err(&self, action: &'static str) -> impl FnOnce(io::Error) -> RemoteError + '_ {
        move |source| RemoteError::Area { dir: self.dir.clone(), action, source }
    }

    /// Waits for, and takes, the lock on downloading `id`.
    pub fn lock(&self, id: &WareId) -> Result<WareLock, RemoteError> {
        let locks = self.dir.join("locks");
        create_private_dir(&locks).map_err(self.err("create its locks/ directory"))?;
        WareLock::take(locks.join(format!("{}.lock", id.hash))).map_err(self.err("lock a download"))
    }
}

/// Whether `warehouse` has a file by the name of `id` (verified when it
/// is opened); an entry that cannot be looked at counts as there, so that
/// opening it says what is wrong with it.
pub fn present(warehouse: &Warehouse, id: &WareId) -> bool {
    match fs::symlink_metadata(warehouse.ware_path(id)) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// A directory only root can enter: the area holds what root verified,
/// and its lock files must not be someone else's to hold.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)?;
            }
            create_private_dir(dir)
        }
        Err(e) => Err(e),
    }
}

/// Copies `body` into `warehouse` as the ware `id`, verifying it first;
/// `shown` is the URL messages name. Returns the ware's path. A ware
/// already there by that name is kept.
pub fn store_verified(
    warehouse: &Warehouse,
    id: &WareId,
    body: impl Read,
    shown: &str,
) -> Result<PathBuf, RemoteError> {
    let dir = warehouse.dir();
    let err =
        |action: &'static str| move |source: io::Error| RemoteError::Area { dir: dir.to_path_buf(), action, source };
    let tar_dir = warehouse.dir().join("tar");
    fs::create_dir_all(&tar_dir).map_err(err("create its tar/ directory"))?;
    let mut file = anonymous_file(&tar_dir).map_err(err("create a file for a download (O_TMPFILE)"))?;
    let mut body = body;
    io::copy(&mut body, &mut file).map_err(|e| RemoteError::Transfer { url: shown.to_string(), why: e.to_string() })?;
    file.seek(SeekFrom::Start(0)).map_err(err("read a download back"))?;
    let not_a_ware = |problem: String| RemoteError::NotAWare { id: id.to_string(), url: shown.to_string(), problem };
    let actual = stored_id(BufReader::with_capacity(CHUNK, &file)).map_err(|e| match e {
        StoredError::NotCanonical(problem) => not_a_ware(format!("it is not a ware ({problem})")),
        StoredError::Io(e) => err("read a download back")(e),
    })?;
    if actual != *id {
        return Err(not_a_ware(format!("its content hashes to {actual}")));
    }
    file.set_permissions(fs::Permissions::from_mode(0o444)).map_err(err("make a download read-only"))?;
    // Durable before it has its name, as a packed ware is.
    file.sync_all().map_err(err("sync a download to disk"))?;
    let dir_fd = File::open(&tar_dir).map_err(err("open its tar/ directory"))?;
    let name = format!("{}.tar", id.hash);
    // AT_EMPTY_PATH links the open file itself (root has the
    // CAP_DAC_READ_SEARCH it needs); it fails on a name already there.
    match nix::unistd::linkat(file.as_fd(), "", dir_fd.as_fd(), name.as_str(), AtFlags::AT_EMPTY_PATH) {
        Ok(()) => nix::unistd::fsync(dir_fd.as_fd()).map_err(|e| err("sync its tar/ directory")(e.into()))?,
        Err(nix::errno::Errno::EEXIST) => {
            log::debug!("ware {id} is already in {}; keeping that copy", tar_dir.display())
        }
        Err(e) => return Err(err("link a download into place")(e.into())),
    }
    Ok(warehouse.ware_path(id))
}

/// An exclusive hold on one ware's lock file, unlinked (while still held)
/// when dropped, so that no lock file outlives its download. Taking it is
/// lock-then-verify: after the flock the path must still name the locked
/// inode, else its holder unlinked it meanwhile and the path is opened
/// again (as `state::RemovableLock` does for the state dir's locks).
pub struct WareLock {
    file: File,
    path: PathBuf,
}

impl WareLock {
    fn take(path: PathBuf) -> io::Result<WareLock> {
        loop {
            let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
            file.lock()?;
            let held = file.metadata()?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(WareLock { file, path }),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for WareLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}
