//! Why the job's seccomp filter cannot be had, as the runner reports it
//! (exit 125, before anything is set up).

use std::io;
use std::path::PathBuf;

use super::profile::ProfileError;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("bad --security-opt {0:?}: repeatr knows seccomp=unconfined and seccomp=PROFILE.json")]
    Option(String),
    #[error("--security-opt seccomp= given twice; give one profile (or unconfined)")]
    Twice,
    #[error("seccomp profile {path:?} cannot be read: {err}")]
    Read { path: PathBuf, err: io::Error },
    #[error("seccomp profile {path:?}: {err}; see docker's seccomp profile format")]
    Profile { path: PathBuf, err: ProfileError },
    #[error("seccomp profiles are compiled for x86_64 and aarch64 only, not {0}")]
    Arch(&'static str),
    #[error("the kernel's release {0:?} (/proc/sys/kernel/osrelease) is not like 6.1.0; cannot decide minKernel")]
    Kernel(String),
}
