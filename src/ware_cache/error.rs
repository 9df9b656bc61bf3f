//! What can go wrong with the unpacked-ware cache, one line each.

use std::io;
use std::path::PathBuf;

use crate::archive::TarError;
use crate::formula::WareError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache dir (or a directory on its path) is not root's alone.
    #[error("ware cache: {0}")]
    Dir(#[from] StateError),

    #[error(
        "ware cache {}: mode {mode:04o} lets others in (its entries hold the wares' setuid files); \
         run `chmod 700 {}` or set [cache] dir to another directory",
        path.display(),
        path.display()
    )]
    Open { path: PathBuf, mode: u32 },

    #[error("ware cache: cannot {action} {}: {source}; check that the cache dir is on a local, writable filesystem", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },

    /// The ware itself is missing, damaged or not what its id says: the
    /// warehouse's own error, with its exit code.
    #[error(transparent)]
    Ware(#[from] WareError),

    /// A remote warehouse could not give the ware (its own error and exit code).
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),

    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// A `--rootfs` tar that cannot be unpacked.
    #[error("{0}")]
    Tar(#[from] TarError),
}

impl CacheError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { action, path, source }
    }
}
