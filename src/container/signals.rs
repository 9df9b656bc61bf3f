//! Signals the runner forwards to the job. The runner stays in the
//! foreground as the job's parent, so a Ctrl-C, a `kill`, or a CI system's
//! SIGTERM aimed at it must reach the job.
//!
//! signal-hook's handlers only set a flag and write a byte to a self-pipe;
//! the runner's poll loop wakes on the pipe and forwards each flagged signal
//! through the job's pidfd.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;

/// The signals a user sends to a foreground job.
pub const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

pub struct Forwarder {
    wake: UnixStream,
    flags: Vec<(Signal, Arc<AtomicBool>)>,
}

impl Forwarder {
    /// Installs the handlers. From here on these signals no longer kill the
    /// runner: they are queued for the job (or abort a launch in progress).
    pub fn install() -> io::Result<Self> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let mut flags = Vec::new();
        for sig in FORWARDED {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(sig as i32, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(sig as i32, write.try_clone()?)?;
            flags.push((sig, flag));
        }
        Ok(Forwarder { wake, flags })
    }

    /// The fd to poll for "a signal came".
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The signals that came since the last call. The pipe is drained
    /// before the flags are read, so a signal arriving in between is never
    /// lost: at worst it causes one spurious wake-up.
    pub fn pending(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        self.flags.iter().filter(|(_, f)| f.swap(false, Ordering::SeqCst)).map(|(s, _)| *s).collect()
    }
}
