//! `repeatr ps`, `stop` and `kill`: the jobs running on this host, found by
//! the records their runners hold (`job::record`), networked or not.
//!
//! A job is signalled through its init, pid 1 of its pid namespace: killing
//! that kills the whole namespace. Its pid comes from a file, and a pid is
//! only a number the kernel hands out again, so every signal goes through
//! a pidfd that was checked against the recorded start time after it was
//! opened: a process that took the number since is never signalled.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;

use crate::error::Error;
use crate::job::record::{self, Init, JobRecord, Runner};
use crate::sys;

/// How long `stop` and `kill` wait for a job that is still being launched
/// (its record has no init yet) before they give up: a networked start
/// waits for its lease, which a burst of starts can make slow.
const LAUNCH_PATIENCE: Duration = Duration::from_secs(10);

/// One line of `ps`, and one object of `ps --json`.
#[derive(Debug, Serialize)]
struct Row {
    id: String,
    /// The runner's pid: the process to wait for, and what `run` printed.
    pid: u32,
    /// The job's init as the host sees it; `None` while it is starting.
    init_pid: Option<u32>,
    started: String,
    /// `starting` (no init yet), `running`, `stopped` (its init, or the
    /// command the init runs, is in state T: Ctrl-Z, SIGSTOP, a tracer),
    /// `exiting` (its init is gone, the runner is tearing down).
    state: &'static str,
    net: String,
    ip: Option<Ipv4Addr>,
    /// Memory its processes use together now, where a cgroup of its own
    /// counts it (`crate::cgroup::LiveUsage`).
    memory_bytes: Option<u64>,
    /// CPU time of all its processes so far.
    cpu_seconds: Option<f64>,
    command: Vec<String>,
}

impl Row {
    fn of(r: JobRecord) -> Row {
        let state = match &r.init {
            None => "starting",
            Some(init) => match as_pid(init.pid).and_then(|p| sys::process_stat(p).ok()) {
                Some(st) if st.start_time == init.start_time => {
                    let pid = init.pid;
                    let stopped = |st: &sys::ProcStat| matches!(st.state, 'T' | 't');
                    if stopped(&st) || command_of(pid).is_some_and(|c| stopped(&c)) { "stopped" } else { "running" }
                }
                _ => "exiting",
            },
        };
        let usage = match (&r.init, state) {
            (Some(init), "running" | "stopped") => crate::cgroup::usage_of_init(init.pid),
            _ => crate::cgroup::LiveUsage::default(),
        };
        Row {
            id: r.runner.id,
            pid: r.runner.pid,
            init_pid: r.init.as_ref().map(|i| i.pid),
            started: r.runner.started,
            state,
            net: r.runner.net,
            ip: r.init.and_then(|i| i.ip),
            memory_bytes: usage.memory,
            cpu_seconds: usage.cpu.map(|d| d.as_secs_f64()),
            command: r.runner.command,
        }
    }
}

/// The command the job's init runs (its first child; none with --no-init,
/// where the init is the command).
fn command_of(init: u32) -> Option<sys::ProcStat> {
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).ok()?;
    let pid = children.split_whitespace().next()?.parse().ok()?;
    sys::process_stat(pid).ok()
}

/// Lists every live job (a table, or with `json` an array of objects).
/// Creates and changes nothing; a missing state dir has no jobs.
pub fn ps(state_dir: &Path, json: bool) -> Result<i32, Error> {
    let rows: Vec<Row> = record::live(state_dir)?.into_iter().map(Row::of).collect();
    if json {
        println!("{}", crate::output::json(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(0)
}

fn table(rows: &[Row]) -> String {
    let header = ["ID", "PID", "STARTED", "STATE", "IP", "MEM", "CPU", "COMMAND"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                crate::escape::escaped(r.id.as_bytes()),
                r.pid.to_string(),
                r.started.clone(),
                r.state.to_string(),
                r.ip.map_or("-".to_string(), |ip| ip.to_string()),
                r.memory_bytes.map_or("-".to_string(), crate::limits::human_size),
                r.cpu_seconds.map_or("-".to_string(), |s| format!("{s:.2}s")),
                crate::escape::escaped(r.command.join(" ").as_bytes()),
            ]
        })
        .collect();
    crate::output::table(&header, &cells)
}

/// Stops the job `name`: SIGTERM to its init, SIGKILL after `timeout`, and
/// returns once its runner has exited (with everything of the job gone).
pub fn stop(state_dir: &Path, name: &str, timeout: Duration) -> Result<i32, Error> {
    let (runner, init) = launched(state_dir, name)?;
    let Some(runner) = verified_pidfd(runner.pid, runner.start_time)? else {
        return Ok(0);
    };
    let init = verified_pidfd(init.pid, init.start_time)?;
    if let Some(init) = &init {
        signal(init, libc::SIGTERM)?;
    }
    if exits_within(&runner, Some(timeout))? {
        return Ok(0);
    }
    if let Some(init) = &init {
        log::info!("job {name} still runs after {timeout:?}: killing it");
        signal(init, libc::SIGKILL)?;
    }
    exits_within(&runner, None)?;
    Ok(0)
}

/// Sends `sig` to the job `name`'s init, without waiting.
pub fn kill(state_dir: &Path, name: &str, sig: libc::c_int) -> Result<i32, Error> {
    let (_, init) = launched(state_dir, name)?;
    match verified_pidfd(init.pid, init.start_time)? {
        Some(init) => signal(&init, sig).map(|()| 0),
        None => Err(Error::NoSuchJob(name.to_string())),
    }
}

/// A signal as `kill --signal` takes it: a name with or without `SIG`, in
/// any case (`TERM`, `SIGTERM`, `term`), or a number (`15`, up to SIGRTMAX).
pub fn parse_signal(s: &str) -> Result<libc::c_int, Error> {
    let bad = || {
        Error::Usage(format!(
            "bad --signal {}: give a name (TERM, SIGKILL) or a number (15)",
            crate::escape::escaped(s.as_bytes())
        ))
    };
    if let Ok(n) = s.parse::<libc::c_int>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) { Ok(n) } else { Err(bad()) };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    nix::sys::signal::Signal::from_str(&format!("SIG{name}")).map(|sig| sig as libc::c_int).map_err(|_| bad())
}

/// The live job `name`'s runner and init, waiting while it is still being
/// launched.
fn launched(state_dir: &Path, name: &str) -> Result<(Runner, Init), Error> {
    let deadline = Instant::now() + LAUNCH_PATIENCE;
    loop {
        match record::find(state_dir, name)? {
            None => return Err(Error::NoSuchJob(name.to_string())),
            Some(JobRecord { runner, init: Some(init) }) => return Ok((runner, init)),
            Some(_) if Instant::now() > deadline => {
                return Err(Error::Usage(format!(
                    "job {name} is still starting after {LAUNCH_PATIENCE:?}; try again, or see repeatr ps"
                )));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A pidfd of the process `pid` if it is still the one that started at
/// `start_time`; `None` if it is gone.
fn verified_pidfd(pid: u32, start_time: u64) -> Result<Option<OwnedFd>, Error> {
    let Some(pid) = as_pid(pid) else { return Ok(None) };
    let fd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(err) => return Err(Error::Io { what: "opening a pidfd of the job", err }),
    };
    // Checked after the open: if the number names the recorded process now,
    // it did at the open too (it held the number all along), so the fd is
    // that process's for good.
    Ok(sys::process_start_time(pid).is_ok_and(|t| t == start_time).then_some(fd))
}

/// A process that is gone already is not an error: it has what it was sent.
fn signal(pidfd: &OwnedFd, sig: libc::c_int) -> Result<(), Error> {
    match sys::pidfd_send_signal(pidfd.as_fd(), sig) {
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(Error::Io { what: "signalling the job", err: e }),
        _ => Ok(()),
    }
}

/// Waits until the process behind `pidfd` has exited (a pidfd polls
/// readable then), at most `timeout` (`None`: for as long as it takes);
/// whether it did.
fn exits_within(pidfd: &OwnedFd, timeout: Option<Duration>) -> Result<bool, Error> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        // In steps poll's millisecond count can hold.
        let step = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(Duration::from_secs(60)),
            None => Duration::from_secs(60),
        };
        let step = PollTimeout::try_from(step).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, step) {
            Ok(n) if n > 0 => return Ok(true),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::Io { what: "waiting for the job's runner", err: e.into() }),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

fn as_pid(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("34").unwrap(), 34);
        for bad in ["0", "-9", "99", "SIGNOPE", "", "\u{1b}[2J"] {
            let e = parse_signal(bad).unwrap_err().to_string();
            assert!(e.contains("bad --signal") && !e.contains('\u{1b}'), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_table_shows_control_characters_escaped_and_a_missing_ip_as_a_dash() {
        let runner = Runner {
            id: "j".into(),
            pid: 1,
            start_time: 1,
            started: "2026-12-01T00:00:00Z".into(),
            net: "none".into(),
            command: vec!["sh".into(), "-c".into(), "printf \"\u{1b}[2J\"\nforged line".into()],
        };
        let out = table(&[Row::of(JobRecord { runner, init: None })]);
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert_eq!(out.lines().count(), 2, "one header and one row: {out}");
        assert!(out.contains("\\nforged line") && out.contains(" starting ") && out.contains(" - "), "{out}");
        assert_eq!(table(&[]), "ID  PID  STARTED  STATE  IP  MEM  CPU  COMMAND\n");
    }

    #[test]
    fn a_process_that_started_at_another_time_gets_no_pidfd() {
        let me = std::process::id();
        let start = sys::process_start_time(me as libc::pid_t).unwrap();
        assert!(verified_pidfd(me, start).unwrap().is_some());
        assert!(verified_pidfd(me, start + 1).unwrap().is_none(), "a reused pid would be signalled");
        assert!(verified_pidfd(0, 0).unwrap().is_none());
    }
}
