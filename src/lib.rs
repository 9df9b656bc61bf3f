//! repeatr: a daemonless container job runner.
//!
//! One invocation is one job: `job` reads top to bottom as
//! launch -> lease -> plug network -> go -> wait -> tear down -> release,
//! and each stage lives in the module named for it. `cli` turns the command
//! line into a job's request (or an `admin` command); the job knows nothing
//! of the command line.

mod admin;
pub mod archive;
pub mod cbpf;
pub mod cgroup;
pub mod civil_time;
mod cli;
pub mod config;
pub mod container;
pub mod duration;
pub mod error;
pub mod escape;
pub mod formula;
mod formula_run;
mod job;
mod job_control;
pub mod limits;
pub mod network;
mod output;
pub mod publish;
pub mod remote;
pub mod state;
pub mod sys;
pub mod ware_cache;

/// The `repeatr` command: parses the command line, runs it, and returns
/// the process's exit code.
pub fn main() -> i32 {
    cli::main()
}

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
