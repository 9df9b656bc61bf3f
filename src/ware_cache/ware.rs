//! Wares from a warehouse into the cache: `entries/tar-<hash>`, verified
//! while it is unpacked (`Warehouse::unpack_checked`), so a corrupt ware
//! never enters and a cached one is never read or hashed again.

use super::error::CacheError;
use super::store::{Cache, Entry, Filled};
use crate::formula::{WareId, Warehouse};

impl Cache {
    /// The ware `id`'s tree, unpacked from `warehouse` if not cached yet.
    /// `warehouse` is asked for only when the entry is absent: a cached ware
    /// is neither looked up nor fetched from a remote warehouse again.
    pub fn ensure_ware(
        &self,
        id: &WareId,
        warehouse: impl FnOnce() -> Result<Warehouse, CacheError>,
    ) -> Result<Entry, CacheError> {
        self.ensure(&ware_key(id), |dest| {
            let stats = warehouse()?.unpack_checked(id, dest)?;
            Ok(Filled { entries: stats.entries })
        })
    }
}

/// The cache key of a ware.
pub fn ware_key(id: &WareId) -> String {
    format!("{}-{}", WareId::PACKTYPE, id.hash)
}
