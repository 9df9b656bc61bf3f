//! `repeatr run FORMULA`: every input ware verified before anything runs,
//! the inputs placed in path order, the action run as an ordinary job, the
//! outputs packed into the warehouse, and the run record on stdout. Logs
//! and the job's own output (its stdout included) go to stderr, so the
//! record is all that stdout carries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::container::{Caps, Exit, MakeDir, NetMode, Process, Rootfs, Spec, SpecError, User, seccomp, spec};
use crate::error::Error;
use crate::formula::setup::{Input, Network, Privileges};
use crate::formula::{Formula, WareError};
use crate::job::{self, Host, JobId};
use crate::remote::Warehouses;
use crate::ware_cache::{Cache, Entry};

pub(crate) mod outputs;
use outputs::OutputLock;

/// A formula to run: the formula, where its wares are and its outputs go,
/// an earlier run record to compare with, and the job's id.
pub struct FormulaJob {
    pub formula: Formula,
    pub warehouses: Warehouses,
    pub check: Option<PathBuf>,
    pub id: JobId,
    /// `run --stop-timeout`: how this host stops a job (a scheduler's kill
    /// wait bounds it), not what the formula computes, so not in it.
    pub stop_timeout: Duration,
}

impl FormulaJob {
    /// Reads and parses the formula at `path`.
    pub fn load(path: &Path, warehouses: Warehouses, check: Option<PathBuf>, id: JobId) -> Result<FormulaJob, Error> {
        let text = fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let formula = Formula::from_json(&text)?;
        // Before anything runs: outputs need somewhere to go.
        if !formula.outputs.is_empty() {
            warehouses.save_target()?;
        }
        Ok(FormulaJob { formula, warehouses, check, id, stop_timeout: spec::DEFAULT_STOP_TIMEOUT })
    }
}

/// What a run produced, as printed on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub guid: String,
    pub time: String,
    #[serde(rename = "formulaID")]
    pub formula_id: String,
    /// The job's exit code; 128+N when signal N killed it; -1 when it never launched.
    pub exit_code: i32,
    /// `action.timeout` ran out and the job was stopped (the runner exits 124).
    #[serde(default)]
    pub timed_out: bool,
    /// Output path -> ware id.
    pub results: BTreeMap<String, String>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// The OOM killer ended the job (it exited 137 and its cgroup counts an OOM kill).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// What the job used; absent when it never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageRecord>,
}

/// A job's use of the host, as the run record gives it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub wall_seconds: f64,
    /// All the job's processes together, from its cgroup's memory
    /// controller; absent where the job's cgroup has none (e.g. a v1
    /// memory controller without `memory` in the limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

impl UsageRecord {
    fn of(outcome: &job::Outcome) -> Option<UsageRecord> {
        let u = outcome.ended.usage?;
        Some(UsageRecord {
            user_seconds: u.user.as_secs_f64(),
            system_seconds: u.system.as_secs_f64(),
            wall_seconds: u.wall.as_secs_f64(),
            peak_memory_bytes: outcome.memory_peak,
        })
    }
}

fn invalid(problem: String) -> Error {
    Error::Ware(WareError::BadFormula { problem })
}

pub fn run(host: &Host, job: FormulaJob) -> Result<i32, Error> {
    let FormulaJob { formula, warehouses, check, id, stop_timeout } = job;
    let formula_id = formula.setup_hash()?.to_string();

    // The identity first: output dirs are chowned to it.
    User::new(formula.action.userinfo.uid, formula.action.userinfo.gid)?;
    // Outputs are host directories bound into the job, so they outlive its
    // mount namespace; the guard removes them whatever happens.
    let outputs = OutputDirs::create(&host.state_dir, &id, &formula)?;
    // The inputs' cache entries, each held (never evicted) until the job ends.
    let cache = Cache::from_config(host.config.as_deref())?;
    let (mut spec, _in_use) = build_spec(&formula, &warehouses, &cache, &id, &outputs)?;
    spec.process.stop_timeout = stop_timeout;
    let hostname = spec.hostname.clone();

    let limits =
        formula.action.limits.clone().or(&crate::config::Config::load_limits(host.config.as_deref())?).parse(false)?;
    let net = job::NetRequest { named: id.given(), ..Default::default() };
    let outcome = job::launch(host, spec, &net, &limits)?;
    let usage = UsageRecord::of(&outcome);
    let ended = outcome.ended;
    let exit_code = match &ended.exit {
        Exit::Code(c) => *c,
        Exit::Signaled(s) => 128 + s,
        Exit::Failed(_) | Exit::Aborted(_) => -1,
    };
    let mut results = BTreeMap::new();
    if exit_code >= 0 {
        for ((path, out), dir) in formula.outputs.iter().zip(&outputs.dirs) {
            let ware = warehouses.pack(dir, &out.filters)?;
            results.insert(path.clone(), ware.to_string());
        }
    }
    let record = RunRecord {
        guid: id.to_string(),
        time: crate::civil_time::rfc3339_now(),
        formula_id,
        exit_code,
        timed_out: ended.timed_out,
        results,
        hostname: Some(hostname),
        oom_killed: outcome.oom_killed,
        usage,
    };
    let json =
        serde_json::to_string_pretty(&record).map_err(|e| Error::Io { what: "encoding the record", err: e.into() })?;
    println!("{json}");

    // The job's own status comes first: a failed job whose (partial)
    // outputs happen to match is still a failed job. --check decides only
    // for a job that succeeded.
    let differ = match &check {
        Some(path) => compare(path, &record)?,
        None => false,
    };
    Ok(match ended.status() {
        0 if differ => 1,
        status => status,
    })
}

/// `--check RECORD`: says which outputs differ from an earlier run's;
/// true if any does.
fn compare(path: &Path, now: &RunRecord) -> Result<bool, Error> {
    let text = fs::read_to_string(path).map_err(|e| invalid(format!("cannot read record {}: {e}", path.display())))?;
    let before: RunRecord =
        serde_json::from_str(&text).map_err(|e| invalid(format!("{} is not a run record: {e}", path.display())))?;
    let mut differ = 0;
    let paths: std::collections::BTreeSet<&String> = before.results.keys().chain(now.results.keys()).collect();
    for p in paths {
        let (a, b) = (before.results.get(p), now.results.get(p));
        if a != b {
            differ += 1;
            eprintln!(
                "repeatr: output {p} differs: {} before, {} now",
                a.map_or("none", String::as_str),
                b.map_or("none", String::as_str)
            );
        }
    }
    if differ == 0 {
        eprintln!("repeatr: all {} outputs match {}", now.results.len(), path.display());
    }
    Ok(differ > 0)
}

/// The formula as a container spec: `/` from a ware, other wares placed
/// in path order, mounts, output dirs, the action's identity and helpers;
/// with the cache entries of its wares, which must outlive the job.
fn build_spec(
    f: &Formula,
    warehouses: &Warehouses,
    cache: &Cache,
    id: &JobId,
    outputs: &OutputDirs,
) -> Result<(Spec, Vec<Entry>), Error> {
    let mut root = None;
    let mut wares = Vec::new();
    let mut mounts = Vec::new();
    let mut mount_paths: Vec<&str> = Vec::new();
    let mut in_use = Vec::new();
    let mut place = |ware| -> Result<Rootfs, Error> {
        let entry = cache.ensure_ware(ware, || Ok(warehouses.local(ware)?))?;
        let tree = entry.rootfs()?;
        in_use.push(entry);
        Ok(tree)
    };
    // BTreeMap order: a directory sorts before everything below it.
    for (path, input) in &f.inputs {
        match input {
            Input::Ware(ware) if path == "/" => root = Some(place(ware)?),
            Input::Ware(ware) => wares.push((PathBuf::from(path), place(ware)?)),
            Input::Mount { host_path, writable } => {
                let mode = if *writable { "rw" } else { "ro" };
                mounts.push(spec::parse_mount(&format!("{host_path}:{path}:{mode}"))?);
                mount_paths.push(path);
            }
        }
    }
    let root = root.ok_or_else(|| invalid("no input at /; the root filesystem must be a ware (tar:HASH)".into()))?;
    for (ware_path, _) in &wares {
        if let Some(m) = mount_paths.iter().find(|m| ware_path.starts_with(m)) {
            return Err(invalid(format!("input {} would be placed under the host mount at {m}", ware_path.display())));
        }
    }
    for (path, dir) in f.outputs.keys().zip(&outputs.dirs) {
        mounts.push(spec::parse_mount(&format!("{}:{path}:rw", dir.display()))?);
    }

    let a = &f.action;
    let user = User::new(a.userinfo.uid, a.userinfo.gid)?;
    let mut env: Vec<String> = a.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for kv in &env {
        spec::check_env(kv)?;
    }
    if a.helpers.set_env {
        let defaults = [
            ("HOME", a.userinfo.homedir.clone()),
            ("USER", a.userinfo.username.clone()),
            ("PATH", spec::DEFAULT_PATH.to_string()),
        ];
        for (k, v) in defaults {
            if !a.env.contains_key(k) {
                env.push(format!("{k}={v}"));
            }
        }
    }
    let mut make_dirs = Vec::new();
    if a.helpers.make_tmp {
        make_dirs.push(MakeDir { path: "/tmp".into(), mode: 0o1777, owner: User { uid: 0, gid: 0 } });
    }
    if a.helpers.make_home {
        make_dirs.push(MakeDir { path: a.userinfo.homedir.clone().into(), mode: 0o755, owner: user });
    }
    if a.helpers.make_cwd {
        make_dirs.push(MakeDir { path: a.cwd.clone().into(), mode: 0o755, owner: user });
    }
    let caps = match a.policy {
        Privileges::Routine => Caps::none(),
        Privileges::Governor => Caps::default_set(),
        Privileges::Sysad => Caps::all(),
    };
    let hostname = id.hostname(a.hostname.as_deref())?;
    let workdir = spec::clean_job_path(&a.cwd)
        .ok_or_else(|| invalid(format!("action.cwd {:?} is not a clean absolute path", a.cwd)))?;
    let spec = Spec {
        id: id.to_string(),
        rootfs: root,
        argv: a.exec.clone(),
        env,
        workdir,
        hostname,
        user,
        mounts,
        net: match a.network {
            Network::None => NetMode::None,
            Network::Bridge => NetMode::Bridge,
        },
        wares,
        seccomp: seccomp::default_for(&caps).map_err(SpecError::from)?,
        caps,
        make_dirs,
        stdout_to_stderr: true,
        process: Process { timeout: a.timeout, ..Process::default() },
        // Set from the limits at launch.
        tmpfs: Default::default(),
    };
    Ok((spec, in_use))
}

/// `STATE_DIR/outputs/<job>/<n>`: one host directory per output, owned by
/// the job's user, bound into the job at the output's path (see
/// `outputs`). Removed, with the lock, on drop.
struct OutputDirs {
    lock: Option<OutputLock>,
    dirs: Vec<PathBuf>,
}

impl OutputDirs {
    fn create(state_dir: &Path, id: &JobId, f: &Formula) -> Result<OutputDirs, Error> {
        // Checked as the state dir's own (root's, no links): the state
        // store's error says what is wrong with it.
        let base = crate::state::private_subdir(state_dir, "outputs")?;
        let io = |err| Error::StateDir { path: state_dir.to_path_buf(), err };
        let lock = OutputLock::try_take(&base, id.as_str(), true)
            .map_err(io)?
            .ok_or_else(|| invalid(format!("job {id} is already running; give this run another --name")))?;
        // From here on the guard removes the lock (and what is below it)
        // whatever fails. What is left of a dead run of the same id is ours.
        let root = lock.dir().to_path_buf();
        let mut out = OutputDirs { lock: Some(lock), dirs: Vec::new() };
        match fs::remove_dir_all(&root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        crate::state::private_subdir(&base, id.as_str())?;
        let (uid, gid) = (f.action.userinfo.uid, f.action.userinfo.gid);
        for n in 0..f.outputs.len() {
            let dir = root.join(n.to_string());
            fs::create_dir(&dir).map_err(io)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io)?;
            out.dirs.push(dir);
        }
        Ok(out)
    }
}

impl Drop for OutputDirs {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            let dir = lock.dir().display().to_string();
            if let Err(e) = lock.remove() {
                log::warn!("removing {dir}: {e}");
            }
        }
    }
}
