//! Signals the runner takes for the job. The runner stays in the
//! foreground as the job's parent, so a Ctrl-C, a `kill`, or a CI system's
//! SIGTERM aimed at it must reach the job; a Ctrl-Z must stop the job with
//! it; a resized terminal must resize the job's (`supervise` says what
//! each one does).
//!
//! signal-hook's handlers only set a flag and write a byte to a self-pipe;
//! the runner's poll loop wakes on the pipe and handles each flagged signal.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;

/// The signals a user sends to a foreground job, and the terminal's.
pub const HANDLED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTSTP,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

/// The signals that ask the job to end: the first starts the stop timeout.
pub fn is_terminating(sig: Signal) -> bool {
    matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT)
}

pub struct Forwarder {
    wake: UnixStream,
    flags: Vec<(Signal, Arc<AtomicBool>)>,
}

impl Forwarder {
    /// Installs the handlers. From here on these signals no longer kill (or
    /// stop) the runner: they are queued for the job (or abort a launch in
    /// progress).
    pub fn install() -> io::Result<Self> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let mut flags = Vec::new();
        for sig in HANDLED {
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
