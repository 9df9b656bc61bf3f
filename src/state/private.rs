//! The state dir is root's alone. A root runner writes, creates and
//! removes files in it, so a user who could create it first (or swap it,
//! or plant a link in it) could make root overwrite or create files
//! anywhere. Hence:
//!
//! * the given path is resolved once, component by component from `/`:
//!   every directory passed through must be root's and not writable by
//!   group or others, unless it has the sticky bit (/tmp: nobody else can
//!   rename what root owns there); every symlink followed must be root's
//!   (/var/run -> /run); the state dir itself, and every directory repeatr
//!   creates, must be root's and not writable by group or others at all;
//! * what is found is held as an fd ([`PrivateDir`]), and every file and
//!   subdirectory is opened relative to it, one name at a time, with
//!   O_NOFOLLOW (nothing in the state dir is a link), and checked with
//!   fstat (a regular file, root's, one link: a hard link to a file
//!   elsewhere is as bad as a symlink); temp files are created O_EXCL, a
//!   stale one unlinked by name first.
//!
//! "Root" here means uid 0 or the user running repeatr: the threat is
//! another user, and a user's own tests may use their own dirs.
//!
//! Once a directory passes, only its owner can change what its names
//! point to, so the path of a checked directory is also safe to hand to
//! code that only takes paths (SQLite, the job's child).

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, fchmodat, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::error::StateError;

/// How many symlinks one resolution follows, as the kernel's MAXSYMLINKS.
const MAX_LINKS: u32 = 40;

/// Every file of the state dir is created readable and writable by root
/// only: sidecars hold command lines, which may hold secrets.
const FILE_MODE: u32 = 0o600;

const DIR_MODE: u32 = 0o700;

/// A checked directory of the state dir, held open.
#[derive(Debug)]
pub(crate) struct PrivateDir {
    /// O_PATH: enough for every *at call; listing opens "." for reading.
    fd: OwnedFd,
    /// Without symlinks: what it resolved to.
    path: PathBuf,
}

/// What a directory is to the path being resolved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Passed through: its owner (or anyone, if it is writable without
    /// the sticky bit) could swap what lies below it.
    Above,
    /// The directory asked for, or one repeatr created: whoever can write
    /// it can plant links in it.
    Own,
}

impl PrivateDir {
    /// Resolves `path` (absolute, or relative to the working directory)
    /// and opens it, checking every directory and symlink on the way (see
    /// the module comment). With `create`, missing directories are created
    /// 0700; without, a missing one is `None`.
    pub(crate) fn open(path: &Path, create: bool) -> Result<Option<PrivateDir>, StateError> {
        let path = std::path::absolute(path).map_err(StateError::io("resolve", path))?;
        let root = Path::new("/");
        let fd = open_path(nix::fcntl::AT_FDCWD, root.as_os_str()).map_err(errno("open", root))?;
        let st = fstat(&fd).map_err(errno("look up", root))?;
        check_dir(&st, root, Role::Above)?;
        let mut stack = vec![Entry { fd, path: root.to_path_buf(), st, own: false }];
        let mut pending: VecDeque<OsString> = components(&path).collect();
        let mut links = 0;
        let mut just_created = false;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let top = stack.last().ok_or_else(|| StateError::io("resolve", &path)(Errno::ENOENT.into()))?;
            let here = top.path.join(&name);
            let fd = match open_path(top.fd.as_fd(), &name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    just_created = match mkdirat(top.fd.as_fd(), name.as_os_str(), Mode::from_bits_truncate(DIR_MODE)) {
                        Ok(()) => true,
                        Err(Errno::EEXIST) => false,
                        Err(e) => return Err(errno("create", &here)(e)),
                    };
                    pending.push_front(name);
                    continue;
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(errno("open", &here)(e)),
            };
            let created = std::mem::take(&mut just_created);
            let st = fstat(&fd).map_err(errno("look up", &here))?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    // The last name is the directory asked for (unless a
                    // `..` follows, checked at the end).
                    let own = created || pending.is_empty();
                    check_dir(&st, &here, if own { Role::Own } else { Role::Above })?;
                    stack.push(Entry { fd, path: here, st, own });
                }
                libc::S_IFLNK => {
                    if !trusted(st.st_uid) {
                        return Err(unsafe_link(&here, st.st_uid));
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(StateError::io("resolve", &path)(Errno::ELOOP.into()));
                    }
                    let target = readlinkat(&fd, "").map_err(errno("read link", &here))?;
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        stack.truncate(1);
                    }
                    for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                _ => return Err(StateError::io("open", &here)(Errno::ENOTDIR.into())),
            }
        }
        let Some(top) = stack.pop() else {
            return Err(StateError::io("resolve", &path)(Errno::ENOENT.into()));
        };
        if !top.own {
            check_dir(&top.st, &top.path, Role::Own)?;
        }
        Ok(Some(PrivateDir { fd: top.fd, path: top.path }))
    }

    /// A directory inside the state dir, by its whole path: the path of its
    /// parent is resolved as [`open`](PrivateDir::open) does (the state dir
    /// may sit behind a link of root's), but its own name is never followed:
    /// nothing in the state dir is a link.
    pub(crate) fn open_inner(path: &Path, create: bool) -> Result<Option<PrivateDir>, StateError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(OsStr::to_str)) else {
            return PrivateDir::open(path, create);
        };
        match PrivateDir::open(parent, create)? {
            Some(parent) => parent.subdir(name, create),
            None => Ok(None),
        }
    }

    /// [`open`](PrivateDir::open) with `create`.
    pub(crate) fn create(path: &Path) -> Result<PrivateDir, StateError> {
        PrivateDir::open(path, true)?.ok_or_else(|| StateError::io("create", path)(Errno::ENOENT.into()))
    }

    /// The same directory, on a new fd.
    pub(crate) fn try_clone(&self) -> Result<PrivateDir, StateError> {
        let fd = self.fd.try_clone().map_err(StateError::io("open", &self.path))?;
        Ok(PrivateDir { fd, path: self.path.clone() })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this dir, for messages and for SQLite.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The subdirectory `name` (one component), created 0700 if missing
    /// and `create`; `None` if missing otherwise.
    pub(crate) fn subdir(&self, name: &str, create: bool) -> Result<Option<PrivateDir>, StateError> {
        let path = self.join(name);
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(StateError::io("open", &path)(io::ErrorKind::InvalidInput.into()));
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut created = false;
        let fd = loop {
            match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
                Ok(fd) => break fd,
                Err(Errno::ENOENT) if create && !created => {
                    match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(DIR_MODE)) {
                        Ok(()) | Err(Errno::EEXIST) => created = true,
                        Err(e) => return Err(errno("create", &path)(e)),
                    }
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e @ (Errno::ENOTDIR | Errno::ELOOP)) => {
                    if self.stat(name).ok().flatten().is_some_and(|st| is_link(&st)) {
                        return Err(StateError::Unsafe {
                            what: "state dir entry",
                            path,
                            problem: "is a symlink, not a directory".into(),
                            remedy: "repeatr never makes one: remove it, or pass another --state-dir".into(),
                        });
                    }
                    return Err(errno("open", &path)(e));
                }
                Err(e) => return Err(errno("open", &path)(e)),
            }
        };
        let st = fstat(&fd).map_err(errno("look up", &path))?;
        check_dir(&st, &path, Role::Own)?;
        Ok(Some(PrivateDir { fd, path }))
    }

    /// [`subdir`](PrivateDir::subdir) with `create`.
    pub(crate) fn create_subdir(&self, name: &str) -> Result<PrivateDir, StateError> {
        self.subdir(name, true)?.ok_or_else(|| StateError::io("create", &self.join(name))(Errno::ENOENT.into()))
    }

    /// Opens the file `name` with `flags` (O_CREAT creates it 0600): never
    /// through a symlink, never blocking on a FIFO, and only if it is a
    /// regular file of root's with at most one link. `None` if missing.
    pub(crate) fn open_file(&self, name: &str, flags: OFlag, action: &'static str) -> Result<Option<File>, StateError> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(FILE_MODE)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(unsafe_file(&self.join(name), "is a symlink".into())),
            Err(e) => return Err(errno(action, &self.join(name))(e)),
        };
        let st = fstat(&fd).map_err(errno("look up", &self.join(name)))?;
        check_file(&st, &self.join(name))?;
        Ok(Some(File::from(fd)))
    }

    /// Checks the entry `name` without opening it (for files only SQLite
    /// may open): `None` if missing, its stat if it is a file `open_file`
    /// would accept.
    pub(crate) fn check(&self, name: &str) -> Result<Option<FileStat>, StateError> {
        let st = self.stat(name).map_err(StateError::io("look up", &self.join(name)))?;
        if let Some(st) = &st {
            check_file(st, &self.join(name))?;
        }
        Ok(st)
    }

    /// Creates `name`, 0600, failing if anything (a symlink included) is
    /// there.
    pub(crate) fn create_new(&self, name: &str) -> Result<File, StateError> {
        self.create_excl(name).map_err(errno("create", &self.join(name)))
    }

    /// A temp file `name`, new: a stale one (a crashed writer's, or
    /// whatever was planted there) is unlinked, never followed, and the
    /// file created again.
    pub(crate) fn create_temp(&self, name: &str) -> Result<File, StateError> {
        match self.create_excl(name) {
            Err(Errno::EEXIST) => {
                self.remove(name)?;
                self.create_new(name)
            }
            created => created.map_err(errno("create", &self.join(name))),
        }
    }

    fn create_excl(&self, name: &str) -> nix::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(FILE_MODE)).map(File::from)
    }

    /// Renames `from` onto `to`, both in this dir; a symlink at `to` is
    /// replaced, never followed.
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<(), StateError> {
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to).map_err(errno("rename into", &self.join(to)))
    }

    /// Renames `from` to `to`, which must not exist (RENAME_NOREPLACE:
    /// never replaces a file), if `from` exists; whether it did.
    pub(crate) fn rename_new(&self, from: &str, to: &str) -> Result<bool, StateError> {
        match nix::fcntl::renameat2(
            self.fd.as_fd(),
            from,
            self.fd.as_fd(),
            to,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(errno("move aside", &self.join(from))(e)),
        }
    }

    /// Unlinks the file `name` (a symlink itself, never its target); one
    /// already gone is fine.
    pub(crate) fn remove(&self, name: &str) -> Result<(), StateError> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno("remove", &self.join(name))(e)),
        }
    }

    /// Sets the mode of `name`, which the caller has just [`check`]ed:
    /// only root can have replaced it since (chmod would follow a link).
    ///
    /// [`check`]: PrivateDir::check
    pub(crate) fn chmod(&self, name: &str, mode: u32) -> Result<(), StateError> {
        fchmodat(self.fd.as_fd(), name, Mode::from_bits_truncate(mode), FchmodatFlags::FollowSymlink)
            .map_err(errno("chmod", &self.join(name)))
    }

    /// lstat of `name`; `None` if missing.
    pub(crate) fn stat(&self, name: &str) -> io::Result<Option<FileStat>> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this dir that are UTF-8 (repeatr makes no others).
    pub(crate) fn names(&self) -> Result<Vec<String>, StateError> {
        let mut names = Vec::new();
        self.for_each_entry(|name, _| names.push(name.to_string()))?;
        Ok(names)
    }

    /// Calls `each` with every name in this dir that is UTF-8 and the inode
    /// number its directory entry gives (`d_ino`).
    pub(crate) fn for_each_entry(&self, mut each: impl FnMut(&str, u64)) -> Result<(), StateError> {
        let dir = nix::dir::Dir::openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("list", &self.path))?;
        for entry in dir {
            let entry = entry.map_err(errno("list", &self.path))?;
            match entry.file_name().to_str() {
                Ok("." | "..") | Err(_) => {}
                Ok(name) => each(name, entry.ino()),
            }
        }
        Ok(())
    }

    /// The magic number of the filesystem this dir is on (`statfs`'s
    /// `f_type`); `None` if the kernel does not say.
    pub(crate) fn fs_type(&self) -> Option<nix::sys::statfs::FsType> {
        nix::sys::statfs::fstatfs(&self.fd).ok().map(|st| st.filesystem_type())
    }
}

/// The subdirectories of one directory that an operation touches, each
/// opened once (a lease check per row would otherwise open its bridge's
/// directory again every time), and each listed at most once: a sweep
/// (`gc`) needs a dir's lock files and then its sidecars, and one listing
/// of 10 dirs of 2000 names costs ~5 ms on tmpfs. A listing is of its
/// moment: an operation that adds files after it (`acquire`) does not list
/// again.
pub(crate) struct Subdirs<'p> {
    parent: &'p PrivateDir,
    open: HashMap<String, Option<PrivateDir>>,
    /// Names and inode numbers (`d_ino`) of the listed subdirs.
    listed: HashMap<String, Vec<DirEntry>>,
}

/// A directory entry: its name and inode number (`d_ino`).
pub(crate) type DirEntry = (String, u64);

impl<'p> Subdirs<'p> {
    pub(crate) fn new(parent: &'p PrivateDir) -> Subdirs<'p> {
        Subdirs { parent, open: HashMap::new(), listed: HashMap::new() }
    }

    /// `name` and its entries (name, inode number), or `None` if it does
    /// not exist.
    pub(crate) fn listing(&mut self, name: &str) -> Result<Option<(&PrivateDir, &[DirEntry])>, StateError> {
        if self.get(name)?.is_none() {
            return Ok(None);
        }
        if !self.listed.contains_key(name) {
            let mut entries = Vec::new();
            if let Some(Some(dir)) = self.open.get(name) {
                dir.for_each_entry(|n, ino| entries.push((n.to_string(), ino)))?;
            }
            self.listed.insert(name.to_string(), entries);
        }
        match (self.open.get(name), self.listed.get(name)) {
            (Some(Some(dir)), Some(entries)) => Ok(Some((dir, entries.as_slice()))),
            _ => Ok(None),
        }
    }

    pub(crate) fn parent(&self) -> &PrivateDir {
        self.parent
    }

    /// `name`, or `None` if it does not exist.
    pub(crate) fn get(&mut self, name: &str) -> Result<Option<&PrivateDir>, StateError> {
        if !self.open.contains_key(name) {
            let dir = self.parent.subdir(name, false)?;
            self.open.insert(name.to_string(), dir);
        }
        Ok(self.open.get(name).and_then(Option::as_ref))
    }

    /// Unlinks each `(subdir, file)` of `files` as [`PrivateDir::remove`]
    /// does, on two threads when there are many: `gc` after a host-wide
    /// crash removes thousands of sidecars at once, and on a tmpfs each
    /// unlink is the kernel freeing a page and an inode (~7 us on a 2-core
    /// VM, 60% of a 10,000-lease gc), which a second core halves. The
    /// halves meet in at most one subdir (`files` comes grouped by subdir;
    /// unlinks in one directory queue on its inode lock).
    pub(crate) fn remove_all(&mut self, files: &[(String, String)]) -> Result<(), StateError> {
        for (sub, _) in files {
            self.get(sub)?;
        }
        let open = &self.open;
        let remove = |part: &[(String, String)]| -> Result<(), StateError> {
            for (sub, name) in part {
                if let Some(Some(dir)) = open.get(sub) {
                    dir.remove(name)?;
                }
            }
            Ok(())
        };
        // Below this, a thread's start costs more than it saves.
        const ON_TWO_THREADS_FROM: usize = 256;
        if files.len() < ON_TWO_THREADS_FROM {
            return remove(files);
        }
        let (mine, theirs) = files.split_at(files.len() / 2);
        std::thread::scope(|s| {
            // No thread to be had (a pids limit, no memory): all on this one.
            let Ok(other) = std::thread::Builder::new().spawn_scoped(s, || remove(theirs)) else {
                return remove(files);
            };
            let first = remove(mine);
            let second = other.join().unwrap_or_else(|_| {
                Err(StateError::io("remove files in", &self.parent.path)(io::Error::other(
                    "the removing thread panicked",
                )))
            });
            first.and(second)
        })
    }

    /// `name`, created if missing.
    pub(crate) fn create(&mut self, name: &str) -> Result<&PrivateDir, StateError> {
        if !matches!(self.open.get(name), Some(Some(_))) {
            let dir = self.parent.subdir(name, true)?;
            self.open.insert(name.to_string(), dir);
        }
        self.open
            .get(name)
            .and_then(Option::as_ref)
            .ok_or_else(|| StateError::io("create", &self.parent.join(name))(Errno::ENOENT.into()))
    }
}

/// One directory of a path being resolved.
struct Entry {
    fd: OwnedFd,
    path: PathBuf,
    st: FileStat,
    /// Checked as [`Role::Own`] already.
    own: bool,
}

/// An O_PATH fd of `name` in `dir`, the symlink itself if it is one.
fn open_path<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// The names of a path, `..` kept (it is resolved against the directories
/// actually reached, as the kernel does), `/` and `.` dropped.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// `StateError::io` for a failed *at call.
fn errno(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> StateError {
    let io = StateError::io(action, path);
    move |e| io(e.into())
}

/// Root, or the user running repeatr (see the module comment).
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn is_link(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

const GROUP_OTHER_WRITE: u32 = 0o022;

fn check_dir(st: &FileStat, path: &Path, role: Role) -> Result<(), StateError> {
    let mode = st.st_mode & 0o7777;
    let writable = mode & GROUP_OTHER_WRITE != 0;
    let sticky = mode & libc::S_ISVTX != 0;
    let problem = if !trusted(st.st_uid) {
        format!("is owned by uid {}, not root (mode {mode:04o})", st.st_uid)
    } else if writable && (role == Role::Own || !sticky) {
        let without = if role == Role::Above { " without the sticky bit" } else { "" };
        format!("is writable by group or others{without} (mode {mode:04o})")
    } else {
        return Ok(());
    };
    let p = path.display();
    Err(match role {
        Role::Own => StateError::Unsafe {
            what: "state dir",
            path: path.to_path_buf(),
            problem,
            remedy: format!(
                "another user could plant links in it; chown root:root {p} && chmod 700 {p}, or pass another --state-dir"
            ),
        },
        Role::Above => StateError::Unsafe {
            what: "directory",
            path: path.to_path_buf(),
            problem,
            remedy: format!(
                "it is on the state dir's path, so another user could swap what is below it; chown root:root {p} && chmod go-w {p}, or pass another --state-dir"
            ),
        },
    })
}

fn unsafe_link(path: &Path, uid: u32) -> StateError {
    StateError::Unsafe {
        what: "symlink",
        path: path.to_path_buf(),
        problem: format!("is owned by uid {uid}, not root"),
        remedy:
            "it is on the state dir's path and its owner could point it elsewhere; pass the real path as --state-dir"
                .into(),
    }
}

fn check_file(st: &FileStat, path: &Path) -> Result<(), StateError> {
    let problem = if is_link(st) {
        "is a symlink".to_string()
    } else if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        "is not a regular file".to_string()
    } else if !trusted(st.st_uid) {
        format!("is owned by uid {}, not root", st.st_uid)
    } else if st.st_nlink > 1 {
        format!("has {} hard links", st.st_nlink)
    } else {
        return Ok(());
    };
    Err(unsafe_file(path, problem))
}

fn unsafe_file(path: &Path, problem: String) -> StateError {
    StateError::Unsafe {
        what: "state file",
        path: path.to_path_buf(),
        problem,
        remedy: "repeatr never makes one (another user may have planted it): remove it, or pass another --state-dir"
            .into(),
    }
}
