//! What a `gc` pass found of one kind of garbage a dead runner left (job
//! records, output dirs, cgroups): one report type for every kind, so
//! `admin::gc` adds them up the same way.

use std::path::PathBuf;

#[derive(Debug, Default)]
pub struct Reclaimed {
    /// What was removed (or, in a dry run, would be).
    pub removed: Vec<PathBuf>,
    /// One line each for what could not be looked at or removed.
    pub errors: Vec<String>,
}
