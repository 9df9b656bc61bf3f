//! Runner errors, mapped to exit codes in one place.
//!
//! The job's own status passes through untouched; everything that goes
//! wrong in the runner before or around the job is 125, like docker and
//! podman, so scripts can tell a broken job from a broken host. 126 and 127
//! (command not executable / not found) come from the launch itself.

use std::io;

use crate::container::SpecError;
use crate::formula::error::{WareClass, WareError};

/// The exit code of every runner error that has no class of its own below;
/// defined with the launch protocol, whose setup failures are runner errors.
pub use crate::container::protocol::EXIT_RUNNER_ERROR;

// Ware error classes with codes of their own (`WareError::class`, mapped in
// `Error::exit_code`), so a script can tell a bad request or a missing /
// damaged ware from a broken host. All below 125, like it; the job's own
// codes only pass through `run`.
/// The request is invalid: a bad ware id, filter or formula, or a tree that
/// a filter rejects (setid or device file). Fix the input.
pub const EXIT_INVALID: i32 = 121;
/// The ware is in none of the warehouses searched. Pack or fetch it.
pub const EXIT_WARE_NOT_FOUND: i32 = 122;
/// The stored ware is damaged: unreadable, not a ware, or its content hashes
/// to another id, in a local warehouse or as a remote one served it.
/// Delete it and pack or fetch it again.
pub const EXIT_WARE_CORRUPT: i32 = 123;
/// `repeatr stop` / `kill`: no live job has that name. Like `grep` finding
/// nothing, a plain 1: these commands pass no job's status through.
pub const EXIT_NO_SUCH_JOB: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("repeatr must run as root (it creates namespaces, mounts and network devices); run it with sudo")]
    NotRoot,
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{}", state_dir_message(path, err))]
    StateDir { path: std::path::PathBuf, err: io::Error },
    #[error("{what}: {err}")]
    Io { what: &'static str, err: io::Error },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("teardown: {0}")]
    Teardown(String),
    #[error(transparent)]
    Ware(#[from] WareError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Cache(crate::ware_cache::CacheError),
    #[error(transparent)]
    Limits(#[from] crate::limits::LimitsError),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// A run asked for a job id that a live job has (`job::record`).
    #[error("job {job} is running (pid {})", pid.map_or("unknown".to_string(), |p| p.to_string()))]
    JobRunning { job: String, pid: Option<u32> },
    /// `stop` or `kill` named no live job.
    #[error("no running job {}; see repeatr ps", crate::escape::escaped(.0.as_bytes()))]
    NoSuchJob(String),
}

/// A ware that is missing or corrupt keeps its own exit code when the
/// cache is what met it.
impl From<crate::ware_cache::CacheError> for Error {
    fn from(e: crate::ware_cache::CacheError) -> Error {
        match e {
            crate::ware_cache::CacheError::Ware(w) => Error::Ware(w),
            crate::ware_cache::CacheError::Remote(r) => Error::Remote(r),
            other => Error::Cache(other),
        }
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Ware(e) => ware_exit_code(e.class()),
            Error::Remote(e) => ware_exit_code(e.class()),
            Error::NoSuchJob(_) => EXIT_NO_SUCH_JOB,
            _ => EXIT_RUNNER_ERROR,
        }
    }

    pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |err| Error::Io { what, err }
    }
}

fn ware_exit_code(class: WareClass) -> i32 {
    match class {
        WareClass::Invalid => EXIT_INVALID,
        WareClass::NotFound => EXIT_WARE_NOT_FOUND,
        WareClass::Corrupt => EXIT_WARE_CORRUPT,
        WareClass::Host => EXIT_RUNNER_ERROR,
    }
}

/// An I/O error in the state dir says where, and what to do; one that
/// carries the state store's own diagnosis (a dir another user owns, a
/// planted link) already says both, and a second remedy would mislead.
fn state_dir_message(path: &std::path::Path, err: &io::Error) -> String {
    match err.get_ref().and_then(|e| e.downcast_ref::<crate::state::StateError>()) {
        Some(diagnosed) => diagnosed.to_string(),
        None => {
            format!("state dir {path:?}: {err}; check that it is on a local, writable filesystem or pass --state-dir")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dir_error_with_its_own_diagnosis_gets_no_second_remedy() {
        let plain = Error::StateDir { path: "/x".into(), err: io::Error::from_raw_os_error(libc::EROFS) };
        assert!(plain.to_string().contains("pass --state-dir"), "{plain}");
        let diagnosed = crate::state::StateError::io("open lock file", std::path::Path::new("/x/y"))(
            io::Error::from_raw_os_error(libc::ELOOP),
        );
        let wrapped = Error::StateDir { path: "/x".into(), err: io::Error::from(diagnosed) };
        assert!(!wrapped.to_string().contains("local, writable filesystem"), "{wrapped}");
    }
}
