//! The runner's side while the job runs: let the child go, then wait for it
//! in one poll loop that handles the runner's signals, the stop and
//! timeout deadlines, the `-t` relay and the child's messages, and says
//! how the job ended.
//!
//! Stopping, as a user of docker or timeout(1) expects:
//! - the first SIGINT, SIGTERM, SIGHUP or SIGQUIT is passed to the job (its
//!   init hands it to the command's process group) and starts the stop
//!   timeout; a job still alive when it runs out, or at a second Ctrl-C,
//!   is killed as a whole (SIGKILL to its pid 1 ends every process in its
//!   pid namespace);
//! - past `--timeout` the job gets SIGTERM the same way, and the runner
//!   exits 124;
//! - Ctrl-Z (SIGTSTP) stops the job, then the runner; `fg` (SIGCONT)
//!   resumes both. The runner never sits stopped while the job runs on.
//!
//! Before the command has exec'd there is no job to pass a signal to: a
//! terminating one then kills the half-built container (the user wants
//! out), and the others are dropped.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use super::protocol::{CommandEnded, GoMessage, LastWord, LaunchFailure, TTY_MASTER};
use super::signals::{self, Forwarder};
use super::spawn::{Exit, Launched, wait_pidfd};
use super::spec::Process;
use super::tty::{self, RawMode, Relay};
use crate::sys;

/// How a job ended, and what the runner did to end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    /// `--timeout` ran out: the runner exits 124 whatever the job did then.
    pub timed_out: bool,
    /// The runner killed the job as a whole.
    pub killed: Option<Kill>,
    /// What the job used, if it ran.
    pub usage: Option<Usage>,
}

/// What a job used: CPU time as its init counted it (the init reaps every
/// process of the job, so their time is all in its children's rusage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    /// From the go to the job's end.
    pub wall: Duration,
    /// The CPU time includes the job's set-up (building its root, which
    /// for a tar is an unpack): with --no-init, or a job killed as a
    /// whole, there is no init to tell the command's time apart.
    pub with_setup: bool,
}

/// Why the runner killed a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Still alive `after` the first terminating signal.
    StopTimeout { signal: i32, after: Duration },
    /// A second Ctrl-C while the job was stopping.
    SecondInterrupt,
}

/// timeout(1)'s status for a command that ran out of time.
pub const EXIT_TIMED_OUT: i32 = 124;

impl Ended {
    /// The runner's exit status.
    pub fn status(&self) -> i32 {
        if self.timed_out { EXIT_TIMED_OUT } else { self.exit.status() }
    }
}

impl From<Exit> for Ended {
    fn from(exit: Exit) -> Ended {
        Ended { exit, timed_out: false, killed: None, usage: None }
    }
}

/// Lets the child go on to exec, then waits for the job to end.
pub fn go_and_wait(launched: Launched, signals: &Forwarder, go: &GoMessage, process: &Process) -> io::Result<Ended> {
    let mut s = Supervisor {
        launched,
        process,
        go: Some(go.encode()),
        report: Vec::new(),
        report_open: true,
        control: Vec::new(),
        control_open: true,
        aborted: None,
        relay: None,
        raw: None,
        timeout_at: None,
        stop_deadline: None,
        timed_out: false,
        killed: None,
        trim_at: None,
        started: None,
    };
    // With -t the go waits for the terminal's master (see `on_control`).
    if !process.tty {
        s.send_go();
    }
    s.run(signals)
}

struct Supervisor<'a> {
    launched: Launched,
    process: &'a Process,
    /// The go, until it is sent.
    go: Option<Vec<u8>>,
    report: Vec<u8>,
    /// Until the command has exec'd (or the child died).
    report_open: bool,
    control: Vec<u8>,
    control_open: bool,
    aborted: Option<i32>,
    relay: Option<Relay>,
    /// Dropped (the terminal restored) with the supervisor, whatever ends it.
    raw: Option<RawMode>,
    timeout_at: Option<Instant>,
    /// When the job is killed if still alive, and for which signal.
    stop_deadline: Option<(Instant, Signal)>,
    timed_out: bool,
    killed: Option<Kill>,
    /// When the runner drops its code pages (see `check_deadlines`).
    trim_at: Option<Instant>,
    /// When the go was sent.
    started: Option<Instant>,
}

/// How long a job runs before its runner, now only waiting, lets go of
/// its code pages: a short job never pays for faulting them back in.
const TRIM_AFTER: Duration = Duration::from_millis(200);

impl Supervisor<'_> {
    fn run(mut self, signals: &Forwarder) -> io::Result<Ended> {
        let stdin_handle = io::stdin();
        loop {
            let (pidfd, control) = (self.launched.child.pidfd.as_fd(), self.launched.control.as_fd());
            let mut fds = vec![PollFd::new(pidfd, PollFlags::POLLIN), PollFd::new(signals.fd(), PollFlags::POLLIN)];
            let report = slot(&mut fds, self.report_open, self.launched.report.as_fd(), PollFlags::POLLIN);
            let control = slot(&mut fds, self.control_open, control, PollFlags::POLLIN);
            let (stdin, master) = match &self.relay {
                Some(r) => {
                    let want = r.interest();
                    let mut events = PollFlags::empty();
                    events.set(PollFlags::POLLIN, want.master_in);
                    events.set(PollFlags::POLLOUT, want.master_out);
                    let stdin = slot(&mut fds, want.stdin, stdin_handle.as_fd(), PollFlags::POLLIN);
                    (stdin, slot(&mut fds, !events.is_empty(), r.master(), events))
                }
                None => (None, None),
            };
            match poll(&mut fds, self.poll_timeout()) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let revents =
                |i: Option<usize>| i.and_then(|i| fds.get(i)).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
            let (child_done, sig_ready) = (!revents(Some(0)).is_empty(), !revents(Some(1)).is_empty());
            let (report, control, stdin, master) = (revents(report), revents(control), revents(stdin), revents(master));
            drop(fds);

            if !report.is_empty() {
                self.report_open = read_some(&mut self.launched.report, &mut self.report)?;
                if !self.report_open && self.report.is_empty() {
                    self.trim_at = Some(Instant::now() + TRIM_AFTER);
                }
            }
            if !control.is_empty() {
                self.on_control()?;
            }
            if let Some(relay) = &mut self.relay {
                if !stdin.is_empty() {
                    relay.from_stdin()?;
                }
                if master.contains(PollFlags::POLLOUT) {
                    relay.to_job()?;
                }
                if master.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    relay.from_job()?;
                }
            }
            if sig_ready {
                for sig in signals.pending() {
                    self.on_signal(sig);
                }
            }
            self.check_deadlines();
            if child_done {
                break;
            }
        }
        self.finish()
    }

    /// The child is gone: reap it, take its last words, say how it ended.
    fn finish(mut self) -> io::Result<Ended> {
        let (status, reaped) = wait_pidfd(self.launched.child.pidfd.as_fd())?;
        log::trace!("job reaped");
        let wall = self.started.map(|at| at.elapsed());
        // Every byte the child wrote is in the pipe and the socket now.
        if self.report_open {
            self.launched.report.read_to_end(&mut self.report)?;
        }
        if self.go.is_none() {
            let _ = (&self.launched.control).read_to_end(&mut self.control);
        }
        if let Some(relay) = &mut self.relay {
            relay.from_job()?;
        }
        // CPU time from the init's word (what it reaped: the job without
        // the set-up); without one (--no-init, an init killed as a whole)
        // the child's own, set-up included.
        let last_word = LastWord::decode(&self.control);
        let usage = wall.map(|wall| match last_word {
            Some(w) => Usage {
                user: Duration::from_micros(w.user_us),
                system: Duration::from_micros(w.system_us),
                wall,
                with_setup: false,
            },
            None => Usage { user: reaped.user, system: reaped.system, wall, with_setup: true },
        });
        let exit = if let Some(f) = LaunchFailure::decode(&self.report) {
            Exit::Failed(f)
        } else if let Some(sig) = self.aborted {
            Exit::Aborted(sig)
        } else {
            // The init's word on the command; without one (--no-init, or an
            // init killed as a whole) the child's own status is the job's.
            match last_word.map(|w| w.ended) {
                Some(CommandEnded::Exited(c)) => Exit::Code(c),
                Some(CommandEnded::Signaled(s)) => Exit::Signaled(s),
                None => status,
            }
        };
        Ok(Ended { exit, timed_out: self.timed_out, killed: self.killed, usage })
    }

    fn send_go(&mut self) {
        if let Some(go) = self.go.take() {
            // EPIPE here means the child already died (it reports why).
            if let Err(e) = (&self.launched.control).write_all(&go) {
                log::debug!("child gone before go: {e}");
            }
            log::trace!("go sent");
            self.control_open = false;
            // The job's clock starts with the go: the set-up is not its time.
            let now = Instant::now();
            self.started = Some(now);
            self.timeout_at = self.process.timeout.map(|t| now + t);
        }
    }

    /// Before the go, with -t: the terminal's master. (After the go the
    /// socket is not polled: the init's last word is read once the child
    /// is reaped, which saves a wake-up per job.)
    fn on_control(&mut self) -> io::Result<()> {
        match sys::recv_fd(self.launched.control.as_fd()) {
            Ok(Some((TTY_MASTER, Some(master)))) => {
                self.attach_terminal(master)?;
                self.send_go();
            }
            Ok(Some(_)) => log::debug!("unexpected control message before the go"),
            // The child died in its set-up; its report says why.
            Ok(None) => self.control_open = false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.control_open = false,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The job's terminal comes to life: our size, our keys (raw mode, with
    /// -i), its output on our stdout.
    fn attach_terminal(&mut self, master: std::os::fd::OwnedFd) -> io::Result<()> {
        let stdin = io::stdin();
        tty::copy_window_size(stdin.as_fd(), master.as_fd());
        if self.process.interactive {
            self.raw = Some(RawMode::enter(stdin.as_fd())?);
        }
        self.relay = Some(Relay::new(master, self.process.interactive)?);
        Ok(())
    }

    fn on_signal(&mut self, sig: Signal) {
        if self.report_open {
            if signals::is_terminating(sig) {
                self.aborted.get_or_insert(sig as i32);
                self.send(libc::SIGKILL);
            } else {
                log::debug!("{sig} before the job started: dropped");
            }
            return;
        }
        match sig {
            Signal::SIGINT if self.stop_deadline.is_some() => self.kill(Kill::SecondInterrupt),
            s if signals::is_terminating(s) => self.terminate(s),
            Signal::SIGTSTP => self.suspend(),
            Signal::SIGWINCH => {
                if let Some(relay) = &self.relay {
                    tty::copy_window_size(io::stdin().as_fd(), relay.master());
                }
            }
            s => {
                log::debug!("forwarding {s} to the job");
                self.send(s as i32);
            }
        }
    }

    /// Passes a terminating signal on; the first one starts the stop timeout.
    fn terminate(&mut self, sig: Signal) {
        log::debug!("forwarding {sig} to the job");
        self.send(sig as i32);
        if self.stop_deadline.is_none() && self.killed.is_none() {
            self.stop_deadline = Some((Instant::now() + self.process.stop_timeout, sig));
        }
    }

    /// Ctrl-Z: the job stops, then we do; after `fg` both go on. The init
    /// stops the command's group; without it only SIGSTOP stops a pid 1
    /// (from outside its namespace the kernel delivers only SIGKILL and
    /// SIGSTOP to a pid 1 without handlers).
    fn suspend(&mut self) {
        self.send(if self.process.init { libc::SIGTSTP } else { libc::SIGSTOP });
        if let Some(raw) = &self.raw {
            let _ = raw.suspend();
        }
        // Stops us here until SIGCONT.
        let _ = sys::kill(std::process::id() as libc::pid_t, libc::SIGSTOP);
        if let Some(raw) = &self.raw {
            let _ = raw.resume();
        }
        self.send(libc::SIGCONT);
    }

    fn kill(&mut self, why: Kill) {
        self.send(libc::SIGKILL);
        self.killed.get_or_insert(why);
        self.stop_deadline = None;
    }

    fn send(&self, sig: libc::c_int) {
        // ESRCH: the job is exiting; its status comes next.
        if let Err(e) = sys::pidfd_send_signal(self.launched.child.pidfd.as_fd(), sig) {
            log::debug!("signal {sig} not delivered: {e}");
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        if let Some(at) = self.trim_at
            && now >= at
        {
            // The command runs, and we wait, maybe for hours, as one of
            // many runners: keep mapped only what the wait touches. The
            // code stays in the page cache, shared by every runner;
            // teardown faults its few pages back in.
            self.trim_at = None;
            if let Err(e) = sys::drop_own_code_pages() {
                log::debug!("dropping the runner's code pages: {e}");
            }
        }
        if let Some(at) = self.timeout_at
            && now >= at
        {
            self.timeout_at = None;
            self.timed_out = true;
            self.terminate(Signal::SIGTERM);
        }
        if let Some((at, signal)) = self.stop_deadline
            && now >= at
        {
            self.kill(Kill::StopTimeout { signal: signal as i32, after: self.process.stop_timeout });
        }
    }

    /// Until the nearest deadline.
    fn poll_timeout(&self) -> PollTimeout {
        let next = [self.timeout_at, self.stop_deadline.map(|(at, _)| at), self.trim_at].into_iter().flatten().min();
        match next {
            None => PollTimeout::NONE,
            Some(at) => {
                // Rounded up, so the wake-up is never before the deadline.
                let ms = at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        }
    }
}

/// Adds `fd` to the poll set if `want`; its index there.
fn slot<'f>(fds: &mut Vec<PollFd<'f>>, want: bool, fd: BorrowedFd<'f>, events: PollFlags) -> Option<usize> {
    want.then(|| {
        fds.push(PollFd::new(fd, events));
        fds.len() - 1
    })
}

/// Reads what is available; false at EOF.
fn read_some(f: &mut File, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_job_exits_124_whatever_it_did() {
        let ended = |exit, timed_out| Ended { exit, timed_out, killed: None, usage: None };
        assert_eq!(ended(Exit::Signaled(15), true).status(), 124);
        assert_eq!(ended(Exit::Code(0), true).status(), 124);
        assert_eq!(ended(Exit::Signaled(9), false).status(), 137);
    }
}
