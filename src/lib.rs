//! repeatr: a daemonless container job runner.
//!
//! One invocation is one job: `job` reads top to bottom as
//! lease -> set up -> launch -> wait -> tear down -> release, and each stage
//! lives in the module named for it.

pub mod admin;
pub mod cli;
pub mod config;
pub mod container;
pub mod error;
pub mod formula;
pub mod job;
pub mod network;
pub mod state;
pub mod sys;

/// For unit tests that need root: false (skip) when not root, but a
/// failure when CI=true, where a skipped test would count as passed.
#[cfg(test)]
pub(crate) fn test_require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "needs root (CI=true)");
    eprintln!("skipping: needs root");
    false
}
