//! `STATE_DIR/outputs/`: the host directories a formula run's outputs are
//! written to, bound into the job at each output's path, packed after it.
//!
//! `<job>.lock` is flocked for the run's whole life and `<job>/` holds one
//! directory per output. Both go when the run ends; a runner killed before
//! that leaves them to `repeatr gc` (or the next run of the same job id),
//! which takes the lock first, so a live run's outputs are never touched.
//!
//! Unlike the state dir's other locks, these are unlinked (one per job id
//! ever run would pile up otherwise), so taking one is lock-then-verify
//! (`state::RemovableLock`): two runs of one job id never both hold it.
//!
//! `outputs/` is opened, checked and held as the state dir's other
//! directories are (`state::PrivateDir`): the lock file is opened relative
//! to it, never through a symlink, so a link planted at `<job>.lock` (or
//! an `outputs` that is a link) cannot make root lock, create or remove
//! files elsewhere.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::state::Reclaimed;
use crate::state::{PrivateDir, RemovableLock};

/// An exclusive hold on `outputs/<job>.lock`.
pub struct OutputLock {
    lock: RemovableLock,
    /// `outputs/`, held open.
    base: PrivateDir,
    /// `outputs/<job>`: the job id is a whole file name here, never cut at
    /// a dot (job `a.b` owns `a.b.lock` and `a.b/`, nothing of job `a`).
    dir: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `job`'s outputs in `base` (`STATE_DIR/outputs`);
    /// `None` if a live run holds it. With `create` false a missing lock
    /// file (or `base`) is `None` too (a look that must leave no file
    /// behind).
    pub fn try_take(base: &Path, job: &str, create: bool) -> io::Result<Option<OutputLock>> {
        match PrivateDir::open_inner(base, create)? {
            Some(base) => OutputLock::try_take_in(base, job, create),
            None => Ok(None),
        }
    }

    fn try_take_in(base: PrivateDir, job: &str, create: bool) -> io::Result<Option<OutputLock>> {
        Ok(RemovableLock::try_take(&base, &format!("{job}.lock"), create)?.map(|lock| {
            let dir = base.join(job);
            OutputLock { lock, base, dir }
        }))
    }

    /// `outputs/<job>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the outputs, then the lock file while it is still held.
    pub fn remove(self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.lock.remove(&self.base)?;
        Ok(())
    }
}

/// The outputs of every run whose lock is free: removed, or with
/// `dry_run` only listed (no file is created, removed or changed).
pub fn reclaim_dead(state_dir: &Path, dry_run: bool) -> Reclaimed {
    let mut out = Reclaimed::default();
    let (dir, names) = match listed(state_dir) {
        Ok(Some(found)) => found,
        Ok(None) => return out,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    // A job id is a plain name (`JobId`): never `.` or `..`, which would
    // make `<job>/` the directory itself or its parent.
    let mut jobs: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".lock"))
        .filter(|j| !matches!(*j, "" | "." | ".."))
        .map(String::from)
        .collect();
    jobs.sort();
    for job in jobs {
        match dir.try_clone().map_err(io::Error::from).and_then(|base| OutputLock::try_take_in(base, &job, false)) {
            Ok(None) => {}
            Ok(Some(lock)) if dry_run => out.removed.push(lock.dir().to_path_buf()),
            Ok(Some(lock)) => {
                let dir = lock.dir().to_path_buf();
                match lock.remove() {
                    Ok(()) => out.removed.push(dir),
                    Err(e) => out.errors.push(format!("{}: {e}", dir.display())),
                }
            }
            Err(e) => out.errors.push(format!("{}: {e}", dir.join(&format!("{job}.lock")).display())),
        }
    }
    out
}

/// `STATE_DIR/outputs`, opened without following a link, and its names;
/// `None` if either dir is missing.
fn listed(state_dir: &Path) -> Result<Option<(PrivateDir, Vec<String>)>, crate::state::StateError> {
    let Some(state) = PrivateDir::open(state_dir, false)? else { return Ok(None) };
    let Some(dir) = state.subdir("outputs", false)? else { return Ok(None) };
    let names = dir.names()?;
    Ok(Some((dir, names)))
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    /// A state dir (a temp dir of ours) and its `outputs/`, not yet made.
    fn outputs_dir() -> (tempfile::TempDir, PathBuf) {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("outputs");
        (state, dir)
    }

    #[test]
    fn a_dotted_job_id_owns_only_its_own_files() {
        let (_state, dir) = outputs_dir();
        let a = OutputLock::try_take(&dir, "a", true).unwrap().expect("free");
        fs::create_dir(a.dir()).unwrap();
        let ab = OutputLock::try_take(&dir, "a.b", true).unwrap().expect("free");
        assert_eq!(ab.dir(), dir.join("a.b"));
        ab.remove().unwrap();
        assert!(dir.join("a.lock").exists() && dir.join("a").exists());
        assert!(OutputLock::try_take(&dir, "a", true).unwrap().is_none(), "a is still held");
        a.remove().unwrap();
        assert!(fs::read_dir(&dir).unwrap().next().is_none(), "nothing left");
    }

    #[test]
    fn a_lock_unlinked_by_its_holder_is_not_taken_through_a_stale_open() {
        let (_state, dir) = outputs_dir();
        let held = OutputLock::try_take(&dir, "j", true).unwrap().unwrap();
        // Someone opened the file before the holder removed it...
        let stale = File::open(dir.join("j.lock")).unwrap();
        held.remove().unwrap();
        stale.try_lock().unwrap();
        // ...and holds the orphan inode: a new run must still get the path's lock.
        let fresh = OutputLock::try_take(&dir, "j", true).unwrap().expect("the path's lock is free");
        assert!(OutputLock::try_take(&dir, "j", true).unwrap().is_none());
        fresh.remove().unwrap();
    }

    #[test]
    fn dry_run_reclaims_nothing_and_creates_nothing() {
        let state = tempfile::tempdir().unwrap();
        let base = state.path().join("outputs");
        fs::create_dir(&base).unwrap();
        let live = OutputLock::try_take(&base, "live", true).unwrap().unwrap();
        fs::create_dir(live.dir()).unwrap();
        fs::write(base.join("dead.lock"), "").unwrap();
        fs::create_dir(base.join("dead")).unwrap();
        let seen = reclaim_dead(state.path(), true);
        assert_eq!(seen.removed, vec![base.join("dead")]);
        assert!(base.join("dead").exists() && base.join("dead.lock").exists());
        let done = reclaim_dead(state.path(), false);
        assert_eq!(done.removed, vec![base.join("dead")]);
        assert!(!base.join("dead").exists() && !base.join("dead.lock").exists());
        assert!(base.join("live").exists() && base.join("live.lock").exists());
        drop(live);
    }

    #[test]
    fn a_linked_outputs_dir_is_refused_and_its_target_untouched() {
        let (state, dir) = outputs_dir();
        let elsewhere = state.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("dead.lock"), "").unwrap();
        fs::create_dir(elsewhere.join("dead")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        let e = OutputLock::try_take(&dir, "j", true).err().expect("a linked outputs/ was used");
        assert!(e.to_string().contains("is a symlink"), "{e}");
        let seen = reclaim_dead(state.path(), false);
        assert!(seen.removed.is_empty(), "{:?}", seen.removed);
        assert!(seen.errors.iter().any(|e| e.contains("is a symlink")), "{:?}", seen.errors);
        assert!(elsewhere.join("dead").exists() && elsewhere.join("dead.lock").exists());
        assert!(!elsewhere.join("j.lock").exists());
    }

    #[test]
    fn a_linked_lock_file_is_refused() {
        let (state, dir) = outputs_dir();
        fs::create_dir(&dir).unwrap();
        let victim = state.path().join("victim");
        std::os::unix::fs::symlink(&victim, dir.join("j.lock")).unwrap();
        let e = OutputLock::try_take(&dir, "j", true).err().expect("a linked lock file was used");
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert!(!victim.exists(), "the link was followed");
    }
}
