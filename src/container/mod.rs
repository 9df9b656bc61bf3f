//! The container: everything between "a validated job spec" and "the job's
//! exit status". Named after the launch stages (as youki does):
//!
//! - `spec`: what to launch, validated and opened on the host *before* any
//!   namespace exists, so bad input fails early and leaves nothing behind;
//! - `spawn`: the clone into new namespaces and the runner<->child channels;
//! - `supervise`: the runner's side while the job runs: signals, stop and
//!   timeout deadlines, the terminal relay, how the job ended;
//! - `protocol`: what travels over those pipes, and the launch's exit codes;
//! - `setup`: the child's side, from clone to exec, step by step;
//! - `init`: the job's pid 1, which forks the command, forwards signals
//!   to it and reaps orphans;
//! - `tty`: `-t`, the job's pseudo-terminal and the runner's relay;
//! - `rootfs`, `mounts`: building the job's root inside its mount namespace;
//! - `resolve`: paths inside that root, looked up as if it were `/`;
//! - `syscall`: the seam those steps run through (the kernel, or a test's
//!   recorder), so that their order is checked without root;
//! - `security`: capabilities, no_new_privs, signal reset, fd hygiene;
//! - `seccomp`: the syscall filter, the last step before the exec;
//! - `signals`: forwarding the runner's signals to the job.
//!
//! Rootfs tars and wares reach a job as trees of the ware cache
//! (`crate::ware_cache`), unpacked there by `crate::archive`.

pub mod init;
pub mod mounts;
pub mod protocol;
#[cfg(test)]
mod recorder;
pub mod resolve;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod setup;
pub mod signals;
pub mod spawn;
pub mod spec;
pub mod supervise;
pub mod syscall;
pub mod tty;

pub use protocol::GoMessage;
pub use spawn::{Exit, Launched, spawn};
pub use spec::{
    BindMount, Caps, MakeDir, NetMode, Process, Rootfs, RootfsArg, Seccomp, Spec, SpecError, TmpfsSizes, User,
};
pub use supervise::{Ended, Kill, Usage, go_and_wait};
