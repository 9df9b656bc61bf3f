//! cgroup v1: the job's limits in each controller's own hierarchy, its
//! device allowlist, its OOM count, and killing it where there is no
//! `cgroup.kill`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::devices;
use super::error::CgroupError;
use super::files;

/// memory.limit_in_bytes, and the same for memory+swap (so the job gets
/// no swap) where the kernel accounts swap. The limit goes first: the
/// kernel refuses a memsw limit below the memory limit.
pub fn memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    files::write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
    if dir.join("memory.memsw.limit_in_bytes").exists() {
        files::write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
    }
    Ok(())
}

pub fn cpu(dir: &Path, quota_us: u64) -> Result<(), CgroupError> {
    files::write(dir, "cpu.cfs_period_us", &crate::limits::CPU_PERIOD_US.to_string())?;
    files::write(dir, "cpu.cfs_quota_us", &quota_us.to_string())
}

pub fn pids(dir: &Path, n: u64) -> Result<(), CgroupError> {
    files::write(dir, "pids.max", &n.to_string())
}

/// Everything denied, then the allowlist: a v1 devices cgroup starts with
/// its parent's list, and a child may only narrow it.
pub fn devices(dir: &Path) -> Result<(), CgroupError> {
    files::write(dir, "devices.deny", "a")?;
    for line in devices::v1_lines() {
        files::write(dir, "devices.allow", &line)?;
    }
    Ok(())
}

/// `oom_kill` of memory.oom_control (Linux 4.13).
pub fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    Ok(files::keyed(&files::read(dir, "memory.oom_control")?, "oom_kill").unwrap_or(0))
}

/// SIGKILL to every process in the cgroup at `dir` until none is left.
/// With a freezer cgroup of the job the processes are frozen first, so
/// none can fork while the list is being read (the freezer's purpose, as
/// in runc's signalAllProcesses); a frozen process still dies of SIGKILL
/// once thawed.
pub fn kill(dir: &Path, freezer: Option<&Path>, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        if let Some(f) = freezer {
            freeze(f, deadline)?;
        }
        let pids = files::procs(dir)?;
        for &pid in &pids {
            // ESRCH: it died meanwhile.
            let _ = crate::sys::kill(pid, libc::SIGKILL);
        }
        if let Some(f) = freezer {
            files::write(f, "freezer.state", "THAWED")?;
        }
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CgroupError::NotEmpty(dir.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn freeze(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    files::write(dir, "freezer.state", "FROZEN")?;
    while files::read(dir, "freezer.state")?.trim() != "FROZEN" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sets_memsw_only_where_the_kernel_has_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.limit_in_bytes"), "").unwrap();
        memory(d.path(), 1 << 30).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("memory.limit_in_bytes")).unwrap(), "1073741824");
        std::fs::write(d.path().join("memory.memsw.limit_in_bytes"), "").unwrap();
        memory(d.path(), 1 << 30).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("memory.memsw.limit_in_bytes")).unwrap(), "1073741824");
    }
}
