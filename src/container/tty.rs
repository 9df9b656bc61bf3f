//! `-t`: a pseudo-terminal for the job, as `podman run -t` gives one.
//!
//! The child opens it in the job's own devpts instance (after the pivot,
//! so `tty` in the job names /dev/pts/N of the job's /dev, and as the
//! job's user, so the slave is theirs), keeps the slave for the command's
//! stdio and controlling terminal, and sends the master to the runner over
//! the control socket. The runner relays between its own terminal and the
//! master ([`Relay`]), with its terminal in raw mode ([`RawMode`]) when
//! stdin is attached, so that Ctrl-C, Ctrl-Z and job control act inside the
//! job.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::termios::{self, SetArg, Termios};

use crate::sys;

/// The job's end of its terminal.
pub struct JobTerminal {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pty in the devpts behind `/dev/ptmx`: call after the pivot and
/// after the identity switch.
pub fn open_in_job() -> io::Result<JobTerminal> {
    let master = File::options().read(true).write(true).custom_flags(libc::O_NOCTTY).open("/dev/ptmx")?;
    let slave = sys::open_pty_peer(master.as_fd())?;
    Ok(JobTerminal { master: master.into(), slave })
}

/// In the command's process, before its exec: a session of its own with
/// the slave as controlling terminal and as stdin, stdout and stderr.
pub fn become_controlling(slave: OwnedFd) -> io::Result<()> {
    // Fails only for a process group leader, which pid 1 (with --no-init)
    // is: it made its session at the start of the set-up.
    let _ = nix::unistd::setsid();
    sys::set_controlling_terminal(slave.as_fd())?;
    nix::unistd::dup2_stdin(&slave)?;
    nix::unistd::dup2_stdout(&slave)?;
    nix::unistd::dup2_stderr(&slave)?;
    Ok(())
}

/// True if `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// The runner's terminal in raw mode while the job runs: every key goes to
/// the job's terminal, whose line discipline (not ours) turns Ctrl-C into
/// SIGINT for the job's foreground group. Restored on drop, so on every
/// exit path of the runner that unwinds (an error, a killed job).
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    pub fn enter(terminal: BorrowedFd<'_>) -> io::Result<RawMode> {
        let fd = terminal.try_clone_to_owned()?;
        let saved = termios::tcgetattr(&fd)?;
        let raw = RawMode { fd, saved };
        raw.resume()?;
        Ok(raw)
    }

    /// The terminal as it was (for a Ctrl-Z of the runner: the shell gets it back).
    pub fn suspend(&self) -> io::Result<()> {
        termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &self.saved).map_err(io::Error::from)
    }

    /// Raw again (after `fg`).
    pub fn resume(&self) -> io::Result<()> {
        let mut raw = self.saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &raw).map_err(io::Error::from)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Err(e) = self.suspend() {
            log::warn!("restoring the terminal's mode: {e}");
        }
    }
}

/// Copies the runner's terminal window size to the job's terminal (the
/// kernel then sends SIGWINCH to the job's foreground group).
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    match sys::window_size(from) {
        Ok(ws) => {
            if let Err(e) = sys::set_window_size(to, &ws) {
                log::debug!("setting the job's window size: {e}");
            }
        }
        Err(e) => log::debug!("reading the terminal's window size: {e}"),
    }
}

/// The relay between the runner's stdin/stdout and the job's pty master.
/// The master is non-blocking and input waits in `pending` until the job
/// reads it: a job that does not read its input must never block the
/// runner, which must go on copying the job's output (or the job blocks on
/// a full terminal and both wait for ever).
pub struct Relay {
    master: File,
    pending: Vec<u8>,
    /// Whether stdin is relayed (`-i`) and not at EOF.
    pub stdin_open: bool,
    /// False once the job's side of the terminal is closed (EIO).
    pub master_open: bool,
}

/// What the relay wants to wait for.
pub struct Interest {
    pub stdin: bool,
    pub master_in: bool,
    pub master_out: bool,
}

impl Relay {
    pub fn new(master: OwnedFd, interactive: bool) -> io::Result<Relay> {
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Relay { master: File::from(master), pending: Vec::new(), stdin_open: interactive, master_open: true })
    }

    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    pub fn interest(&self) -> Interest {
        Interest {
            stdin: self.stdin_open && self.pending.is_empty() && self.master_open,
            master_in: self.master_open,
            master_out: self.master_open && !self.pending.is_empty(),
        }
    }

    /// stdin is readable: take what is there for the job. From fd 0
    /// itself, not std's buffered `Stdin`: bytes left in its buffer would
    /// be invisible to the poll, and a long paste would hang half-way.
    pub fn from_stdin(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
            Ok(0) => self.stdin_open = false,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The master is writable: give the job what it can take.
    pub fn to_job(&mut self) -> io::Result<()> {
        match self.master.write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => self.master_open = false,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The master is readable (or hung up): copy the job's output to our
    /// stdout until it would block, or until the job's side is closed.
    pub fn from_job(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 16384];
        let mut out = io::stdout().lock();
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => self.master_open = false,
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EIO: every slave fd is closed, the job's terminal is gone.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => self.master_open = false,
                Err(e) => return Err(e),
            }
            out.flush()?;
            return Ok(());
        }
    }
}
