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

/// How many of the cgroups beside its own a run judges. Judging one reads
/// its runner's /proc/PID/stat: judging them all made each start cost
/// ~5 ms more next to 1000 live jobs. A fixed share from a random place
/// still reaches every dead one in time (each start removes up to this
/// many), and `repeatr gc` removes them all at once.
const SHARE: usize = 8;

/// Removes the cgroups of dead runners among up to [`SHARE`] of ours
/// directly in each of `dirs`, of whatever state dir: a dead runner's
/// cgroup is garbage whoever finds it, and one whose state dir was deleted
/// would otherwise stay for ever.
pub fn reclaim_under(dirs: &[&Path]) -> Reclaimed {
    let mut out = Reclaimed::default();
    let me = std::process::id() as libc::pid_t;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        // Ours, but for this runner's own (alive, by definition).
        let ours: Vec<(std::path::PathBuf, names::Runner)> = entries
            .flatten()
            .filter_map(|e| Some((e.path(), names::owner(e.file_name().to_str()?)?)))
            .filter(|(_, r)| r.pid != me)
            .collect();
        for (path, runner) in window(&ours, start_point(), SHARE) {
            if !runner.alive() {
                remove(path.clone(), &mut out);
            }
        }
    }
    out
}

/// `n` items of `items` from `start` on, wrapping around.
fn window<T>(items: &[T], start: usize, n: usize) -> impl Iterator<Item = &T> {
    let len = items.len();
    (0..n.min(len)).map(move |i| &items[(start + i) % len])
}

/// Where in the listing a run starts judging: different for runs that
/// start together, so that they share the work instead of all judging the
/// same few (std's RandomState is keyed at random in each process).
fn start_point() -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as usize
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
                    remove(path, out);
                }
            }
            Some(_) => {}
            None if depth < max => visit(&path, depth + 1, max, scope, out),
            None => {}
        }
    }
}

/// [`reclaim`]s a dead runner's cgroup at `path`, into `out`.
fn remove(path: std::path::PathBuf, out: &mut Reclaimed) {
    match reclaim(&path) {
        Ok(true) => out.removed.push(path),
        Ok(false) => {}
        Err(e) => out.errors.push(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_wraps_around_and_never_takes_one_twice() {
        let items: Vec<u32> = (0..20).collect();
        let w: Vec<u32> = window(&items, 17, 8).copied().collect();
        assert_eq!(w, [17, 18, 19, 0, 1, 2, 3, 4]);
        let few = [1, 2, 3];
        assert_eq!(window(&few, 5, 8).copied().collect::<Vec<_>>(), [3, 1, 2]);
        assert_eq!(window::<u32>(&[], 5, 8).count(), 0);
    }
}
