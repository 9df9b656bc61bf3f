//! The container: everything between "a validated job spec" and "the job's
//! exit status". Named after the launch stages (as youki does):
//!
//! - `spec`: what to launch, validated and opened on the host *before* any
//!   namespace exists, so bad input fails early and leaves nothing behind;
//! - `spawn`: the clone into new namespaces and the runner<->child pipes;
//! - `protocol`: what travels over those pipes, and the launch's exit codes;
//! - `init`: the child's side, from clone to exec, step by step;
//! - `rootfs`, `mounts`: building the job's root inside its mount namespace;
//! - `resolve`: paths inside that root, looked up as if it were `/`;
//! - `syscall`: the seam those steps run through (the kernel, or a test's
//!   recorder), so that their order is checked without root;
//! - `security`: capabilities, no_new_privs, signal reset, fd hygiene;
//! - `seccomp`: the syscall filter, the last step before the exec;
//! - `signals`: forwarding the runner's signals to the job.
//!
//! Rootfs tars are unpacked by `crate::archive`.

pub mod init;
pub mod mounts;
pub mod protocol;
#[cfg(test)]
mod recorder;
pub mod resolve;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod signals;
pub mod spawn;
pub mod spec;
pub mod syscall;

pub use protocol::GoMessage;
pub use spawn::{Exit, Launched, spawn};
pub use spec::{BindMount, Caps, MakeDir, NetMode, Rootfs, Seccomp, Spec, SpecError, User};
