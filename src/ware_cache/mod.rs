//! The unpacked-ware cache: each ware (and each `--rootfs` tar) unpacked
//! once onto disk, checked, published atomically, and used by every later
//! job as the read-only lower layer of its overlay root, without a copy
//! or a re-hash. README "The ware cache" has the user's view.
//!
//! - `store`: the directory, its entries, and `ensure` (fill once, under
//!   a lock; hold a use lock while the entry is used)
//! - `ware`: wares from a warehouse, verified while they are unpacked
//! - `tar_root`: `--rootfs` tars, keyed by the hash of their bytes
//! - `evict`: least recently used entries out, entries in use never
//! - `lock`: the use and fill locks
//! - `error`: what goes wrong
//!
//! A source of wares other than a local warehouse (a remote fetch) calls
//! [`Cache::ensure`] with a fill that writes the tree into the directory
//! it is given and fails unless the tree is what its key says.

mod error;
mod evict;
mod lock;
mod store;
mod tar_root;
mod ware;

pub use error::CacheError;
pub use evict::{EntryInfo, Eviction};
pub use store::{Cache, Entry, Filled};
pub use ware::ware_key;

use std::path::Path;

use crate::config::Config;

impl Cache {
    /// The cache the configuration names (`[cache] dir`, `max_size`).
    pub fn from_config(config: Option<&Path>) -> Result<Cache, CacheError> {
        let c = Config::load_cache(config)?;
        Cache::open(&c.dir, c.max_size)
    }

    /// [`from_config`](Cache::from_config), `None` if it does not exist.
    pub fn existing_from_config(config: Option<&Path>) -> Result<Option<Cache>, CacheError> {
        let c = Config::load_cache(config)?;
        Cache::open_existing(&c.dir, c.max_size)
    }
}
