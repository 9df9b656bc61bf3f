//! The state store: one SQLite file shared by every `repeatr run`, guarded
//! by a sidecar flock, with a per-slot lock file that tells live jobs from
//! dead ones. `state-layout.md` at the repo root documents every file.
//!
//! A process keeps one connection for all its operations (see
//! `StateDir::conn` for why), and reopens it when `repeatr gc --rebuild`
//! has put a new file in place.

mod alloc;
mod dir;
mod egress;
mod error;
mod generation;
mod leases;
mod liveness;
mod lock;
mod ports;
mod private;
mod rebuild;
mod reclaimed;
mod record;
#[cfg(test)]
pub(crate) use record::example as example_record;
mod removable_lock;
mod schema;
mod sidecar;
mod slot;

pub use dir::{StateDir, private_subdir};
pub use egress::{EgressMark, egress_marks, read_egress_mark, update_egress_mark};
pub use error::{Hint, REBUILD_HINT, StateError};
pub use leases::{GcReport, Lease, LeaseInfo, LeaseRequest, LeaseState};
pub use lock::SlotLock;
pub use ports::PublishedPort;
pub(crate) use private::PrivateDir;
pub use rebuild::RebuildReport;
pub use reclaimed::Reclaimed;
pub use record::LeaseRecord;
pub(crate) use removable_lock::RemovableLock;
pub use slot::{
    MAX_LEAVES, MAX_SLOTS, PORTS_ENV, PORTS_PER_BRIDGE, domain_bridge, domain_bridges, iface_name, leaf_of,
    ports_per_bridge, uplink_names,
};

/// Where the state lives unless told otherwise: /run is a tmpfs, so a
/// reboot starts from nothing, and it is local (flock is unreliable on NFS).
pub const DEFAULT_STATE_DIR: &str = "/run/repeatr";
