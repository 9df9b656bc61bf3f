//! What a running job uses now, read from its cgroups for `repeatr ps`:
//! found through its init's /proc/PID/cgroup, so no record has to say
//! where they are. Only a cgroup of the job's own counts (its name is
//! ours): a job that joined no v1 memory hierarchy sits in its runner's
//! there, whose numbers are not the job's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::discover;
use super::files;
use super::names::JOB_PREFIX;

/// A job's use of the host right now; `None` where no cgroup of its own
/// counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveUsage {
    /// CPU time of all its processes so far (cgroup2's `cpu.stat`, which
    /// the kernel keeps without the cpu controller too).
    pub cpu: Option<Duration>,
    /// Memory its processes use together (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`).
    pub memory: Option<u64>,
}

/// The usage of the job whose init is `pid`.
pub fn of_init(pid: u32) -> LiveUsage {
    let read = |p: &Path| files::read_text(p).ok();
    let (Some(cgroup), Some(mounts)) =
        (read(Path::new(&format!("/proc/{pid}/cgroup"))), read(Path::new("/proc/self/mountinfo")))
    else {
        return LiveUsage::default();
    };
    let h = discover::parse(&cgroup, &mounts);
    let own = |d: &PathBuf| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with(JOB_PREFIX));
    let v2 = h.v2.clone().filter(own);
    let cpu = v2.as_deref().and_then(|d| files::read(d, "cpu.stat").ok()).and_then(|t| files::keyed(&t, "usage_usec"));
    let memory = v2.as_deref().and_then(|d| files::number(d, "memory.current").ok()).or_else(|| {
        let v1 = h.v1_with("memory").map(|v| v.own.clone()).filter(own)?;
        files::number(&v1, "memory.usage_in_bytes").ok()
    });
    LiveUsage { cpu: cpu.map(Duration::from_micros), memory }
}
