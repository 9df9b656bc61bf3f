//! `STATE_DIR/outputs/`: the host directories a formula run's outputs are
//! written to, bound into the job at each output's path, packed after it.
//!
//! `<job>.lock` is flocked for the run's whole life and `<job>/` holds one
//! directory per output. Both go when the run ends; a runner killed before
//! that leaves them to `repeatr gc` (or the next run of the same job id),
//! which takes the lock first, so a live run's outputs are never touched.
//!
//! Unlike the state dir's other locks, these are unlinked (one per job id
//! ever run would pile up otherwise), so taking one is lock-then-verify:
//! after the flock, the path must still name the inode that was locked. A
//! process that opened the file just before its holder unlinked it locks
//! an orphan inode, sees the mismatch and opens the path again; so two
//! runs of one job id never both hold "the" lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An exclusive hold on `outputs/<job>.lock`.
pub struct OutputLock {
    file: File,
    path: PathBuf,
    /// `outputs/<job>`: the job id is a whole file name here, never cut at
    /// a dot (job `a.b` owns `a.b.lock` and `a.b/`, nothing of job `a`).
    dir: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `job`'s outputs in `base` (`STATE_DIR/outputs`);
    /// `None` if a live run holds it. With `create` false a missing lock
    /// file is `None` too (a look that must leave no file behind).
    pub fn try_take(base: &Path, job: &str, create: bool) -> io::Result<Option<OutputLock>> {
        let path = base.join(format!("{job}.lock"));
        loop {
            let file = match OpenOptions::new().write(true).create(create).truncate(false).mode(0o600).open(&path) {
                Ok(f) => f,
                Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
            let held = file.metadata()?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(OutputLock { file, dir: base.join(job), path }));
                }
                // Unlinked (and maybe re-created) by its holder meanwhile.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if create {
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
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
        fs::remove_file(&self.path)?;
        drop(self.file);
        Ok(())
    }
}

/// What `gc` found of runs whose runner died.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// `outputs/<job>` of each dead run (removed unless a dry run).
    pub removed: Vec<PathBuf>,
    pub errors: Vec<String>,
}

/// The outputs of every run whose lock is free: removed, or with
/// `dry_run` only listed (no file is created, removed or changed).
pub fn reclaim_dead(state_dir: &Path, dry_run: bool) -> Reclaimed {
    let base = state_dir.join("outputs");
    let mut out = Reclaimed::default();
    let Ok(entries) = fs::read_dir(&base) else { return out };
    let mut jobs: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".lock")).map(String::from))
        .collect();
    jobs.sort();
    for job in jobs {
        match OutputLock::try_take(&base, &job, false) {
            Ok(None) => {}
            Ok(Some(lock)) if dry_run => out.removed.push(lock.dir().to_path_buf()),
            Ok(Some(lock)) => {
                let dir = lock.dir().to_path_buf();
                match lock.remove() {
                    Ok(()) => out.removed.push(dir),
                    Err(e) => out.errors.push(format!("{}: {e}", dir.display())),
                }
            }
            Err(e) => out.errors.push(format!("{}: {e}", base.join(format!("{job}.lock")).display())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_job_id_owns_only_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = OutputLock::try_take(dir.path(), "a", true).unwrap().expect("free");
        fs::create_dir(a.dir()).unwrap();
        let ab = OutputLock::try_take(dir.path(), "a.b", true).unwrap().expect("free");
        assert_eq!(ab.dir(), dir.path().join("a.b"));
        ab.remove().unwrap();
        assert!(dir.path().join("a.lock").exists() && dir.path().join("a").exists());
        assert!(OutputLock::try_take(dir.path(), "a", true).unwrap().is_none(), "a is still held");
        a.remove().unwrap();
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing left");
    }

    #[test]
    fn a_lock_unlinked_by_its_holder_is_not_taken_through_a_stale_open() {
        let dir = tempfile::tempdir().unwrap();
        let held = OutputLock::try_take(dir.path(), "j", true).unwrap().unwrap();
        // Someone opened the file before the holder removed it...
        let stale = File::open(dir.path().join("j.lock")).unwrap();
        held.remove().unwrap();
        stale.try_lock().unwrap();
        // ...and holds the orphan inode: a new run must still get the path's lock.
        let fresh = OutputLock::try_take(dir.path(), "j", true).unwrap().expect("the path's lock is free");
        assert!(OutputLock::try_take(dir.path(), "j", true).unwrap().is_none());
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
}
