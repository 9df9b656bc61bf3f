//! Wares and formulas: content-addressed file trees and the jobs that
//! consume and produce them (see docs/ware-hash.md and the README's
//! "Formulas" section).
//!
//! - `ware_id`: `tar:<hash>` ids and SHA-256 digests
//! - `tree`: the normalized tree and its manifest (what the hash covers)
//! - `filter`: uid/gid/mtime flattening and setid/sticky/device policies
//! - `source`: reading a directory or a tar into entries
//! - `normtar`: writing the normalized tar
//! - `pack`: one pass that hashes (and writes) a tree
//! - `verify`: reading a stored ware back, only as `normtar` writes it
//! - `warehouse`: the local store: pack, verify, unpack
//! - `setup`: formula types and the setup hash
//! - `error`: what goes wrong, and its class (which `crate::error` maps to
//!   an exit code)

pub mod error;
pub mod filter;
mod normtar;
pub mod pack;
pub mod setup;
pub(crate) mod source;
pub mod tree;
pub(crate) mod verify;
pub mod ware_id;
pub mod warehouse;

pub use error::{WareClass, WareError};
pub use filter::{Filters, IdFilter, MtimeFilter, Policy, ROOTFS_PRESET, Refused};
pub use pack::hash_path;
pub use setup::{Formula, SetupHash};
pub use ware_id::{Digest, WareId};
pub use warehouse::Warehouse;
