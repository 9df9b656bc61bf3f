//! What can go wrong with the state dir. Every message is one line saying
//! what is wrong (naming the file) and what to do about it.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rusqlite::ErrorCode;

/// The command that repairs a damaged or lost state.db.
pub const REBUILD_HINT: &str = "run `repeatr gc --rebuild` to rebuild it from the live jobs";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {}: {source}{hint}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error, hint: Hint },

    #[error("state database {}: {source}{hint}", path.display())]
    Db { path: PathBuf, source: rusqlite::Error, hint: Hint },

    #[error("state database {} is corrupt ({detail}); {REBUILD_HINT}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "state database {} has no record of live job {job} (its lease is in {}); {REBUILD_HINT}",
        db.display(),
        sidecar.display()
    )]
    LostLeases { db: PathBuf, sidecar: PathBuf, job: String },

    #[error(
        "state database {} has schema version {found}, newer than this repeatr knows ({known}); upgrade repeatr",
        path.display()
    )]
    SchemaTooNew { path: PathBuf, found: i64, known: i64 },

    // The exact shape is part of the interface: scripts match on it.
    #[error("no free address in {subnet}: {leased} leased")]
    Exhausted { subnet: Ipv4Net, leased: usize },

    #[error(
        "no free slot on bridge {bridge}: all {ports} slots of each of its {bridges} bridges (the hub and its leaves) are in use (a Linux bridge takes at most 1024 ports); wait for jobs to end or use another bridge"
    )]
    NoFreeSlot { bridge: String, bridges: u16, ports: u16 },

    #[error("--ip {ip} is the {role} of {subnet}; pick a host address or leave --ip out")]
    IpReserved { ip: Ipv4Addr, role: &'static str, subnet: Ipv4Net },

    #[error("--ip {ip} is outside the subnet {subnet}; pick an address in it or leave --ip out")]
    IpOutside { ip: Ipv4Addr, subnet: Ipv4Net },

    #[error("--ip {ip} is taken by job {job}; pick another address or leave --ip out")]
    IpTaken { ip: Ipv4Addr, job: String },

    #[error("job {job} is already running (ip {ip}, pid {pid}); pick another job id or stop that job first")]
    DuplicateJob { job: String, ip: Ipv4Addr, pid: u32 },

    /// Something another user could own or have planted: see `private`.
    #[error("{what} {} {problem}; {remedy}", path.display())]
    Unsafe { what: &'static str, path: PathBuf, problem: String, remedy: String },

    #[error(
        "host port {port} is published by job {job} (pid {pid}); pick another host port for --publish or stop that job first"
    )]
    PortTaken { port: String, job: String, pid: u32 },

    #[error("invalid lease request: {0}")]
    Request(String),
}

impl StateError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| {
            let hint = match source.kind() {
                io::ErrorKind::ReadOnlyFilesystem => Hint::ReadOnly,
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Hint::Full,
                io::ErrorKind::PermissionDenied => Hint::Permission,
                _ => Hint::None,
            };
            StateError::Io { action, path, source, hint }
        }
    }

    /// Classifies an SQLite failure: a damaged file is told apart from
    /// other failures because its remedy (a rebuild) is different.
    pub(crate) fn db(path: &Path) -> impl FnOnce(rusqlite::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                StateError::Corrupt { path, detail: source.to_string() }
            }
            _ => match source {
                // A row whose text is no address can only come from damage.
                rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
                    StateError::Corrupt { path, detail: source.to_string() }
                }
                source => {
                    let hint = db_hint(&path, &source);
                    StateError::Db { path, source, hint }
                }
            },
        }
    }
}

/// For callers that speak io::Error: the message stays whole, and an I/O
/// failure keeps its kind.
impl From<StateError> for io::Error {
    fn from(e: StateError) -> io::Error {
        let kind = match &e {
            StateError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e)
    }
}

/// What to do about a failure, appended to its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    None,
    ReadOnly,
    Full,
    Permission,
    Busy,
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hint::None => "",
            Hint::ReadOnly => "; the state dir must be writable: remount it read-write or use another state dir",
            Hint::Full => "; the state dir's filesystem is full: free some space",
            Hint::Permission => "; run repeatr as root or fix the permissions",
            Hint::Busy => "; another repeatr held it too long: retry",
        })
    }
}

fn db_hint(db: &Path, e: &rusqlite::Error) -> Hint {
    match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => Hint::ReadOnly,
        Some(ErrorCode::DiskFull) => Hint::Full,
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => Hint::Permission,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Hint::Busy,
        // SQLite reports ENOSPC on its WAL or shared-memory file as a plain
        // "disk I/O error": look at the filesystem to tell the user why.
        Some(ErrorCode::SystemIoFailure) => fs_hint(db),
        _ => Hint::None,
    }
}

fn fs_hint(db: &Path) -> Hint {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Some(Ok(fs)) = db.parent().map(statvfs) else {
        return Hint::None;
    };
    if fs.flags().contains(FsFlags::ST_RDONLY) {
        Hint::ReadOnly
    } else if fs.blocks_available() == 0 {
        Hint::Full
    } else {
        Hint::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_msg(kind: io::ErrorKind) -> String {
        let e = StateError::io("open lock file", Path::new("/run/repeatr/state.lock"))(io::Error::from(kind));
        let msg = e.to_string();
        assert!(!msg.contains('\n') && msg.contains("/run/repeatr/state.lock"), "{msg}");
        msg
    }

    #[test]
    fn io_errors_say_what_to_do() {
        assert!(io_msg(io::ErrorKind::ReadOnlyFilesystem).contains("must be writable"));
        assert!(io_msg(io::ErrorKind::StorageFull).contains("is full"));
        assert!(io_msg(io::ErrorKind::PermissionDenied).contains("root"));
    }

    #[test]
    fn sqlite_errors_are_classified() {
        let db = Path::new("/run/repeatr/state.db");
        let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        let e = StateError::db(db)(sqlite(rusqlite::ffi::SQLITE_NOTADB));
        assert!(matches!(e, StateError::Corrupt { .. }));
        assert!(e.to_string().contains("repeatr gc --rebuild"), "{e}");
        let e = StateError::db(db)(sqlite(rusqlite::ffi::SQLITE_FULL)).to_string();
        assert!(e.contains("state.db") && e.contains("is full") && !e.contains('\n'), "{e}");
        let e = StateError::db(db)(sqlite(rusqlite::ffi::SQLITE_READONLY)).to_string();
        assert!(e.contains("must be writable"), "{e}");
    }
}
