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
