//! `STATE_DIR/jobs/<id>.lock`: one file per live job on the host, networked
//! or not, so that `repeatr ps` can list them and `stop`/`kill` find them
//! by name, with no database write on a job's path.
//!
//! The runner takes the file's flock (exclusive, lock-then-verify:
//! `state::RemovableLock`) before it makes anything for the job, holds it
//! for the job's whole life and unlinks the file, still holding it, at the
//! end. The kernel drops the lock on any death of the runner, so a held
//! lock *is* a live job and a free one a dead runner's leftover (`gc`
//! removes it); a reused pid cannot fake either.
//!
//! The record is in the locked file itself, appended in two lines of JSON
//! (see [`Runner`] and [`Init`]). A line counts only once its newline is
//! there: a reader that comes while the runner is still writing sees a
//! prefix of the file (appends only ever extend it), never a half record.
//! A file a dead runner left is unlinked and made afresh before it is
//! written, so all a live job's file holds is its own runner's.

use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::id::JobId;
use crate::container::NetMode;
use crate::error::Error;
use crate::state::Reclaimed;
use crate::state::{PrivateDir, RemovableLock, StateError};
use crate::sys;

/// The records' directory, in the state dir.
pub const DIR: &str = "jobs";

/// How long a run waits for the holder of its name's lock to say who it
/// is: a runner writes its record right after it takes the lock, and `ps`
/// or `gc` hold a dead runner's lock only for a moment.
const CLAIM_PATIENCE: Duration = Duration::from_secs(2);

/// The first line: the runner, written right after it took the lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub id: String,
    /// The runner's pid (the lock's holder) and its start time (field 22 of
    /// /proc/PID/stat): together they name one process for the whole boot.
    pub pid: u32,
    pub start_time: u64,
    /// RFC 3339 UTC.
    pub started: String,
    /// `none` or `bridge`.
    pub net: String,
    pub command: Vec<String>,
}

/// The second line: the job's init (pid 1 of its pid namespace, as the
/// host sees it), written once the job is launched and its network
/// plugged in, before it execs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    pub pid: u32,
    pub start_time: u64,
    pub ip: Option<Ipv4Addr>,
}

/// What a live job's file says; `init` is `None` while it is starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    pub runner: Runner,
    pub init: Option<Init>,
}

impl JobRecord {
    /// The complete lines of `text`; `None` without a first one.
    fn parse(text: &str) -> Option<JobRecord> {
        let mut lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        let runner = serde_json::from_str(lines.next()?).ok()?;
        let init = lines.next().and_then(|l| serde_json::from_str(l).ok());
        Some(JobRecord { runner, init })
    }
}

/// A runner's hold on its job's record, from before the launch to the end
/// of the job: dropping it unlinks the file and releases the lock.
pub struct Claim {
    jobs: PrivateDir,
    lock: Option<RemovableLock>,
}

impl Claim {
    /// Takes `jobs/<id>.lock` in the state dir `state` and writes the
    /// runner's line. A live job of that id is refused
    /// ([`Error::JobRunning`]) before anything is made for this one.
    pub fn take(state: &PrivateDir, id: &str, argv: &[String], net: NetMode) -> Result<Claim, Error> {
        let jobs = state.create_subdir(DIR)?;
        let name = file_name(id);
        let deadline = Instant::now() + CLAIM_PATIENCE;
        let lock = loop {
            match RemovableLock::try_take(&jobs, &name, true)? {
                Some(lock) if lock.was_empty() => break lock,
                Some(dead) => dead.remove(&jobs)?,
                None => {
                    let holder = read(&jobs, &name)?.filter(|r| alive(r.runner.pid, r.runner.start_time));
                    if let Some(r) = holder {
                        return Err(Error::JobRunning { job: id.to_string(), pid: Some(r.runner.pid) });
                    }
                    if Instant::now() > deadline {
                        return Err(Error::JobRunning { job: id.to_string(), pid: None });
                    }
                    // A dead runner's file that `ps` or `gc` is looking at,
                    // or a runner that has not written its line yet.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let claim = Claim { jobs, lock: Some(lock) };
        let pid = std::process::id();
        let runner = Runner {
            id: id.to_string(),
            pid,
            start_time: sys::process_start_time(pid as libc::pid_t).map_err(Error::io("reading /proc/self/stat"))?,
            started: crate::civil_time::rfc3339_now(),
            net: match net {
                NetMode::None => "none",
                NetMode::Bridge => "bridge",
            }
            .into(),
            command: argv.to_vec(),
        };
        claim.append(&runner).map_err(Error::io("writing the job's record"))?;
        Ok(claim)
    }

    /// Adds the job's init: from here on `stop` and `kill` can reach it.
    /// A failure is only logged: the job runs, `ps` shows it starting.
    pub fn launched(&self, pid: libc::pid_t, ip: Option<Ipv4Addr>) {
        let written = sys::process_start_time(pid).and_then(|start_time| {
            let pid = u32::try_from(pid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            self.append(&Init { pid, start_time, ip })
        });
        if let Err(e) = written {
            log::warn!("cannot record the job's init in {}: {e}", self.jobs.path().display());
        }
    }

    /// One line, in one write (a reader sees it whole or not at all, see
    /// the module comment).
    fn append<T: Serialize>(&self, line: &T) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        match &self.lock {
            Some(lock) => lock.file().write_all(text.as_bytes()),
            None => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take()
            && let Err(e) = lock.remove(&self.jobs)
        {
            log::warn!("{e}");
        }
    }
}

/// `<id>.lock`: the whole id is the stem, dots and all.
fn file_name(id: &str) -> String {
    format!("{id}.lock")
}

/// The record in `jobs/<name>`, read through a new fd; `None` if missing
/// or without a complete first line.
fn read(jobs: &PrivateDir, name: &str) -> Result<Option<JobRecord>, StateError> {
    match jobs.open_file(name, OFlag::O_RDONLY, "open job record")? {
        Some(file) => read_open(&file, &jobs.join(name)),
        None => Ok(None),
    }
}

fn read_open(mut file: &File, path: &Path) -> Result<Option<JobRecord>, StateError> {
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(StateError::io("read", path))?;
    Ok(JobRecord::parse(&text))
}

/// The pid names the process that wrote the record.
fn alive(pid: u32, start_time: u64) -> bool {
    libc::pid_t::try_from(pid).ok().and_then(|p| sys::process_start_time(p).ok()).is_some_and(|t| t == start_time)
}

/// The state dir's `jobs/`, without creating it or the state dir.
fn jobs_dir(state_dir: &Path) -> Result<Option<PrivateDir>, StateError> {
    match PrivateDir::open(state_dir, false)? {
        Some(state) => state.subdir(DIR, false),
        None => Ok(None),
    }
}

/// The ids that have a file in `jobs`, sorted.
fn ids(jobs: &PrivateDir) -> Result<Vec<String>, StateError> {
    let mut ids: Vec<String> = jobs
        .names()?
        .iter()
        .filter_map(|n| n.strip_suffix(".lock"))
        .filter(|id| JobId::new(Some(id)).is_ok())
        .map(String::from)
        .collect();
    ids.sort();
    Ok(ids)
}

/// The record of `id` if its runner holds the lock (and has written its
/// line); `None` for a free lock, a missing file, or a record that names
/// another job.
fn live_in(jobs: &PrivateDir, id: &str) -> Result<Option<JobRecord>, StateError> {
    let name = file_name(id);
    let Some(file) = jobs.open_file(&name, OFlag::O_RDONLY, "open job record")? else { return Ok(None) };
    // Taken and dropped at once if free: a dead runner's file.
    match file.try_lock() {
        Ok(()) => return Ok(None),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(StateError::io("lock", &jobs.join(&name))(e)),
    }
    Ok(read_open(&file, &jobs.join(&name))?.filter(|r| r.runner.id == id))
}

/// Every live job's record, by id. Changes nothing and creates nothing: a
/// missing state dir has no jobs.
pub fn live(state_dir: &Path) -> Result<Vec<JobRecord>, StateError> {
    let Some(jobs) = jobs_dir(state_dir)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for id in ids(&jobs)? {
        out.extend(live_in(&jobs, &id)?);
    }
    Ok(out)
}

/// The live job `id`'s record; `None` if no live job has that id (or it
/// is no valid id).
pub fn find(state_dir: &Path, id: &str) -> Result<Option<JobRecord>, StateError> {
    if JobId::new(Some(id)).is_err() {
        return Ok(None);
    }
    match jobs_dir(state_dir)? {
        Some(jobs) => live_in(&jobs, id),
        None => Ok(None),
    }
}

/// The records whose lock is free: removed (each under its lock), or with
/// `dry_run` only listed.
pub fn reclaim_dead(state_dir: &Path, dry_run: bool) -> Reclaimed {
    let mut out = Reclaimed::default();
    let found = jobs_dir(state_dir).and_then(|d| d.map(|jobs| ids(&jobs).map(|ids| (jobs, ids))).transpose());
    let (jobs, ids) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return out,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    for id in ids {
        let name = file_name(&id);
        let path = jobs.join(&name);
        match RemovableLock::try_take(&jobs, &name, false) {
            Ok(None) => {}
            Ok(Some(_)) if dry_run => out.removed.push(path),
            Ok(Some(dead)) => match dead.remove(&jobs) {
                Ok(()) => out.removed.push(path),
                Err(e) => out.errors.push(e.to_string()),
            },
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, PrivateDir) {
        let t = tempfile::tempdir().unwrap();
        let d = PrivateDir::open(t.path(), false).unwrap().unwrap();
        (t, d)
    }

    fn argv() -> Vec<String> {
        vec!["sh".into(), "-c".into(), "echo \u{1b}[2J".into()]
    }

    #[test]
    fn a_record_is_read_only_up_to_its_last_complete_line() {
        let runner = Runner {
            id: "j".into(),
            pid: 7,
            start_time: 9,
            started: "2026-12-01T00:00:00Z".into(),
            net: "none".into(),
            command: argv(),
        };
        let init = Init { pid: 8, start_time: 10, ip: Some(Ipv4Addr::new(10, 0, 0, 2)) };
        let one = serde_json::to_string(&runner).unwrap() + "\n";
        let two = serde_json::to_string(&init).unwrap() + "\n";
        assert_eq!(JobRecord::parse(""), None);
        assert_eq!(JobRecord::parse(&one[..one.len() - 1]), None, "a line without its newline is not there yet");
        let first = JobRecord { runner: runner.clone(), init: None };
        assert_eq!(JobRecord::parse(&one), Some(first.clone()));
        assert_eq!(JobRecord::parse(&(one.clone() + &two[..5])), Some(first));
        assert_eq!(JobRecord::parse(&(one + &two)), Some(JobRecord { runner, init: Some(init) }));
    }

    #[test]
    fn a_claimed_name_is_refused_listed_and_gone_when_dropped() {
        let (t, state) = state();
        let claim = Claim::take(&state, "a.b", &argv(), NetMode::None).unwrap();
        claim.launched(std::process::id() as libc::pid_t, None);
        let e = Claim::take(&state, "a.b", &argv(), NetMode::Bridge).err().expect("a live name was taken twice");
        assert!(matches!(e, Error::JobRunning { pid: Some(p), .. } if p == std::process::id()), "{e}");
        assert_eq!(e.to_string(), format!("job a.b is running (pid {})", std::process::id()));
        let listed = live(t.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].runner.command, argv());
        assert_eq!(listed[0].init.as_ref().map(|i| i.pid), Some(std::process::id()));
        assert_eq!(find(t.path(), "a.b").unwrap(), Some(listed[0].clone()));
        assert_eq!(find(t.path(), "a").unwrap(), None);
        assert_eq!(find(t.path(), "../a.b").unwrap(), None);
        assert!(reclaim_dead(t.path(), false).removed.is_empty(), "a live record was reclaimed");
        drop(claim);
        assert!(!t.path().join("jobs/a.b.lock").exists());
        assert!(live(t.path()).unwrap().is_empty());
    }

    #[test]
    fn a_dead_runners_record_is_not_listed_reclaimed_by_gc_and_replaced_by_a_new_run() {
        let (t, state) = state();
        let jobs = state.create_subdir(DIR).unwrap();
        let stale = Runner {
            id: "old".into(),
            pid: 1,
            start_time: 0,
            started: "2026-12-01T00:00:00Z".into(),
            net: "none".into(),
            command: vec!["x".into()],
        };
        std::fs::write(jobs.join("old.lock"), serde_json::to_string(&stale).unwrap() + "\n").unwrap();
        assert!(live(t.path()).unwrap().is_empty());
        assert_eq!(reclaim_dead(t.path(), true).removed, vec![jobs.join("old.lock")]);
        assert!(jobs.join("old.lock").exists(), "a dry run removed a record");
        let claim = Claim::take(&state, "old", &argv(), NetMode::None).unwrap();
        let listed = live(t.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].runner.pid, std::process::id(), "the dead runner's line was kept");
        assert_eq!(listed[0].init, None);
        drop(claim);
        std::fs::write(jobs.join("old.lock"), "").unwrap();
        assert_eq!(reclaim_dead(t.path(), false).removed, vec![jobs.join("old.lock")]);
        assert!(!jobs.join("old.lock").exists());
    }

    #[test]
    fn a_run_waits_out_a_moments_hold_on_a_dead_runners_record() {
        let (t, state) = state();
        let jobs = state.create_subdir(DIR).unwrap();
        let dead = Runner {
            id: "j".into(),
            pid: std::process::id(),
            start_time: 0,
            started: "2026-12-01T00:00:00Z".into(),
            net: "none".into(),
            command: vec!["x".into()],
        };
        std::fs::write(jobs.join("j.lock"), serde_json::to_string(&dead).unwrap() + "\n").unwrap();
        // `ps` or `gc` looking at it: held a moment, then let go.
        let looker = File::open(jobs.join("j.lock")).unwrap();
        looker.try_lock().unwrap();
        let let_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(looker);
        });
        let claim = Claim::take(&state, "j", &argv(), NetMode::None).expect("the name is free");
        let_go.join().unwrap();
        assert_eq!(live(t.path()).unwrap()[0].runner.pid, std::process::id());
        drop(claim);

        // Held for good by something that never says who it is.
        std::fs::write(jobs.join("j.lock"), "").unwrap();
        let holder = File::open(jobs.join("j.lock")).unwrap();
        holder.try_lock().unwrap();
        let e = Claim::take(&state, "j", &argv(), NetMode::None).err().expect("a held lock was taken");
        assert_eq!(e.to_string(), "job j is running (pid unknown)");
    }

    #[test]
    fn looking_creates_nothing() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("state");
        assert!(live(&missing).unwrap().is_empty());
        assert_eq!(find(&missing, "j").unwrap(), None);
        assert!(reclaim_dead(&missing, false).removed.is_empty());
        assert!(!missing.exists());
    }
}
