//! The job's init: pid 1 of the job's pid namespace, repeatr's own code in
//! the child (no binary to find in the image), as `docker run --init`'s
//! tini and bubblewrap's pid 1 are.
//!
//! Why the job needs one: the kernel drops every signal a namespace's pid
//! 1 has no handler for (SIGNAL_UNKILLABLE), so a command run as pid 1
//! ignores the runner's SIGINT and SIGTERM unless it traps them; and pid 1
//! inherits every orphan in the namespace, which a command that never
//! calls wait(2) on strangers leaves as zombies.
//!
//! So the init forks the command as pid 2 in a process group of its own,
//! forwards every signal it gets to that group, reaps every child, and
//! when the command ends tells the runner how (over the control socket)
//! and exits; the kernel then kills whatever is left in the namespace.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::unistd::Pid;

use super::protocol::{CommandEnded, LastWord};
use crate::sys;

/// Forks the command. Returns in the command's process (pid 2) only; pid 1 stays here as the init until the command ends, then
/// exits. `close_in_init` are the fds the init must not hold: the report
/// pipe (its EOF tells the runner that the command exec'd) and a tty
/// slave (whose last close tells the runner the job's terminal is gone).
/// `own_session` means the command makes a session of its own (a job
/// with a terminal); otherwise the init puts it in its own process group.
///
/// The caller has every signal blocked and every disposition at default:
/// the init takes signals with sigwaitinfo, the command unblocks them
/// right before its exec.
pub fn fork_command(control: OwnedFd, own_session: bool) -> std::io::Result<()> {
    // /proc/1 becomes root's, and ptrace-style access to it needs
    // CAP_SYS_PTRACE, which a job lacks by default: a job that shares the
    // init's uid cannot read its memory or open /proc/1/exe, the host's
    // repeatr binary (runc's CVE-2019-5736 was a write through that
    // link). The command's exec makes it dumpable again.
    sys::set_not_dumpable()?;
    // SAFETY: the child is single-threaded: it was cloned from a
    // single-threaded runner (`spawn`'s contract) and started no thread.
    let forked = unsafe { sys::fork() }?;
    let Some(pid) = forked else {
        drop(control);
        return Ok(());
    };
    // The init holds nothing but the control socket: not the report pipe
    // (its EOF tells the runner that the command exec'd), not a tty slave
    // (whose last close tells the runner the job's terminal is gone), not
    // the spec's trees. It never returns to their owners (it exits from
    // `supervise`), so nothing is closed twice.
    let _ = sys::close_fds_except(&[control.as_raw_fd()]);
    // The init waits for the whole job, one of many: it keeps mapped only
    // the few code pages its loop touches (the page cache keeps the rest
    // for every runner and init), not all the set-up faulted in.
    let _ = sys::drop_own_code_pages();
    if !own_session {
        // Also done by the command itself; whichever runs first wins, so a
        // signal forwarded at once already reaches the whole group.
        let _ = nix::unistd::setpgid(Pid::from_raw(pid), Pid::from_raw(pid));
    }
    supervise(pid, UnixStream::from(control))
}

/// The command's side of the process group set-up, right after the fork.
pub fn join_own_group() {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
}

/// The init's loop: forward, reap, and exit when the command has ended.
fn supervise(command: libc::pid_t, mut control: UnixStream) -> ! {
    loop {
        let sig = match sys::wait_any_signal() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        match sig {
            libc::SIGCHLD => {
                if let Some(end) = reap(command) {
                    let (user_us, system_us) = sys::children_cpu_us();
                    // The runner may be gone (then we die by PDEATHSIG
                    // anyway): nothing to do about a failed write.
                    let _ = control.write_all(&LastWord { ended: end, user_us, system_us }.encode());
                    sys::exit_now(match end {
                        CommandEnded::Exited(c) => c,
                        CommandEnded::Signaled(s) => 128 + s,
                    })
                }
            }
            // Ctrl-Z at the runner: the job stops with it. SIGSTOP, not the
            // stop signal itself: the kernel discards SIGTSTP/TTIN/TTOU
            // sent to an orphaned process group (a job with a terminal
            // has its own session, so its group is one), and a job that
            // ignores them would otherwise go on behind a stopped runner.
            libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => forward(command, libc::SIGSTOP),
            other => forward(command, other),
        }
    }
}

/// To the command's process group; to the command alone if it left that
/// group (a shell with job control moves itself and its jobs around).
fn forward(command: libc::pid_t, sig: libc::c_int) {
    if sys::kill(-command, sig).is_err() {
        let _ = sys::kill(command, sig);
    }
}

/// Reaps every child that has exited; how the command ended, if it did.
fn reap(command: libc::pid_t) -> Option<CommandEnded> {
    let mut ended = None;
    while let Some((pid, how)) = sys::reap_one() {
        if pid == command {
            ended = Some(match how {
                Ok(code) => CommandEnded::Exited(code),
                Err(sig) => CommandEnded::Signaled(sig),
            });
        }
    }
    ended
}
