//! The cgroups of a runner killed by SIGKILL stay until `repeatr gc` (or
//! the next run beside them) removes them; `gc --dry-run` only lists them.
//! A test binary of its own: a run of another test would remove them first
//! (a run removes any dead runner's cgroups beside its own).

mod common;

use common::cgroups::cgroups_of_job;
use common::*;

#[test]
fn a_sigkilled_runners_cgroups_are_removed_by_gc_and_listed_by_a_dry_run() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let name = format!("cg-gc-{}", std::process::id());
    let mut runner = r.start_ready(rootfs.path(), &["--name", &name], "echo ready; exec sleep 60");
    let job = *children_of(runner.id()).first().unwrap();
    runner.kill().unwrap();
    runner.wait().unwrap();
    wait_gone(job);
    let left = cgroups_of_job(&name);
    assert!(!left.is_empty(), "the killed runner left no cgroup to test gc with");

    let o = r.cmd().args(["gc", "--dry-run", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: Vec<&str> = report["cgroups_removed"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for d in &left {
        assert!(listed.contains(&d.to_str().unwrap()), "{d:?} not in {listed:?}");
    }
    assert_eq!(cgroups_of_job(&name), left, "a dry run removed something");

    let o = r.cmd().args(["gc"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("dead job's cgroup"), "{}", stdout(&o));
    assert_eq!(cgroups_of_job(&name), Vec::<std::path::PathBuf>::new());
}
