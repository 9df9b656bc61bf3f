//! How a job's cgroups are named, so that the next run and `repeatr gc`
//! can tell those of dead runners of their state dir:
//! `repeatr-job.<state dir id>.<pid>.<start>.<job id>`, where the state
//! dir id is its links' marker id (`network::LinkOwner`: one gc touches
//! only its own state dir's, as with links) and pid and start time (clock
//! ticks since boot, /proc/PID/stat field 22) name the runner for the whole
//! boot, a recycled pid included. The same name in every hierarchy. A
//! cgroup v2 runner that had to leave its own cgroup for a leaf (see
//! `v2::enable_controllers`) sits in `repeatr-runner.<state dir id>.<pid>.<start>`.

pub const JOB_PREFIX: &str = "repeatr-job.";
pub const RUNNER_PREFIX: &str = "repeatr-runner.";

/// This runner, as its cgroup names say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runner {
    /// The state dir's id: 16 lowercase hex digits.
    pub state: String,
    pub pid: libc::pid_t,
    pub start: u64,
}

impl Runner {
    pub fn me(state: &str) -> std::io::Result<Runner> {
        let pid = std::process::id() as libc::pid_t;
        Ok(Runner { state: state.to_string(), pid, start: crate::sys::process_start_time(pid)? })
    }

    pub fn job_cgroup(&self, job: &str) -> String {
        format!("{JOB_PREFIX}{}.{}.{}.{job}", self.state, self.pid, self.start)
    }

    pub fn leaf(&self) -> String {
        format!("{RUNNER_PREFIX}{}.{}.{}", self.state, self.pid, self.start)
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
    let mut f = rest.splitn(4, '.');
    let state = f.next().filter(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let pid = f.next()?.parse().ok()?;
    let start = f.next()?.parse().ok()?;
    let job = f.next();
    // A job cgroup names its job; a runner leaf names nothing more.
    if name.starts_with(JOB_PREFIX) != job.is_some_and(|j| !j.is_empty()) {
        return None;
    }
    Some(Runner { state: state.to_string(), pid, start })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD: &str = "3f9c0a17d2b4e581";

    #[test]
    fn names_round_trip() {
        let r = Runner { state: SD.into(), pid: 41, start: 9000 };
        assert_eq!(r.job_cgroup("a.b-c"), "repeatr-job.3f9c0a17d2b4e581.41.9000.a.b-c");
        assert_eq!(owner(&r.job_cgroup("a.b-c")), Some(r.clone()));
        assert_eq!(owner(&r.leaf()), Some(r));
        for other in [
            "repeatr-job.3f9c0a17d2b4e581.41.9000",
            "repeatr-job.3f9c0a17d2b4e581.41.9000.",
            "repeatr-runner.3f9c0a17d2b4e581.41.9000.x",
            "repeatr-job.3f9c0a17d2b4e581.x.1.j",
            "repeatr-job.41.9000.j.k",
            "user.slice",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }

    #[test]
    fn this_runner_is_alive_and_a_made_up_one_is_not() {
        let me = Runner::me(SD).unwrap();
        assert!(me.alive());
        assert!(!Runner { start: me.start + 1, ..me }.alive());
    }
}
