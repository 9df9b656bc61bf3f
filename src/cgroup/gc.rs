//! Removing the cgroups of dead runners: a job's (killing what is left in
//! it first) and a runner's v2 leaf. The next run looks next to its own
//! cgroups, and removes any dead runner's; `repeatr gc` walks every
//! hierarchy, since the dead runner may have been in other cgroups than gc
//! is, and removes (and reports) its own state dir's, as it does links.

use std::path::Path;
use std::time::{Duration, Instant};

use super::discover;
use super::error::CgroupError;
use super::files;
use super::names;
use crate::state::Reclaimed;

/// How deep a gc walk goes below a hierarchy's root.
const MAX_DEPTH: usize = 16;

/// Removes the cgroups of dead runners directly in each of `dirs`, of
/// whatever state dir: a dead runner's cgroup is garbage whoever finds it,
/// and one whose state dir was deleted would otherwise stay for ever.
pub fn reclaim_under(dirs: &[&Path]) -> Reclaimed {
    let mut out = Reclaimed::default();
    for dir in dirs {
        visit(dir, 0, 0, &Scope { state: None, dry_run: false }, &mut out);
    }
    out
}

/// Removes (or lists) the cgroups of the dead runners of the state dir
/// whose id is `state`, anywhere in the cgroup hierarchies mounted here.
pub fn reclaim_all(state: &str, dry_run: bool) -> Reclaimed {
    let mut out = Reclaimed::default();
    match files::read_text(Path::new("/proc/self/mountinfo")) {
        Ok(m) => {
            for point in discover::mount_points(&m) {
                visit(&point, 0, MAX_DEPTH, &Scope { state: Some(state), dry_run }, &mut out);
            }
        }
        Err(e) => out.errors.push(format!("cgroups: cannot read /proc/self/mountinfo: {e}")),
    }
    out
}

/// Whose cgroups a walk removes (`None`: any state dir's), and whether it
/// only lists them.
struct Scope<'a> {
    state: Option<&'a str>,
    dry_run: bool,
}

fn visit(dir: &Path, depth: usize, max: usize, scope: &Scope<'_>, out: &mut Reclaimed) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let name = e.file_name();
        match names::owner(&name.to_string_lossy()) {
            Some(r) if scope.state.is_none_or(|s| s == r.state) && !r.alive() => {
                if scope.dry_run {
                    out.removed.push(path);
                } else {
                    match reclaim(&path) {
                        Ok(true) => out.removed.push(path),
                        Ok(false) => {}
                        Err(e) => out.errors.push(e.to_string()),
                    }
                }
            }
            Some(_) => {}
            None if depth < max => visit(&path, depth + 1, max, scope, out),
            None => {}
        }
    }
}

/// A dead runner's job died with it (PR_SET_PDEATHSIG); anything left,
/// such as a process that was being forked, is killed before the rmdir.
/// False if the cgroup was gone already: a runner that was just ending
/// removed it itself between the listing and the liveness check.
fn reclaim(dir: &Path) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let procs = match files::procs(dir) {
        Err(CgroupError::Read { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        other => other?,
    };
    if !procs.is_empty() {
        if dir.join("cgroup.kill").exists() {
            files::write(dir, "cgroup.kill", "1")?;
            files::wait_empty(dir, deadline)?;
        } else {
            super::v1::kill(dir, None, deadline)?;
        }
    }
    files::rmdir(dir, deadline).map(|()| true)
}
