//! Finding a job's cgroups from the host, for the cgroup tests.

use std::path::{Path, PathBuf};

/// Every cgroup directory (under /sys/fs/cgroup, any hierarchy) whose name
/// ends in `.<job>`: a job's cgroups are `repeatr-job.<pid>.<start>.<job>`.
pub fn cgroups_of_job(job: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), &format!(".{job}"), 0, &mut out);
    out
}

fn walk(dir: &Path, suffix: &str, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("repeatr-job.") && name.ends_with(suffix) {
            out.push(e.path());
        } else if depth < 8 {
            walk(&e.path(), suffix, depth + 1, out);
        }
    }
}

/// `/proc/PID/cgroup` as (hierarchy controllers, path) pairs.
pub fn proc_cgroups(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// Builds `tests/probes/NAME.c` statically into the rootfs as `/bin/NAME`.
pub fn build_probe(rootfs: &Path, name: &str) -> PathBuf {
    let probe = rootfs.join("bin").join(name);
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/probes/{name}.c")))
        .status()
        .expect("gcc (the test command installs it)");
    assert!(built.success(), "building the {name} probe failed");
    probe
}
