//! What goes wrong with a warehouse by URL: one line naming the URL and
//! saying what to do. Each variant has a class (`RemoteError::class`) that
//! `crate::error` maps to an exit code, as it does for `WareError`.

use std::io;
use std::path::PathBuf;

use crate::formula::error::{WareClass, WareError};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Ware(#[from] WareError),

    #[error(
        "warehouse {url:?}: {problem}; give a directory, file:///DIR, s3://BUCKET/PREFIX, \
         http://HOST/PATH or https://HOST/PATH"
    )]
    BadUrl { url: String, problem: String },

    #[error("warehouse {url} cannot be reached: {why}; check the URL, AWS_ENDPOINT_URL and the network")]
    Unreachable { url: String, why: String },

    #[error(
        "warehouse {url} refused the request (HTTP {status}{detail}); check the credentials \
         (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or [warehouse.s3]) and AWS_REGION"
    )]
    Denied { url: String, status: u16, detail: String },

    #[error("warehouse {url} answered HTTP {status}{detail}; check the store and try again")]
    Status { url: String, status: u16, detail: String },

    #[error("transfer from or to {url} failed: {why}; try again")]
    Transfer { url: String, why: String },

    #[error(
        "ware {id} is in none of the warehouses searched ({searched}); pack or fetch it \
         first, or add the warehouse that has it with --warehouse"
    )]
    NotFound { id: String, searched: String },

    #[error("{url} does not hold ware {id}: {problem}; delete that object and pack or save the ware there again")]
    NotAWare { id: String, url: String, problem: String },

    #[error("warehouse {url} is read-only (HTTP); save outputs to a directory or s3:// with --save-to")]
    ReadOnly { url: String },

    #[error(
        "S3 settings: {problem}; set AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (or [warehouse.s3] in the config), or none of the keys for a public bucket"
    )]
    Settings { problem: String },

    #[error(
        "download area {dir:?}: cannot {action}: {source}; check that it is a writable local directory (warehouse.download_dir)"
    )]
    Area { dir: PathBuf, action: &'static str, source: io::Error },
}

impl RemoteError {
    /// The class `crate::error` maps to an exit code: a ware's classes,
    /// so a missing or damaged ware exits alike wherever it was looked for.
    pub fn class(&self) -> WareClass {
        match self {
            RemoteError::Ware(e) => e.class(),
            RemoteError::NotFound { .. } => WareClass::NotFound,
            RemoteError::NotAWare { .. } => WareClass::Corrupt,
            RemoteError::BadUrl { .. }
            | RemoteError::Unreachable { .. }
            | RemoteError::Denied { .. }
            | RemoteError::Status { .. }
            | RemoteError::Transfer { .. }
            | RemoteError::ReadOnly { .. }
            | RemoteError::Settings { .. }
            | RemoteError::Area { .. } => WareClass::Host,
        }
    }
}
