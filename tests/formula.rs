//! `repeatr run FORMULA` end to end, as root: wares verified and placed,
//! outputs packed, run records compared.

mod common;
mod tamper;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A warehouse holding a busybox rootfs ware, and a state dir.
struct Bench {
    repeatr: Repeatr,
    wares: PathBuf,
    root: String,
}

impl Bench {
    fn new() -> Bench {
        let repeatr = Repeatr::new();
        let wares = repeatr.state.path().join("wares");
        let rootfs = Rootfs::busybox();
        let root = pack(&repeatr, &wares, rootfs.path());
        Bench { repeatr, wares, root }
    }

    fn formula(&self, name: &str, json: &str) -> PathBuf {
        let p = self.repeatr.state.path().join(name);
        std::fs::write(&p, json.replace("ROOT", &self.root)).unwrap();
        p
    }

    fn cmd(&self, formula: &Path, extra: &[&str]) -> Command {
        let mut c = self.repeatr.cmd();
        c.arg("run").arg(formula).arg("--warehouse").arg(&self.wares).args(extra).stdin(Stdio::null());
        c
    }

    fn run(&self, formula: &Path, extra: &[&str]) -> Output {
        self.cmd(formula, extra).output().unwrap()
    }
}

fn pack(r: &Repeatr, wares: &Path, dir: &Path) -> String {
    let out = r.cmd().arg("pack").arg(dir).arg("--warehouse").arg(wares).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn record(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no record ({e}): {}", stderr(out)))
}

const BUILD: &str = r#"{"inputs": {"/": "ROOT"},
  "action": {"exec": ["/bin/sh", "-c", "echo built by $(id -u) in $(pwd); echo hello > /out/a; mkdir /out/d; echo x > /out/d/b"]},
  "outputs": {"/out": {}}}"#;

#[test]
fn two_runs_give_the_same_results_and_check_agrees() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula("build.json", BUILD);
    let first = b.run(&f, &[]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let rec = record(&first);
    assert_eq!(rec["exitCode"], 0);
    assert!(rec["results"]["/out"].as_str().unwrap().starts_with("tar:"));
    assert_eq!(rec["formulaID"].as_str().unwrap().len(), 64);
    // The job's own output went to stderr; stdout is the record alone.
    assert!(stderr(&first).contains("built by 1000 in /task"), "{}", stderr(&first));
    let rec_path = b.repeatr.state.path().join("rec.json");
    std::fs::write(&rec_path, &first.stdout).unwrap();
    let second = b.run(&f, &["--check", rec_path.to_str().unwrap()]);
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(record(&second)["results"], rec["results"]);
    assert_eq!(record(&second)["formulaID"], rec["formulaID"]);
    assert!(stderr(&second).contains("all 1 outputs match"));
    // Nothing left in the state dir's output area.
    let left: Vec<_> = std::fs::read_dir(b.repeatr.state.path().join("outputs")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_nondeterministic_job_is_caught_by_check() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula(
        "random.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "head -c 16 /dev/urandom > /out/noise; echo same > /stable/s"]},
        "outputs": {"/out": {}, "/stable": {}}}"#,
    );
    let first = b.run(&f, &[]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let rec_path = b.repeatr.state.path().join("rec.json");
    std::fs::write(&rec_path, &first.stdout).unwrap();
    let second = b.run(&f, &["--check", rec_path.to_str().unwrap()]);
    assert_eq!(code(&second), 1, "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains("output /out differs"), "{err}");
    assert!(!err.contains("/stable differs"), "{err}");
    assert_eq!(record(&first)["results"]["/stable"], record(&second)["results"]["/stable"]);
}

#[test]
fn corrupt_and_missing_wares_stop_before_anything_runs() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let marker = b.repeatr.state.path().join("ran");
    let json = format!(
        r#"{{"inputs": {{"/": "ROOT", "/m": "mount:rw:{}"}},
        "action": {{"exec": ["/bin/sh", "-c", "touch /m/ran"]}}}}"#,
        b.repeatr.state.path().display()
    );
    let f = b.formula("corrupt.json", &json);
    // Flip one content byte of the stored rootfs ware.
    let hash = b.root.strip_prefix("tar:").unwrap();
    let ware = b.wares.join("tar").join(format!("{hash}.tar"));
    let mut bytes = std::fs::read(&ware).unwrap();
    let pos = bytes.windows(4).position(|w| w == b"root").unwrap();
    bytes[pos] ^= 0x20;
    std::fs::set_permissions(&ware, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&ware, &bytes).unwrap();
    let out = b.run(&f, &[]);
    assert_eq!(code(&out), 123, "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(!marker.exists(), "the job ran on a corrupt ware");
    std::fs::remove_file(&ware).unwrap();
    let out = b.run(&f, &[]);
    assert_eq!(code(&out), 122, "{}", stderr(&out));
    assert!(!marker.exists());
    let bad = b.formula("bad.json", r#"{"inputs": {"/": "ROOT"}, "action": {"exec": ["/bin/true"], "colour": 1}}"#);
    let out = b.run(&bad, &[]);
    assert_eq!(code(&out), 121, "{}", stderr(&out));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
}

/// Issue 9, item 4, through a formula: an input ware with an added PAX
/// `SCHILY.xattr.security.capability` record (its file name, the id, kept)
/// is refused before anything runs, as the root and as a ware placed in it.
#[test]
fn an_input_ware_with_an_added_xattr_is_refused() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    // Writable by the job's user (uid 1000).
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = shared.path().join("ran");
    let tool = tempfile::tempdir().unwrap();
    std::fs::write(tool.path().join("tool.sh"), "echo tool\n").unwrap();
    let tool_id = pack(&b.repeatr, &b.wares, tool.path());
    let json = format!(
        r#"{{"inputs": {{"/": "ROOT", "/opt": "{tool_id}", "/m": "mount:rw:{}"}},
        "action": {{"exec": ["/bin/sh", "-c", "touch /m/ran"]}}}}"#,
        shared.path().display()
    );
    let f = b.formula("xattr.json", &json);
    let out = b.run(&f, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(marker.exists(), "the untouched formula did not run");
    std::fs::remove_file(&marker).unwrap();
    for (id, entry) in [(b.root.as_str(), "./bin/busybox"), (tool_id.as_str(), "./tool.sh")] {
        let ware = b.wares.join("tar").join(format!("{}.tar", id.strip_prefix("tar:").unwrap()));
        let pristine = std::fs::read(&ware).unwrap();
        // The untouched run cached both wares, verified as they were
        // unpacked; a stored file tampered with later matters to the runs
        // that must unpack it, i.e. with an empty cache.
        std::fs::remove_dir_all(b.repeatr.cache_dir()).unwrap();
        tamper::insert_pax(&ware, entry, &[("SCHILY.xattr.security.capability", &tamper::CAP_SETUID_EP)]);
        let out = b.run(&f, &[]);
        assert_eq!(code(&out), 123, "{entry}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{entry}");
        assert!(stderr(&out).contains(ware.to_str().unwrap()), "{entry}: {}", stderr(&out));
        assert!(!marker.exists(), "{entry}: the job ran on a tampered ware");
        std::fs::write(&ware, pristine).unwrap();
    }
}

#[test]
fn inputs_are_placed_in_path_order_and_stay_inside_the_root() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    // A lower ware with a symlink aiming at a host directory, and a later
    // ware placed through it: it must land inside the root.
    let decoy = tempfile::Builder::new().prefix("rpt-decoy-").tempdir().unwrap();
    let lower = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(decoy.path(), lower.path().join("evil")).unwrap();
    let lower_id = pack(&b.repeatr, &b.wares, lower.path());
    let tool = tempfile::tempdir().unwrap();
    std::fs::write(tool.path().join("tool.txt"), "tool\n").unwrap();
    let tool_id = pack(&b.repeatr, &b.wares, tool.path());
    let json = format!(
        r#"{{"inputs": {{"/": "ROOT", "/opt": "{lower_id}", "/opt/evil": "{tool_id}", "/opt/tools": "{tool_id}"}},
        "action": {{"exec": ["/bin/sh", "-c", "cat /opt/tools/tool.txt; cat {}/tool.txt"]}}}}"#,
        decoy.path().display()
    );
    let f = b.formula("order.json", &json);
    let out = b.run(&f, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("tool\n").count(), 2, "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(decoy.path()).unwrap().count(), 0, "a ware landed on the host");
}

#[test]
fn outputs_of_a_job_killed_by_a_signal_are_still_packed() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula(
        "killed.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "echo partial > /out/p; exec sleep 1000"]},
        "outputs": {"/out": {}}}"#,
    );
    let runner =
        Runner::new(b.cmd(&f, &["--name", "killme"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let p = b.repeatr.state.path().join("outputs/killme/0/p");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.exists() {
        assert!(Instant::now() < deadline, "the job never wrote its output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = children_of(runner.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(job[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = runner.into_inner().wait_with_output().unwrap();
    assert_eq!(code(&out), 137, "{}", stderr(&out));
    let rec = record(&out);
    assert_eq!(rec["exitCode"], 137);
    assert!(rec["results"]["/out"].as_str().unwrap().starts_with("tar:"));
}

#[test]
fn the_hello_example_gives_its_expected_hash() {
    if !require_root() {
        return;
    }
    let out = Command::new("examples/hello-formula.sh").env("REPEATR", env!("CARGO_BIN_EXE_repeatr")).output().unwrap();
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("ok: /out is tar:"));
}

#[test]
fn gc_removes_the_outputs_of_a_killed_runner() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula(
        "crash.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "echo partial > /out/p; exec sleep 1000"]},
        "outputs": {"/out": {}}}"#,
    );
    let mut runner =
        Runner::new(b.cmd(&f, &["--name", "crashy"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let dir = b.repeatr.state.path().join("outputs/crashy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("0/p").exists() {
        assert!(Instant::now() < deadline, "the job never wrote its output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = children_of(runner.id());
    runner.kill().unwrap();
    runner.wait().unwrap();
    wait_gone(job[0]);
    assert!(dir.exists(), "a SIGKILLed runner cannot clean up");
    let out = b.repeatr.cmd().arg("gc").output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("removed leftover outputs"), "{}", stdout(&out));
    assert!(!dir.exists());
    let again = b.repeatr.cmd().arg("gc").output().unwrap();
    assert_eq!(stdout(&again), "nothing to clean\n");
}

/// Job ids with a dot: a run of `a.b` owns `a.b.lock` and `a.b/`, never
/// `a.lock`. While `a` runs, a finished `a.b` must leave `a`'s lock in place,
/// so that a second `a` is refused instead of deleting the live outputs.
#[test]
fn a_dotted_job_id_never_frees_another_jobs_outputs() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let long = b.formula(
        "long.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "echo live > /out/p; exec sleep 1000"]},
        "outputs": {"/out": {}}}"#,
    );
    let quick = b.formula("quick.json", BUILD);
    let mut a =
        Runner::new(b.cmd(&long, &["--name", "a"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let outputs = b.repeatr.state.path().join("outputs");
    let live = outputs.join("a/0/p");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live.exists() {
        assert!(Instant::now() < deadline, "job a never wrote its output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ab = b.run(&quick, &["--name", "a.b"]);
    assert_eq!(code(&ab), 0, "{}", stderr(&ab));
    assert!(outputs.join("a.lock").exists(), "a.b's run removed a's lock");
    assert!(!outputs.join("a.b.lock").exists() && !outputs.join("a.b").exists(), "a.b left its own files");
    let again = b.run(&quick, &["--name", "a"]);
    assert_eq!(code(&again), 121, "{}", stderr(&again));
    assert!(stderr(&again).contains("job a is already running"), "{}", stderr(&again));
    assert!(live.exists(), "the live job's outputs were deleted");
    a.kill().unwrap();
    a.wait().unwrap();
}

/// `--check` never hides the job's own status: a failed job exits with its
/// code even when its outputs match the record; a job that succeeded
/// exits 1 when an output differs (a_nondeterministic_job_is_caught_by_check).
#[test]
fn check_keeps_a_failed_jobs_status() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula(
        "fails.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "echo same > /out/s; exit 3"]},
        "outputs": {"/out": {}}}"#,
    );
    let first = b.run(&f, &[]);
    assert_eq!(code(&first), 3, "{}", stderr(&first));
    let rec_path = b.repeatr.state.path().join("rec.json");
    std::fs::write(&rec_path, &first.stdout).unwrap();
    let second = b.run(&f, &["--check", rec_path.to_str().unwrap()]);
    assert!(stderr(&second).contains("all 1 outputs match"), "{}", stderr(&second));
    assert_eq!(code(&second), 3, "{}", stderr(&second));
    assert_eq!(record(&second)["exitCode"], 3);
}

#[test]
fn a_formula_timeout_stops_the_job_and_the_record_says_so() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let action = |timeout: &str| {
        format!(
            r#"{{"inputs": {{"/": "ROOT"}},
            "action": {{"exec": ["/bin/sh", "-c", "echo partial > /out/p; exec sleep 30"]{timeout}}},
            "outputs": {{"/out": {{}}}}}}"#
        )
    };
    let f = b.formula("timeout.json", &action(r#", "timeout": "300ms""#));
    let out = b.run(&f, &[]);
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out after 300ms"), "{}", stderr(&out));
    let rec = record(&out);
    assert_eq!(rec["timedOut"], true);
    assert_eq!(rec["exitCode"], 143);
    assert!(rec["results"]["/out"].as_str().unwrap().starts_with("tar:"));
    // The timeout is not part of what the formula computes: same id.
    let without = b.formula("no-timeout.json", &action(""));
    let long = b.formula("long-timeout.json", &action(r#", "timeout": "1h""#));
    let ids: Vec<String> = [&f, &without, &long]
        .iter()
        .map(|f| {
            let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            let formula: repeatr::formula::Formula = serde_json::from_value(json).unwrap();
            formula.setup_hash().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    let bad = b.formula("bad-timeout.json", &action(r#", "timeout": "soon""#));
    let out = b.run(&bad, &[]);
    assert_eq!(code(&out), 121, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a duration"), "{}", stderr(&out));
}

#[test]
fn a_formula_over_its_memory_limit_is_recorded_as_oom_killed_and_limits_leave_its_id_alone() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let formula = |memory: &str| {
        format!(
            r#"{{"inputs": {{"/": "ROOT"}},
            "action": {{"exec": ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
                        "limits": {{"memory": "{memory}", "pids-limit": 64}}}}}}"#
        )
    };
    let tight = b.run(&b.formula("tight.json", &formula("64m")), &[]);
    assert_eq!(code(&tight), 137, "{}", stderr(&tight));
    assert!(stderr(&tight).contains("killed: out of memory (limit 64 MiB)"), "{}", stderr(&tight));
    let tight = record(&tight);
    assert_eq!(tight["oomKilled"], true);
    let roomy = b.run(&b.formula("roomy.json", &formula("1g")), &[]);
    assert_eq!(code(&roomy), 0, "{}", stderr(&roomy));
    let roomy = record(&roomy);
    assert_eq!(roomy.get("oomKilled"), None);
    assert_eq!(tight["formulaID"], roomy["formulaID"]);
    // A bad limit is refused before anything runs.
    let bad = b.run(&b.formula("bad.json", &formula("lots")), &[]);
    assert_eq!(code(&bad), 125);
    assert!(stderr(&bad).contains("limits.memory"), "{}", stderr(&bad));
}

#[test]
fn the_record_says_what_the_job_used() {
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula(
        "busy.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"], "limits": {"memory": "64m"}},
        "outputs": {}}"#,
    );
    let out = b.run(&f, &["-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let usage = &record(&out)["usage"];
    let (user, system, wall) = (
        usage["userSeconds"].as_f64().unwrap(),
        usage["systemSeconds"].as_f64().unwrap(),
        usage["wallSeconds"].as_f64().unwrap(),
    );
    assert!(user > 0.01, "a busy loop used no CPU: {usage}");
    assert!(user + system <= wall * 1.5 + 0.05, "more CPU than a single-threaded job can use: {usage}");
    // The job's cgroup has a memory controller (the limit asks for one).
    let peak = usage["peakMemoryBytes"].as_u64().unwrap();
    assert!(peak > 0 && peak < 64 << 20, "{usage}");
    assert!(stderr(&out).contains("s user and"), "no usage line with -v: {}", stderr(&out));
}

#[test]
fn a_formula_run_is_stopped_within_its_stop_timeout() {
    // Slurm's scancel sends SIGTERM and SIGKILLs the whole step KillWait
    // later: --stop-timeout is how a formula run fits in that.
    if !require_root() {
        return;
    }
    let b = Bench::new();
    let f = b.formula(
        "stubborn.json",
        r#"{"inputs": {"/": "ROOT"},
        "action": {"exec": ["/bin/sh", "-c", "trap '' TERM; echo partial > /out/p; sleep 1000"]},
        "outputs": {"/out": {}}}"#,
    );
    let runner = Runner::new(
        b.cmd(&f, &["--name", "stubborn", "--stop-timeout", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let p = b.repeatr.state.path().join("outputs/stubborn/0/p");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.exists() {
        assert!(Instant::now() < deadline, "the job never wrote its output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runner.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = runner.into_inner().wait_with_output().unwrap();
    let took = sent.elapsed();
    assert_eq!(code(&out), 137, "{}", stderr(&out));
    assert!(stderr(&out).contains("still running 1s after SIGTERM"), "{}", stderr(&out));
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "stopped after {took:?}");
    assert_eq!(record(&out)["exitCode"], 137);
    let bad = b.run(&f, &["--stop-timeout", "soon"]);
    assert_eq!(code(&bad), 125, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--stop-timeout"), "{}", stderr(&bad));
}

#[test]
fn flags_that_set_up_a_commands_job_are_refused_beside_a_formula() {
    // A formula says its whole job; a flag it would leave unheeded is an
    // error, never a silent no-op (the job would not be the one asked for).
    let b = Bench::new();
    let f = b.formula("build.json", BUILD);
    let flags: [&[&str]; 12] = [
        &["--net", "none"],
        &["--ip", "198.18.0.9"],
        &["--mount", "/tmp:/mnt"],
        &["--env", "A=1"],
        &["--workdir", "/tmp"],
        &["--hostname", "h"],
        &["--user", "1:1"],
        &["--cap-add", "NET_RAW"],
        &["--no-init"],
        &["-t"],
        &["--timeout", "5s"],
        &["--memory", "1g"],
    ];
    for extra in flags {
        let out = b.run(&f, extra);
        assert_eq!(code(&out), 125, "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("cannot be used with"), "{extra:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{extra:?} ran the formula");
    }
    // The flags that concern the runner itself still go with a formula.
    let out = b.run(&f, &["--stop-timeout", "3s", "--name", "flagged"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
