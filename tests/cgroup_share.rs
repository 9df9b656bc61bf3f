//! A run judges only a bounded share of the cgroups beside its own, so a
//! start costs the same next to 1000 live jobs as next to none; what it
//! leaves, later runs and `repeatr gc` remove. A test binary of its own:
//! another test's run would remove the dead cgroups it counts.

mod common;

use std::path::PathBuf;

use common::cgroups::cgroups_of_job;
use common::*;

/// The dead runners' cgroups a test made, removed even when it fails.
struct Fakes(Vec<PathBuf>);

impl Fakes {
    fn left(&self) -> Vec<&PathBuf> {
        self.0.iter().filter(|p| p.exists()).collect()
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir(p);
        }
    }
}

#[test]
fn a_run_removes_a_bounded_share_of_dead_cgroups_and_gc_the_rest() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let name = format!("cg-share-{}", std::process::id());
    let _live = r.start_ready(rootfs.path(), &["--name", &name], "echo ready; exec sleep 60");
    let own = cgroups_of_job(&name);
    assert!(!own.is_empty(), "the live job has no cgroup");
    // repeatr-job.<state>.<pid>.<start>.<job>: the fakes are this state
    // dir's, so that gc takes them too; their runner is a process that is gone.
    let file_name = own[0].file_name().unwrap().to_str().unwrap().to_owned();
    let state = file_name.split('.').nth(1).unwrap().to_owned();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();

    const FAKES: usize = 20;
    let mut fakes = Fakes(Vec::new());
    for dir in &own {
        let parent = dir.parent().unwrap();
        for i in 0..FAKES {
            let p = parent.join(format!("repeatr-job.{state}.{dead_pid}.1.fake{i}"));
            std::fs::create_dir(&p).unwrap();
            fakes.0.push(p);
        }
    }
    let total = fakes.0.len();

    let out = r.sh(rootfs.path(), &["--net", "none"], "true");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Per hierarchy, up to 8 of the 21 judged (the live job among them).
    let removed = total - fakes.left().len();
    assert!(removed > 0, "a run beside dead cgroups removed none");
    assert!(removed <= 8 * own.len(), "a run judged more than its share: removed {removed} of {total}");
    assert!(own.iter().all(|d| d.exists()), "a run removed a live job's cgroup");

    let out = r.cmd().arg("gc").output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(fakes.left(), Vec::<&PathBuf>::new(), "gc left dead cgroups");
    assert!(own.iter().all(|d| d.exists()), "gc removed a live job's cgroup");
}
