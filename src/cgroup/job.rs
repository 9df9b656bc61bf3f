//! One job's cgroups: made before the job runs anything, nested under the
//! runner's own cgroup in every hierarchy whose controller it uses, limited,
//! and removed after the job is dead, on every path (an early return drops
//! it, and `Drop` removes what `remove` was not asked to).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::discover::{self, Hierarchies};
use super::error::{CgroupError, io_err};
use super::names::Runner;
use super::{devices, files, gc, v1, v2};
use crate::limits::Limits;

/// How long a kill or a removal waits for the job's last processes.
const GRACE: Duration = Duration::from_secs(5);

/// The job's cgroup in one v1 hierarchy.
#[derive(Debug)]
struct V1Cgroup {
    dir: PathBuf,
    /// The runner's own cgroup there, where it returns after the clone.
    own: PathBuf,
    controllers: Vec<String>,
}

#[derive(Debug)]
pub struct JobCgroup {
    /// The job's cgroup2 directory and an fd of it (for CLONE_INTO_CGROUP).
    v2: Option<(PathBuf, OwnedFd)>,
    v1: Vec<V1Cgroup>,
    /// The cgroup whose memory controller accounts the job, and whether it is v2.
    memory: Option<(PathBuf, bool)>,
    memory_limit: Option<u64>,
    removed: bool,
}

/// The runner inside the job's v1 cgroups, for the clone; [`Entered::leave`]
/// takes it back out (and so does dropping it).
pub struct Entered<'a> {
    back: Vec<&'a Path>,
}

impl Entered<'_> {
    /// Back into the runner's own v1 cgroups, every one tried.
    pub fn leave(mut self) -> Result<(), CgroupError> {
        let pid = std::process::id() as libc::pid_t;
        let mut first = None;
        for own in std::mem::take(&mut self.back) {
            if let Err(e) = files::enter(own, pid) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let pid = std::process::id() as libc::pid_t;
        for own in std::mem::take(&mut self.back) {
            let _ = files::enter(own, pid);
        }
    }
}

impl JobCgroup {
    /// Creates and limits the job's cgroups; `state` is the state dir's id
    /// (see `names`). Then removes those of dead runners next to them (the
    /// next run's share of `repeatr gc`).
    pub fn create(job: &str, limits: &Limits, state: &str) -> Result<JobCgroup, CgroupError> {
        let h = discover::discover()?;
        let me = Runner::me(state).map_err(|err| CgroupError::Read { path: "/proc/self/stat".into(), err })?;
        let cg = Self::create_in(&h, &me, job, limits)?;
        // Where this job's cgroups are, a dead runner started the same way
        // left its own; the rest is `gc`'s.
        let under: Vec<&Path> = cg.dirs().iter().filter_map(|d| d.parent()).collect();
        let stale = gc::reclaim_under(&under);
        // Another runner's garbage: worth a debug line, not the job's stderr.
        for e in &stale.errors {
            log::debug!("{e}");
        }
        Ok(cg)
    }

    fn create_in(h: &Hierarchies, me: &Runner, job: &str, limits: &Limits) -> Result<JobCgroup, CgroupError> {
        let name = me.job_cgroup(job);
        let mut cg = JobCgroup { v2: None, v1: Vec::new(), memory: None, memory_limit: limits.memory, removed: false };
        let v2_offers = match &h.v2 {
            Some(own) => v2::available(own)?,
            None => Vec::new(),
        };
        // Each controller from v1 if a v1 hierarchy holds it (a hybrid
        // host's v2 then cannot have it), else from v2.
        let on_v2 = |c: &str| h.v1_with(c).is_none() && v2_offers.iter().any(|o| o == c);
        let needed =
            [("memory", limits.memory.is_some(), "--memory"), ("cpu", limits.cpu_quota_us.is_some(), "--cpus")];
        for (controller, wanted, limit) in needed {
            if wanted && h.v1_with(controller).is_none() && !on_v2(controller) {
                return Err(CgroupError::NoController { limit, controller });
            }
        }
        if limits.pids.is_some() && h.v1_with("pids").is_none() && !on_v2("pids") {
            log::warn!("no pids controller on this host: the job's number of processes is not limited");
        }

        if let Some(own) = &h.v2 {
            let wanted: Vec<&str> = ["memory", "cpu", "pids"].into_iter().filter(|c| on_v2(c)).collect();
            v2::enable_controllers(own, &wanted, me)?;
            let dir = own.join(&name);
            std::fs::create_dir(&dir).map_err(io_err("create", &dir))?;
            let fd = open_dir(&dir);
            cg.v2 = Some((dir.clone(), OwnedFd::from(fd?)));
            v2::apply(&dir, limits, on_v2)?;
            if on_v2("memory") {
                cg.memory = Some((dir.clone(), true));
            }
            if let Some((_, fd)) = &cg.v2 {
                crate::sys::attach_device_program(fd.as_fd(), &devices::program())
                    .map_err(|err| CgroupError::DeviceProgram { path: dir.clone(), err })?;
            }
        }
        // A v1 hierarchy only where needed: on v1 the first process has to
        // migrate (the runner clones from inside), and the kernel's first
        // migration waits for an RCU grace period (see `enter_v1`).
        let kills_on_v2 = cg.v2.as_ref().is_some_and(|(d, _)| v2::can_kill(d));
        let needs = |c: &str| match c {
            "memory" => limits.memory.is_some(),
            "cpu" => limits.cpu_quota_us.is_some(),
            // The default pids limit only where it is cheap (v2, placed by
            // the clone): on v1 it would make every job pay a migration, an
            // RCU grace period of 8-20 ms, for a limit nobody asked for.
            // An explicit --pids-limit (or config, or formula) pays it.
            "pids" => limits.pids.is_some() && !limits.pids_default,
            // The v2 program is the allowlist wherever there is a cgroup2.
            "devices" => cg.v2.is_none(),
            "freezer" => !kills_on_v2,
            _ => false,
        };
        for hier in &h.v1 {
            let uses = |c: &str| hier.has(c);
            // Each hierarchy is one more migration of the runner in and
            // out, and every migration excludes every fork on the host for
            // its length (200 jobs at once queue on it): none without need.
            if !hier.controllers.iter().any(|c| needs(c)) {
                continue;
            }
            let dir = hier.own.join(&name);
            std::fs::create_dir(&dir).map_err(io_err("create", &dir))?;
            cg.v1.push(V1Cgroup { dir: dir.clone(), own: hier.own.clone(), controllers: hier.controllers.clone() });
            if uses("memory") {
                if let Some(bytes) = limits.memory {
                    v1::memory(&dir, bytes)?;
                }
                cg.memory = Some((dir.clone(), false));
            }
            if let (true, Some(q)) = (uses("cpu"), limits.cpu_quota_us) {
                v1::cpu(&dir, q)?;
            }
            if let (true, Some(n)) = (uses("pids"), limits.pids) {
                v1::pids(&dir, n)?;
            }
            if uses("devices") && needs("devices") {
                v1::devices(&dir)?;
            }
        }
        Ok(cg)
    }

    /// The cgroup2 directory the job's first process is born in.
    pub fn clone_into(&self) -> Option<BorrowedFd<'_>> {
        self.v2.as_ref().map(|(_, fd)| fd.as_fd())
    }

    /// Moves the runner into the job's v1 cgroups for the clone: v1 has no
    /// CLONE_INTO_CGROUP, and a child forked there is born there. The
    /// runner's own cgroup is their parent, so its caller's limits still
    /// bound it meanwhile. The child never drops the guard (it execs or
    /// exits), so only the runner goes back.
    ///
    /// Cost: a migration takes the kernel's threadgroup rwsem for writing,
    /// whose first taking waits for an RCU grace period (~13 ms on this
    /// machine), unless the hierarchy is mounted with `favordynmods`; the
    /// moves after it (back, other hierarchies) are quick. Nothing moves
    /// when no v1 hierarchy is used.
    pub fn enter_v1(&self) -> Result<Entered<'_>, CgroupError> {
        let pid = std::process::id() as libc::pid_t;
        let mut entered = Entered { back: Vec::new() };
        for c in &self.v1 {
            files::enter(&c.dir, pid)?;
            entered.back.push(&c.own);
        }
        Ok(entered)
    }

    /// The job's memory limit, for the OOM message.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Whether the OOM killer killed a process of the job.
    pub fn oom_killed(&self) -> bool {
        let kills = match &self.memory {
            Some((dir, true)) => v2::oom_kills(dir),
            Some((dir, false)) => v1::oom_kills(dir),
            None => return false,
        };
        kills.inspect_err(|e| log::debug!("{e}")).is_ok_and(|n| n > 0)
    }

    /// Kills every process of the job and waits until none is left: with
    /// `cgroup.kill` where the job has a cgroup2 directory (a hybrid
    /// host's empty one too: every process of the job is born in it),
    /// else by freezing it and killing each.
    pub fn kill(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + GRACE;
        if let Some((dir, _)) = self.v2.as_ref().filter(|(d, _)| v2::can_kill(d)) {
            v2::kill(dir)?;
            return files::wait_empty(dir, deadline);
        }
        let freezer = self.v1.iter().find(|c| c.controllers.iter().any(|n| n == "freezer")).map(|c| c.dir.as_path());
        match self.v1.first() {
            Some(c) => v1::kill(&c.dir, freezer, deadline),
            None => Ok(()),
        }
    }

    /// Kills what is left of the job and removes its cgroups; every
    /// failure is returned, none stops the rest.
    pub fn remove(mut self) -> Vec<CgroupError> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> Vec<CgroupError> {
        if self.removed {
            return Vec::new();
        }
        self.removed = true;
        let mut errors = Vec::new();
        if !self.is_empty()
            && let Err(e) = self.kill()
        {
            errors.push(e);
        }
        let deadline = Instant::now() + GRACE;
        let dirs = self.v2.take().map(|(d, _)| d).into_iter().chain(self.v1.drain(..).map(|c| c.dir));
        for dir in dirs {
            if let Err(e) = files::rmdir(&dir, deadline) {
                errors.push(e);
            }
        }
        errors
    }

    fn is_empty(&self) -> bool {
        let dir = self.v2.as_ref().map(|(d, _)| d.as_path()).or(self.v1.first().map(|c| c.dir.as_path()));
        dir.is_none_or(|d| files::procs(d).is_ok_and(|p| p.is_empty()))
    }

    /// Every directory the job has, for tests and messages.
    pub fn dirs(&self) -> Vec<&Path> {
        self.v2.iter().map(|(d, _)| d.as_path()).chain(self.v1.iter().map(|c| c.dir.as_path())).collect()
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        for e in self.remove_all() {
            eprintln!("repeatr: {e}");
        }
    }
}

fn open_dir(dir: &Path) -> Result<File, CgroupError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io_err("open", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_or_skip() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "this test needs root (CI=true)");
        eprintln!("skipped: needs root");
        false
    }

    /// A host shell that moves itself into every cgroup of `cg`, starts
    /// three sleepers there and waits; returns once all four are inside.
    fn fill(cg: &JobCgroup) -> std::process::Child {
        let enter: String = cg.dirs().iter().map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display())).collect();
        let script = format!("{enter}true || exit 9; sleep 100 & sleep 100 & sleep 100 & echo in; wait");
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "in\n");
        for d in cg.dirs() {
            assert_eq!(files::procs(d).unwrap().len(), 4, "{d:?}");
        }
        child
    }

    fn kill_and_remove(h: &Hierarchies, job: &str, by_cgroup_kill: bool) {
        let me = Runner::me("0123456789abcdef").unwrap();
        let cg = JobCgroup::create_in(h, &me, job, &Limits::default()).unwrap();
        assert_eq!(cg.v2.as_ref().is_some_and(|(d, _)| v2::can_kill(d)), by_cgroup_kill);
        let dirs: Vec<PathBuf> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
        assert!(!dirs.is_empty());
        let mut child = fill(&cg);
        cg.kill().unwrap();
        for d in &dirs {
            assert_eq!(files::procs(d).unwrap(), Vec::<libc::pid_t>::new(), "{d:?}");
        }
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        assert!(cg.remove().is_empty());
        for d in &dirs {
            assert!(!d.exists(), "{d:?}");
        }
        // A job still running at teardown: killed and removed in one go.
        let cg = JobCgroup::create_in(h, &me, &format!("{job}-b"), &Limits::default()).unwrap();
        let dirs: Vec<PathBuf> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
        let mut child = fill(&cg);
        drop(cg);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&child.wait().unwrap()), Some(libc::SIGKILL));
        for d in &dirs {
            assert!(!d.exists(), "{d:?}");
        }
    }

    /// A host without cgroup2 gets the allowlist from the v1 devices
    /// controller: a host shell in the job's cgroups can make and open
    /// /dev/null's node but not a loop device's.
    #[test]
    fn the_v1_devices_allowlist_denies_on_the_real_kernel() {
        if !root_or_skip() {
            return;
        }
        let h = Hierarchies { v2: None, ..discover::discover().unwrap() };
        assert!(h.v1_with("devices").is_some(), "this machine has a v1 devices controller");
        let job = format!("devices-v1-{}", std::process::id());
        let cg = JobCgroup::create_in(&h, &Runner::me("0123456789abcdef").unwrap(), &job, &Limits::default()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let enter: String = cg.dirs().iter().map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display())).collect();
        let script = format!(
            "{enter}cd {} || exit 9; mknod loop b 7 0 2>/dev/null && echo loop-made; \
             mknod null c 1 3 && echo x > null && echo null-ok; head -c1 /dev/kmsg >/dev/null 2>&1 || echo kmsg-denied",
            tmp.path().display()
        );
        let o = std::process::Command::new("/bin/sh").args(["-c", &script]).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "null-ok\nkmsg-denied\n",
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(cg.remove().is_empty());
    }

    #[test]
    fn kill_empties_the_job_with_cgroup_kill() {
        if !root_or_skip() {
            return;
        }
        let h = discover::discover().unwrap();
        kill_and_remove(&h, &format!("kill-v2-{}", std::process::id()), true);
    }

    /// Without a cgroup2 directory (a pure v1 host): the freezer way.
    #[test]
    fn kill_empties_the_job_by_freezing_it_on_v1() {
        if !root_or_skip() {
            return;
        }
        let h = Hierarchies { v2: None, ..discover::discover().unwrap() };
        assert!(h.v1_with("freezer").is_some(), "this machine has a v1 freezer");
        kill_and_remove(&h, &format!("kill-v1-{}", std::process::id()), false);
    }
}
