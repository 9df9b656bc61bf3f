//! What can go wrong with wares, one variant per thing the user must do
//! differently. Each variant belongs to a class (`WareError::class`), and
//! `crate::error` gives each class its exit code, so a script can tell "the
//! ware is missing" from "the ware is damaged" from "the request itself is
//! wrong" from a broken host.

use std::io;
use std::path::PathBuf;

use crate::archive::TarError;

#[derive(Debug, thiserror::Error)]
pub enum WareError {
    #[error("ware id `{id}` {problem}; expected `tar:` followed by 64 lowercase hex digits")]
    BadWareId { id: String, problem: &'static str },

    #[error("invalid formula: {problem}")]
    BadFormula { problem: String },

    #[error("bad filter {spec}: {problem}")]
    BadFilter { spec: String, problem: String },

    #[error(
        "`{path}` is {what} and the `{filter}` filter is `reject`; remove it, or set \
         `{filter}` to `keep` or `ignore` (e.g. --filter {filter}=keep)"
    )]
    Rejected { path: String, what: &'static str, filter: &'static str },

    #[error("`{path}` is a socket, which a ware cannot hold; remove it before packing")]
    Socket { path: String },

    #[error("`{path}` {problem}, which a ware's tar cannot carry; rename it before packing")]
    Unstorable { path: String, problem: &'static str },

    #[error("cannot read {path:?} to pack it: {source}; check the path and its permissions")]
    Source { path: PathBuf, source: io::Error },

    #[error("the tar to pack is unusable: {problem}; re-create it (e.g. `tar -C DIR -cf x.tar .`)")]
    SourceTar { problem: String },

    #[error("`{path}` changed while being packed ({what}); pack a tree nobody is writing to")]
    Changed { path: String, what: &'static str },

    #[error(
        "ware {id} is not in the warehouse {dir:?}; pack or fetch it first, or point \
         --warehouse / REPEATR_WAREHOUSE at the warehouse that has it"
    )]
    NotFound { id: String, dir: PathBuf },

    #[error("ware {id} ({path:?}) is corrupt: {problem}; delete that file and pack or fetch the ware again")]
    Corrupt { id: String, path: PathBuf, problem: String },

    #[error(
        "ware {id} ({path:?}) is corrupt: its content hashes to {actual}; delete that file and \
         pack or fetch the ware again"
    )]
    HashMismatch { id: String, path: PathBuf, actual: String },

    #[error("warehouse {dir:?}: cannot {action}: {source}; check that it is a writable local directory")]
    Warehouse { dir: PathBuf, action: &'static str, source: io::Error },

    #[error(
        "no warehouse given: pass --warehouse DIR|URL, set REPEATR_WAREHOUSE, or set warehouse.fetch in the config"
    )]
    NoWarehouse,

    #[error("cannot unpack into {dir:?}: {problem}; pass an existing, empty directory")]
    Dest { dir: PathBuf, problem: String },

    #[error("cannot write the formula in its canonical form: {0}; this is a bug in repeatr, please report it")]
    Canonical(#[source] serde_json::Error),

    #[error("unpacking ware {id}: {source}")]
    Unpack {
        id: String,
        #[source]
        source: TarError,
    },
}

/// What a [`WareError`] asks of the user, one class per exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WareClass {
    /// The request is wrong: fix the input.
    Invalid,
    /// The ware is not in the warehouse: pack or fetch it.
    NotFound,
    /// The stored ware is damaged: delete it and pack or fetch it again.
    Corrupt,
    /// The host failed (a file, the warehouse, unpacking): a runner error.
    Host,
}

impl WareError {
    /// What this error asks of the user; `crate::error` turns that into the
    /// exit code.
    pub fn class(&self) -> WareClass {
        match self {
            WareError::BadWareId { .. }
            | WareError::BadFormula { .. }
            | WareError::BadFilter { .. }
            | WareError::Rejected { .. }
            | WareError::Socket { .. }
            | WareError::Unstorable { .. }
            | WareError::SourceTar { .. } => WareClass::Invalid,
            WareError::NotFound { .. } => WareClass::NotFound,
            WareError::Corrupt { .. } | WareError::HashMismatch { .. } => WareClass::Corrupt,
            WareError::Source { .. }
            | WareError::Changed { .. }
            | WareError::Warehouse { .. }
            | WareError::NoWarehouse
            | WareError::Dest { .. }
            | WareError::Canonical(_)
            | WareError::Unpack { .. } => WareClass::Host,
        }
    }
}
