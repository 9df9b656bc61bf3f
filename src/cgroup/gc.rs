//! Removing the cgroups of dead runners: a job's (killing what is left in
//! it first) and a runner's v2 leaf. The next run looks next to its own
//! cgroups; `repeatr gc` walks every hierarchy, since the dead runner may
//! have been in other cgroups than gc is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::discover;
use super::error::CgroupError;
use super::files;
use super::names;

/// How deep a gc walk goes below a hierarchy's root.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Default)]
pub struct Reclaimed {
    pub removed: Vec<PathBuf>,
    pub errors: Vec<String>,
}

/// Removes (or with `dry_run` lists) our dead runners' cgroups directly in
/// each of `dirs`.
pub fn reclaim_under(dirs: &[&Path], dry_run: bool) -> Reclaimed {
    let mut out = Reclaimed::default();
    for dir in dirs {
        visit(dir, 0, 0, dry_run, &mut out);
    }
    out
}

/// Removes (or lists) our dead runners' cgroups anywhere in the cgroup
/// hierarchies mounted here.
pub fn reclaim_all(dry_run: bool) -> Reclaimed {
    let mut out = Reclaimed::default();
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(m) => {
            for point in discover::mount_points(&m) {
                visit(&point, 0, MAX_DEPTH, dry_run, &mut out);
            }
        }
        Err(e) => out.errors.push(format!("cgroups: cannot read /proc/self/mountinfo: {e}")),
    }
    out
}

fn visit(dir: &Path, depth: usize, max: usize, dry_run: bool, out: &mut Reclaimed) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let name = e.file_name();
        match names::owner(&name.to_string_lossy()) {
            Some(r) if !r.alive() => {
                if dry_run {
                    out.removed.push(path);
                } else {
                    match reclaim(&path) {
                        Ok(()) => out.removed.push(path),
                        Err(e) => out.errors.push(e.to_string()),
                    }
                }
            }
            Some(_) => {}
            None if depth < max => visit(&path, depth + 1, max, dry_run, out),
            None => {}
        }
    }
}

/// A dead runner's job died with it (PR_SET_PDEATHSIG); anything left,
/// such as a process that was being forked, is killed before the rmdir.
fn reclaim(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    if !files::procs(dir)?.is_empty() {
        if dir.join("cgroup.kill").exists() {
            files::write(dir, "cgroup.kill", "1")?;
            files::wait_empty(dir, deadline)?;
        } else {
            super::v1::kill(dir, None, deadline)?;
        }
    }
    files::rmdir(dir, deadline)
}
