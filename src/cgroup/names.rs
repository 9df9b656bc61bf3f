//! How a job's cgroups are named, so that the next run and `repeatr gc`
//! can tell those of dead runners: `repeatr-job.<pid>.<start>.<job id>`,
//! where pid and start time (clock ticks since boot, /proc/PID/stat field
//! 22) name the runner for the whole boot, a recycled pid included. The
//! same name in every hierarchy. A cgroup v2 runner that had to leave its
//! own cgroup for a leaf (see `v2::enable_controllers`) sits in
//! `repeatr-runner.<pid>.<start>`.

pub const JOB_PREFIX: &str = "repeatr-job.";
pub const RUNNER_PREFIX: &str = "repeatr-runner.";

/// This runner, as its cgroup names say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runner {
    pub pid: libc::pid_t,
    pub start: u64,
}

impl Runner {
    pub fn me() -> std::io::Result<Runner> {
        let pid = std::process::id() as libc::pid_t;
        Ok(Runner { pid, start: crate::sys::process_start_time(pid)? })
    }

    pub fn job_cgroup(&self, job: &str) -> String {
        format!("{JOB_PREFIX}{}.{}.{job}", self.pid, self.start)
    }

    pub fn leaf(&self) -> String {
        format!("{RUNNER_PREFIX}{}.{}", self.pid, self.start)
    }

    /// Whether this runner still runs (in our pid namespace: a gc must run
    /// in the runners' pid namespace, as for leases).
    pub fn alive(&self) -> bool {
        crate::sys::process_start_time(self.pid).is_ok_and(|s| s == self.start)
    }
}

/// The runner a cgroup name of ours names, if it is one.
pub fn owner(name: &str) -> Option<Runner> {
    let rest = name.strip_prefix(JOB_PREFIX).or_else(|| name.strip_prefix(RUNNER_PREFIX))?;
    let mut f = rest.splitn(3, '.');
    let pid = f.next()?.parse().ok()?;
    let start = f.next()?.parse().ok()?;
    let job = f.next();
    // A job cgroup names its job; a runner leaf names nothing more.
    if name.starts_with(JOB_PREFIX) != job.is_some_and(|j| !j.is_empty()) {
        return None;
    }
    Some(Runner { pid, start })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let r = Runner { pid: 41, start: 9000 };
        assert_eq!(r.job_cgroup("a.b-c"), "repeatr-job.41.9000.a.b-c");
        assert_eq!(owner(&r.job_cgroup("a.b-c")), Some(r));
        assert_eq!(owner(&r.leaf()), Some(r));
        for other in [
            "repeatr-job.41.9000",
            "repeatr-job.41.9000.",
            "repeatr-runner.41.9000.x",
            "repeatr-job.x.1.j",
            "user.slice",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }

    #[test]
    fn this_runner_is_alive_and_a_made_up_one_is_not() {
        let me = Runner::me().unwrap();
        assert!(me.alive());
        assert!(!Runner { start: me.start + 1, ..me }.alive());
    }
}
