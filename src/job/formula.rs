//! `repeatr run FORMULA`: every input ware verified before anything runs,
//! the inputs placed in path order, the action run as an ordinary job, the
//! outputs packed into the warehouse, and the run record on stdout. Logs
//! and the job's own output (its stdout included) go to stderr, so the
//! record is all that stdout carries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{Cli, RunArgs};
use crate::container::{Caps, Exit, MakeDir, NetMode, Rootfs, Spec, User, spec};
use crate::error::Error;
use crate::formula::setup::{Input, Network, Privileges};
use crate::formula::{Formula, WareError, Warehouse};

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
    /// Output path -> ware id.
    pub results: BTreeMap<String, String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

fn invalid(problem: String) -> Error {
    Error::Ware(WareError::BadFormula { problem })
}

pub fn run(cli: &Cli, args: &RunArgs, path: &Path) -> Result<i32, Error> {
    let text = fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let formula = Formula::from_json(&text)?;
    let formula_id = formula.setup_hash().to_string();
    let warehouse = Warehouse::from_option(args.warehouse.clone())?;
    let id = match &args.name {
        Some(n) => n.clone(),
        None => spec::generate_job_id().map_err(Error::io("generating a job id"))?,
    };
    spec::check_job_id(&id)?;

    // Outputs are host directories bound into the job, so they outlive its
    // mount namespace; the guard removes them whatever happens.
    let outputs = OutputDirs::create(&cli.state_dir, &id, &formula)?;
    let spec = build_spec(cli, &formula, &warehouse, &id, &outputs)?;
    let hostname = spec.hostname.clone();

    let exit = super::launch(cli, spec, None)?;
    let exit_code = match &exit {
        Exit::Code(c) => *c,
        Exit::Signaled(s) => 128 + s,
        Exit::Failed(_) | Exit::Aborted(_) => -1,
    };
    let mut results = BTreeMap::new();
    if exit_code >= 0 {
        for ((path, out), dir) in formula.outputs.iter().zip(&outputs.dirs) {
            let ware = warehouse.pack(dir, &out.filters)?;
            results.insert(path.clone(), ware.to_string());
        }
    }
    let record = RunRecord {
        guid: id,
        time: crate::state::time::rfc3339_now(),
        formula_id,
        exit_code,
        results,
        hostname: Some(hostname),
    };
    let json =
        serde_json::to_string_pretty(&record).map_err(|e| Error::Io { what: "encoding the record", err: e.into() })?;
    println!("{json}");

    if let Some(check) = &args.check {
        return compare(check, &record);
    }
    Ok(exit.status())
}

/// `--check RECORD`: which outputs differ from an earlier run's.
fn compare(path: &Path, now: &RunRecord) -> Result<i32, Error> {
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
        Ok(0)
    } else {
        Ok(1)
    }
}

/// The formula as a container spec: `/` from a ware, other wares placed
/// in path order, mounts, output dirs, the action's identity and helpers.
fn build_spec(cli: &Cli, f: &Formula, warehouse: &Warehouse, id: &str, outputs: &OutputDirs) -> Result<Spec, Error> {
    let mut root = None;
    let mut wares = Vec::new();
    let mut mounts = Vec::new();
    let mut mount_paths: Vec<&str> = Vec::new();
    // BTreeMap order: a directory sorts before everything below it.
    for (path, input) in &f.inputs {
        match input {
            Input::Ware(ware) if path == "/" => root = Some(warehouse.open_verified(ware)?),
            Input::Ware(ware) => wares.push((PathBuf::from(path), warehouse.open_verified(ware)?)),
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
    let user = User { uid: a.userinfo.uid, gid: a.userinfo.gid };
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
    let hostname = a.hostname.clone().unwrap_or_else(|| id.to_string());
    spec::check_hostname(&hostname)?;
    let workdir = spec::clean_job_path(&a.cwd)
        .ok_or_else(|| invalid(format!("action.cwd {:?} is not a clean absolute path", a.cwd)))?;
    Ok(Spec {
        id: id.to_string(),
        rootfs: Rootfs::Tar { file: root, from_stdin: false },
        argv: a.exec.clone(),
        env,
        workdir,
        hosts: format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        resolv_conf: "# no network\n".into(),
        hostname,
        user,
        mounts,
        net: match a.network {
            Network::None => NetMode::None,
            Network::Bridge => NetMode::Bridge,
        },
        mount_base: super::ensure_mount_base(&cli.state_dir)?,
        wares,
        caps: match a.policy {
            Privileges::Routine => Caps::None,
            Privileges::Governor => Caps::DockerDefault,
            Privileges::Sysad => Caps::All,
        },
        make_dirs,
        stdout_to_stderr: true,
    })
}

/// `STATE_DIR/outputs/<job>/<n>`: one host directory per output, owned by
/// the job's user, bound into the job at the output's path. Removed on drop;
/// a runner killed before that leaves them to `repeatr gc` (the `.lock`
/// beside them is flocked for the run's whole life).
struct OutputDirs {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    _lock: fs::File,
}

impl OutputDirs {
    fn create(state_dir: &Path, id: &str, f: &Formula) -> Result<OutputDirs, Error> {
        let base = state_dir.join("outputs");
        let io = |err| Error::StateDir { path: state_dir.to_path_buf(), err };
        crate::state::private_dir(&base).map_err(io)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(format!("{id}.lock")))
            .map_err(io)?;
        lock.try_lock().map_err(|_| invalid(format!("job {id} is already running")))?;
        let root = base.join(id);
        let _ = fs::remove_dir_all(&root);
        crate::state::private_dir(&root).map_err(io)?;
        let mut out = OutputDirs { root, dirs: Vec::new(), _lock: lock };
        let (uid, gid) = (f.action.userinfo.uid, f.action.userinfo.gid);
        for n in 0..f.outputs.len() {
            let dir = out.root.join(n.to_string());
            fs::create_dir(&dir).map_err(io)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io)?;
            out.dirs.push(dir);
        }
        Ok(out)
    }
}

impl Drop for OutputDirs {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            log::warn!("removing {}: {e}", self.root.display());
        }
        // Nobody waits on it (try_lock only), so it can go while held.
        let _ = fs::remove_file(self.root.with_extension("lock"));
    }
}
