//! `repeatr ps`, `stop` and `kill` against real jobs (needs root). Every
//! test has its own state dir (and, for a networked job, its own bridge
//! and subnet: `common::Repeatr`); every runner is killed on drop, and its
//! job with it, even when the test fails.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `repeatr run --rootfs ROOTFS OPTS -- sh -c SCRIPT` in the background;
/// returns once the job has printed `ready`.
fn start(r: &Repeatr, rootfs: &Path, opts: &[&str], script: &str) -> Runner {
    let mut c = r.cmd();
    c.arg("run").arg("--rootfs").arg(rootfs).args(opts).args(["--", "/bin/sh", "-c", script]);
    let mut runner =
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map(Runner::new).unwrap();
    wait_for_line(&mut runner, "ready");
    runner
}

/// `repeatr ARGS` with the test's state dir, output captured.
fn repeatr(r: &Repeatr, args: &[&str]) -> Output {
    r.cmd().args(args).stdin(Stdio::null()).output().unwrap()
}

fn ps_json(r: &Repeatr) -> Vec<Value> {
    let out = repeatr(r, &["ps", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

const HOLD: &str = "echo ready; while :; do sleep 0.1; done";

#[test]
fn two_live_jobs_are_listed_one_of_them_without_network() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let quiet = start(&r, rootfs.path(), &["--net", "none", "--name", "quiet"], HOLD);
    let wired = start(&r, rootfs.path(), &["--net", "bridge", "--name", "wired.1"], HOLD);

    let jobs = ps_json(&r);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for (job, runner, net) in [(&jobs[0], &quiet, "none"), (&jobs[1], &wired, "bridge")] {
        assert_eq!(job["pid"], runner.id(), "{job}");
        assert_eq!(job["init_pid"], children_of(runner.id())[0], "{job}");
        assert_eq!(job["state"], "running", "{job}");
        assert_eq!(job["net"], net, "{job}");
        assert_eq!(job["command"], serde_json::json!(["/bin/sh", "-c", HOLD]), "{job}");
        let started = job["started"].as_str().unwrap();
        assert!(started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T', "{started}");
    }
    assert_eq!(jobs[0]["id"], "quiet");
    assert_eq!(jobs[0]["ip"], Value::Null);
    assert_eq!(jobs[1]["id"], "wired.1");
    let ip = jobs[1]["ip"].as_str().expect("the bridged job's address");
    assert!(ip.starts_with("198.19."), "{ip}");

    let out = repeatr(&r, &["ps"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID ") && lines[0].ends_with("COMMAND"), "{table}");
    assert!(lines[1].starts_with("quiet ") && lines[1].contains(" - ") && lines[1].contains(" running "), "{table}");
    assert!(lines[2].starts_with("wired.1 ") && lines[2].contains(ip), "{table}");
    assert!(lines[2].ends_with(&format!("/bin/sh -c {HOLD}")), "{table}");
    assert!(lines[1].contains(&format!(" {} ", quiet.id())), "{table}");

    // A stopped job says so (a signal takes effect a moment after kill
    // returns: wait for the state, within reason).
    let until = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ps_json(&r)[0]["state"] != want {
            assert!(std::time::Instant::now() < deadline, "never {want}: {:?}", ps_json(&r));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let init = nix::unistd::Pid::from_raw(children_of(quiet.id())[0]);
    nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGSTOP).unwrap();
    until("stopped");
    nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGCONT).unwrap();
    until("running");
    // So does one stopped by a Ctrl-Z of its runner (the init stops the
    // command, not itself), until `fg`.
    let runner = nix::unistd::Pid::from_raw(quiet.id() as i32);
    nix::sys::signal::kill(runner, nix::sys::signal::Signal::SIGTSTP).unwrap();
    until("stopped");
    nix::sys::signal::kill(runner, nix::sys::signal::Signal::SIGCONT).unwrap();
    until("running");
}

#[test]
fn stop_sends_term_and_the_runner_exits_with_the_jobs_status() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let runner = start(
        &r,
        rootfs.path(),
        &["--net", "none", "--name", "trap"],
        "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done",
    );
    let began = Instant::now();
    let out = repeatr(&r, &["stop", "trap"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(began.elapsed() < Duration::from_secs(5), "stop waited for its timeout: {:?}", began.elapsed());
    let mut child = runner.into_inner();
    // stop returns once the runner has exited: nothing to wait for.
    assert!(child.try_wait().unwrap().is_some(), "stop returned before the runner exited");
    assert_eq!(child.wait().unwrap().code(), Some(7));
    assert!(ps_json(&r).is_empty());
    assert!(!r.state.path().join("jobs/trap.lock").exists(), "the record outlived its job");
}

#[test]
fn stop_kills_a_job_that_ignores_term_after_the_timeout() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    // TERM ignored (SIG_IGN survives the exec), so that nothing but the
    // SIGKILL ends the job whether its pid 1 is sleep itself or an init that
    // forwards TERM to it.
    let runner =
        start(&r, rootfs.path(), &["--net", "none", "--name", "stubborn"], "trap '' TERM; echo ready; exec sleep 1000");
    let job = children_of(runner.id());
    assert_eq!(job.len(), 1);
    let began = Instant::now();
    let out = repeatr(&r, &["stop", "stubborn", "--timeout", "1s"]);
    let took = began.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(8), "{took:?}");
    let mut child = runner.into_inner();
    assert_eq!(child.wait().unwrap().code(), Some(137));
    wait_gone(job[0]);
    assert!(ps_json(&r).is_empty());

    // Without a handler: the init passes TERM on and the command dies of
    // it at once; with --no-init the command is pid 1, which the kernel
    // gives no signal it has no handler for, so only the SIGKILL ends it.
    for (opts, status, quick) in [(&["--name", "plain"][..], 143, true), (&["--name", "bare", "--no-init"], 137, false)]
    {
        let runner = start(&r, rootfs.path(), &[&["--net", "none"][..], opts].concat(), "echo ready; exec sleep 1000");
        let began = Instant::now();
        let out = repeatr(&r, &["stop", opts[1], "--timeout", "1s"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(began.elapsed() < Duration::from_secs(1), quick, "{opts:?}: {:?}", began.elapsed());
        assert_eq!(runner.into_inner().wait().unwrap().code(), Some(status), "{opts:?}");
    }

    let out = repeatr(&r, &["stop", "stubborn", "--timeout", "soon"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("bad --timeout: \"soon\" is not a duration"), "{}", stderr(&out));
}

#[test]
fn kill_sends_the_signal_given_and_does_not_wait() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let usr1 = start(
        &r,
        rootfs.path(),
        &["--net", "none", "--name", "usr1"],
        "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done",
    );
    let out = repeatr(&r, &["kill", "usr1", "--signal", "USR1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = usr1.into_inner().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).contains("got-usr1"));

    let plain = start(&r, rootfs.path(), &["--net", "none", "--name", "plain"], HOLD);
    let out = repeatr(&r, &["kill", "plain"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(plain.into_inner().wait().unwrap().code(), Some(137), "the default is KILL");

    let numbered = start(
        &r,
        rootfs.path(),
        &["--net", "none", "--name", "num"],
        "trap 'exit 5' TERM; echo ready; while :; do sleep 0.1; done",
    );
    let out = repeatr(&r, &["kill", "-s", "15", "num"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(numbered.into_inner().wait().unwrap().code(), Some(5));

    for (args, err) in [
        (&["kill", "num"][..], "repeatr: no running job num; see repeatr ps\n"),
        (&["stop", "../x"][..], "repeatr: no running job ../x; see repeatr ps\n"),
    ] {
        let out = repeatr(&r, args);
        assert_eq!(code(&out), 1, "{args:?}");
        assert_eq!(stderr(&out), err);
    }
    let out = repeatr(&r, &["kill", "--signal", "NOPE", "num"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("bad --signal NOPE"), "{}", stderr(&out));
}

#[test]
fn a_name_in_use_is_refused_and_the_first_job_keeps_running() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let mut first = start(&r, rootfs.path(), &["--net", "none", "--name", "dup"], HOLD);
    for net in ["none", "bridge"] {
        let out = r.run(rootfs.path(), &["--net", net, "--name", "dup"], &["/bin/echo", "second"]);
        assert_eq!(code(&out), 125, "{}", stderr(&out));
        assert_eq!(stderr(&out), format!("repeatr: job dup is running (pid {})\n", first.id()));
        assert!(!stdout(&out).contains("second"));
    }
    // Refused before anything was made: the bridged attempt took no lease
    // and made no bridge.
    let link = std::process::Command::new("ip").args(["link", "show", &r.bridge]).output().unwrap();
    assert!(!link.status.success(), "the refused run made its bridge");
    let leases = repeatr(&r, &["leases", "--json"]);
    assert_eq!(stdout(&leases).trim(), "[]");
    assert!(first.try_wait().unwrap().is_none(), "the first job died");
    let jobs = ps_json(&r);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["pid"], first.id());
    let out = repeatr(&r, &["stop", "dup", "--timeout", "100ms"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A name is free again once its job is gone.
    let out = r.run(rootfs.path(), &["--name", "dup"], &["/bin/echo", "again"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "again\n");
}

#[test]
fn a_runner_killed_by_sigkill_drops_out_of_ps_at_once_and_gc_removes_its_record() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let mut runner = start(&r, rootfs.path(), &["--net", "none", "--name", "victim"], HOLD);
    let job = children_of(runner.id());
    assert_eq!(ps_json(&r).len(), 1);
    runner.kill().unwrap();
    runner.wait().unwrap();
    assert!(ps_json(&r).is_empty(), "a dead runner's job is listed");
    let out = repeatr(&r, &["ps"]);
    assert_eq!(stdout(&out), "ID  PID  STARTED  STATE  IP  MEM  CPU  COMMAND\n");
    wait_gone(job[0]);
    let out = repeatr(&r, &["stop", "victim"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));

    let record = r.state.path().join("jobs/victim.lock");
    assert!(record.exists(), "a runner killed by SIGKILL cannot remove its record");
    let gc = |args: &[&str]| -> Value {
        let out = repeatr(&r, args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dry = gc(&["gc", "--dry-run", "--json"]);
    assert_eq!(dry["job_records_removed"], serde_json::json!([record.to_str().unwrap()]), "{dry}");
    assert!(record.exists(), "a dry run removed the record");
    let done = gc(&["gc", "--json"]);
    assert_eq!(done["job_records_removed"], serde_json::json!([record.to_str().unwrap()]), "{done}");
    assert!(!record.exists());
    assert_eq!(gc(&["gc", "--json"])["job_records_removed"], serde_json::json!([]));
}

#[test]
fn ps_creates_nothing_in_a_fresh_state_dir() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let fresh = r.state.path().join("fresh");
    for args in [&["ps"][..], &["ps", "--json"], &["stop", "x"], &["kill", "x"]] {
        let out = r.cmd().env("REPEATR_STATE_DIR", &fresh).args(args).output().unwrap();
        let expected = if args[0] == "ps" { 0 } else { 1 };
        assert_eq!(code(&out), expected, "{args:?}: {}", stderr(&out));
        assert!(!fresh.exists(), "{args:?} created the state dir");
    }
    std::fs::create_dir(&fresh).unwrap();
    let out = r.cmd().env("REPEATR_STATE_DIR", &fresh).args(["ps", "--json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "[]");
    assert!(std::fs::read_dir(&fresh).unwrap().next().is_none(), "ps created a file in the state dir");
}

#[test]
fn ps_shows_what_a_job_uses_now() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    // A memory limit gives the job a memory cgroup of its own on any host;
    // CPU time comes from its cgroup2 directory, which every job has.
    let busy = "echo ready; while :; do :; done";
    let _job = start(&r, rootfs.path(), &["--net", "none", "--memory", "64m", "--name", "busy"], busy);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = ps_json(&r);
        let cpu = jobs[0]["cpu_seconds"].as_f64().unwrap_or(0.0);
        if cpu > 0.05 {
            let memory = jobs[0]["memory_bytes"].as_u64().expect("the job's memory");
            assert!(memory > 0 && memory < 64 << 20, "{jobs:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no CPU time seen: {jobs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = stdout(&repeatr(&r, &["ps"]));
    assert!(table.lines().next().unwrap().contains(" MEM ") && table.contains("KiB"), "{table}");
}
