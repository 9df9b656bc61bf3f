//! Removing the cgroups of dead runners: a job's (killing what is left in
//! it first) and a runner's v2 leaf. The next run looks next to its own
//! cgroups, and removes any dead runner's; `repeatr gc` walks every
//! hierarchy, since the dead runner may have been in other cgroups than gc
//! is, and removes (and reports) its own state dir's, as it does links.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::discover;
use super::error::CgroupError;
use super::files;
use super::names;
use crate::state::Reclaimed;
use crate::sys;

/// How deep a gc walk goes below a hierarchy's root.
const MAX_DEPTH: usize = 16;

/// How many of the cgroups beside its own a run judges. Judging one reads
/// its runner's /proc/PID/stat: judging them all made each start cost
/// ~5 ms more next to 1000 live jobs. A fixed share from a random place
/// still reaches every dead one in time (each start removes up to this
/// many), and `repeatr gc` removes them all at once.
const SHARE: usize = 8;

/// What one look at a directory reads: a few dozen entries of our names
/// (~60 bytes of `linux_dirent64` each).
const LOOK: usize = 4096;

/// Removes the cgroups of dead runners among up to [`SHARE`] of ours
/// directly in each of `dirs`, of whatever state dir: a dead runner's
/// cgroup is garbage whoever finds it, and one whose state dir was deleted
/// would otherwise stay for ever.
pub fn reclaim_under(dirs: &[&Path]) -> Reclaimed {
    let mut out = Reclaimed::default();
    let me = std::process::id() as libc::pid_t;
    for dir in dirs {
        let Ok(ours) = sample(dir, start_point(), me) else { continue };
        for (path, runner) in ours {
            if !runner.alive() {
                remove(path, &mut out);
            }
        }
    }
    out
}

/// Up to [`SHARE`] of our cgroups in `dir` (but those of runner `me`), from
/// one [`LOOK`] at its listing from position `start` on, plus one from its
/// beginning if that look found fewer: not a listing of all of it, which
/// next to 1000 live jobs cost every start 1.7% of all the host's CPU in
/// a burst (getdents64 and a path per entry). Names are compared as bytes
/// and made paths only once chosen: comparing every entry's path with
/// those found before (std's `Path` equality parses components) cost
/// another 3.7%.
///
/// A cgroup directory is kernfs, which lists entries in the order of their
/// names' 31-bit hashes and takes a position as a hash: from a random
/// position the listing starts at a random entry, so runs that start
/// together judge different cgroups. Elsewhere a position past the end
/// only means the look from the beginning.
fn sample(dir: &Path, start: i64, me: libc::pid_t) -> std::io::Result<Vec<(PathBuf, names::Runner)>> {
    let d = std::fs::File::open(dir)?;
    sys::seek_dir(d.as_fd(), start)?;
    let mut buf = vec![0u8; LOOK];
    let mut ours: Vec<(Vec<u8>, names::Runner)> = Vec::with_capacity(SHARE);
    let mut from_start = false;
    'looks: loop {
        let n = sys::getdents64(d.as_fd(), &mut buf)?;
        for (kind, name) in sys::dirents(&buf[..n]) {
            if kind != libc::DT_DIR {
                continue;
            }
            let Some(runner) = std::str::from_utf8(name).ok().and_then(names::owner) else { continue };
            // The look from the beginning may meet the first one's again.
            if runner.pid != me && !ours.iter().any(|(seen, _)| seen.as_slice() == name) {
                ours.push((name.to_vec(), runner));
                if ours.len() == SHARE {
                    break 'looks;
                }
            }
        }
        if from_start {
            break;
        }
        sys::seek_dir(d.as_fd(), 0)?;
        from_start = true;
    }
    Ok(ours.into_iter().map(|(name, runner)| (dir.join(OsStr::from_bytes(&name)), runner)).collect())
}

/// Where in the listing a run starts judging: a kernfs position (a name
/// hash: 2 up to i32::MAX - 1; 0, 1 and i32::MAX are the kernel's own), at
/// random in each process (std's RandomState is keyed at random), so that
/// runs that start together share the work.
fn start_point() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    2 + (h.finish() % (i32::MAX as u64 - 3)) as i64
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

    /// In a real cgroup directory (kernfs) beside the test's own: a look
    /// from a random position starts at a random entry, a position past the
    /// last one starts over from the beginning, and only our directories
    /// (but the given runner's) are taken.
    #[test]
    fn a_sample_starts_where_it_is_told_and_takes_only_ours() {
        if !crate::test_require_root() {
            return;
        }
        let h = discover::discover().unwrap();
        let own = h.v2.clone().or_else(|| h.v1.first().map(|v| v.own.clone())).expect("a cgroup hierarchy");
        let parent = own.join(format!("repeatr-test-sample-{}", std::process::id()));
        std::fs::create_dir(&parent).unwrap();
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                if let Ok(entries) = std::fs::read_dir(&self.0) {
                    for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _guard = Remove(parent.clone());
        let name =
            |pid: u32| names::Runner { state: "0123456789abcdef".into(), pid: pid as i32, start: 7 }.job_cgroup("j");
        for pid in 100..300 {
            std::fs::create_dir(parent.join(name(pid))).unwrap();
        }
        std::fs::create_dir(parent.join("not-ours")).unwrap();

        let all: std::collections::HashSet<PathBuf> = (100..300).map(|p| parent.join(name(p))).collect();
        let mut seen = std::collections::HashSet::new();
        let mut firsts = std::collections::HashSet::new();
        for k in 0..16i64 {
            let got = sample(&parent, 2 + k * (i32::MAX as i64 / 16), 150).unwrap();
            assert_eq!(got.len(), SHARE, "a share, not the whole listing");
            for (path, runner) in &got {
                assert!(all.contains(path), "{path:?}");
                assert_ne!(runner.pid, 150, "the given runner's own is left out");
            }
            firsts.insert(got[0].0.clone());
            seen.extend(got.into_iter().map(|(p, _)| p));
        }
        assert!(firsts.len() > 8, "looks from 16 places start at {} entries", firsts.len());
        assert!(seen.len() > 100, "16 looks saw {} of 200", seen.len());
        let past_the_end = sample(&parent, i32::MAX as i64 - 1, 0).unwrap();
        assert_eq!(past_the_end.len(), SHARE, "from the beginning again");
        // A directory smaller than one look: each of ours once, whatever
        // the start.
        let small = parent.join("small");
        std::fs::create_dir(&small).unwrap();
        let _small_guard = Remove(small.clone());
        for pid in 1..=5 {
            std::fs::create_dir(small.join(name(pid))).unwrap();
        }
        for k in 0..8i64 {
            let got = sample(&small, 2 + k * (i32::MAX as i64 / 8), 0).unwrap();
            let distinct: std::collections::HashSet<_> = got.iter().map(|(p, _)| p.clone()).collect();
            assert_eq!((got.len(), distinct.len()), (5, 5), "{got:?}");
        }
    }
}
