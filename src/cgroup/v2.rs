//! cgroup v2: enabling controllers below the runner's own cgroup, the
//! job's limits in its files, its OOM count, and killing it. Each takes a
//! directory, so a fake cgroupfs tree (files in a temp dir) tests the
//! writers where the test host has no v2 controllers.

use std::io;
use std::path::Path;

use super::error::{CgroupError, io_err};
use super::files;
use super::names::Runner;
use crate::limits::{CPU_PERIOD_US, Limits};

/// Makes `wanted` available to the children of `own`, the runner's own
/// cgroup. The kernel refuses (EBUSY) to enable a controller for the
/// children of a non-root cgroup that holds processes: the runner, and
/// maybe its caller's. Like a delegated service under systemd (or Docker's
/// dind entrypoint, which moves its processes into an `init` leaf), the
/// runner then moves itself into a leaf of its own under `own`
/// (`repeatr-runner.<state dir id>.<pid>.<start>`) and tries again: the job's cgroup is
/// still a child of `own`, so what bounds the runner's caller bounds the
/// job. If other processes are left in `own`, that is the caller's cgroup
/// and not the runner's to rearrange: the error says how to give the
/// runner one of its own.
pub fn enable_controllers(own: &Path, wanted: &[&str], me: &Runner) -> Result<(), CgroupError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let enabled = files::read(own, "cgroup.subtree_control")?;
    let missing: Vec<String> =
        wanted.iter().filter(|c| !enabled.split_whitespace().any(|e| e == **c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let value = missing.join(" ");
    let path = own.join("cgroup.subtree_control");
    match files::write_io(&path, &value) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(err) => return Err(CgroupError::Io { what: "enable controllers in", path, err }),
    }
    let leaf = own.join(me.leaf());
    match std::fs::create_dir(&leaf) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err("create", &leaf)(e)),
        _ => {}
    }
    files::enter(&leaf, me.pid)?;
    match files::write_io(&path, &value) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::Busy(own.to_path_buf())),
        Err(err) => Err(CgroupError::Io { what: "enable controllers in", path, err }),
    }
}

/// The controllers `own`'s children can have.
pub fn available(own: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(files::read(own, "cgroup.controllers")?.split_whitespace().map(String::from).collect())
}

/// Writes the limits whose controller is on v2 (`on_v2` says which) into
/// the job's cgroup `dir`.
pub fn apply(dir: &Path, limits: &Limits, on_v2: impl Fn(&str) -> bool) -> Result<(), CgroupError> {
    if let Some(bytes) = limits.memory.filter(|_| on_v2("memory")) {
        files::write(dir, "memory.max", &bytes.to_string())?;
        // Swap off for the job (podman's --memory-swap = --memory); a
        // kernel without swap accounting has no such file, and no swap to
        // account either way.
        if dir.join("memory.swap.max").exists() {
            files::write(dir, "memory.swap.max", "0")?;
        }
    }
    if let Some(quota) = limits.cpu_quota_us.filter(|_| on_v2("cpu")) {
        files::write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
    }
    if let Some(n) = limits.pids.filter(|_| on_v2("pids")) {
        files::write(dir, "pids.max", &n.to_string())?;
    }
    Ok(())
}

/// How many processes of the job the OOM killer killed.
pub fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    Ok(files::keyed(&files::read(dir, "memory.events")?, "oom_kill").unwrap_or(0))
}

/// Whether this kernel can kill a cgroup as a whole (Linux 5.14).
pub fn can_kill(dir: &Path) -> bool {
    dir.join("cgroup.kill").exists()
}

/// SIGKILL to every process in the cgroup at once, by the kernel, so no
/// fork can slip out (Linux 5.14 `cgroup.kill`).
pub fn kill(dir: &Path) -> Result<(), CgroupError> {
    files::write(dir, "cgroup.kill", "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        d
    }

    #[test]
    fn limits_land_in_v2_files() {
        let d = fake(&["memory.max", "memory.swap.max", "cpu.max", "pids.max"]);
        let limits = Limits { memory: Some(64 << 20), cpu_quota_us: Some(50_000), pids: Some(50), ..Limits::default() };
        apply(d.path(), &limits, |_| true).unwrap();
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "50");
    }

    #[test]
    fn only_the_controllers_on_v2_are_written_and_a_missing_file_is_an_error() {
        let d = fake(&["pids.max"]);
        let limits = Limits { memory: Some(64 << 20), cpu_quota_us: None, pids: Some(50), ..Limits::default() };
        apply(d.path(), &limits, |c| c == "pids").unwrap();
        assert!(!d.path().join("memory.max").exists());
        assert!(apply(d.path(), &limits, |_| true).is_err());
    }

    #[test]
    fn oom_kills_come_from_memory_events() {
        let d = fake(&[]);
        std::fs::write(d.path().join("memory.events"), "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(d.path()).unwrap(), 1);
    }

    #[test]
    fn controllers_already_enabled_are_not_written_again() {
        let d = fake(&[]);
        std::fs::write(d.path().join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        enable_controllers(
            d.path(),
            &["memory", "pids"],
            &Runner { state: "0123456789abcdef".into(), pid: 1, start: 1 },
        )
        .unwrap();
        // A write would have replaced the text (a fake file does not parse it).
        assert_eq!(std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap(), "cpu memory pids\n");
    }

    #[test]
    fn missing_controllers_are_enabled_in_one_write() {
        let d = fake(&[]);
        std::fs::write(d.path().join("cgroup.subtree_control"), "cpu\n").unwrap();
        enable_controllers(
            d.path(),
            &["cpu", "memory", "pids"],
            &Runner { state: "0123456789abcdef".into(), pid: 1, start: 1 },
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap(), "+memory +pids");
    }
}
