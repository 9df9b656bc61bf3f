//! Command line: argument parsing, logging set-up, turning flags into the
//! job's request, and the one place where errors become a message and an
//! exit code.

use std::os::fd::AsFd;
use std::path::Path;

use clap::{CommandFactory, Parser};

use crate::admin::{self, GcOptions};
use crate::config::Config;
use crate::container::{self, NetMode, Rootfs, RootfsArg, Spec, SpecError, spec};
use crate::error::{EXIT_RUNNER_ERROR, Error};
use crate::formula::{Filters, WareId};
use crate::formula_run::{self, FormulaJob};
use crate::job_control;
use crate::ware_cache::{Cache, Entry};

mod args;
use crate::job::{self, Host, JobId, NetRequest, Request};
use crate::limits::{LimitStrings, Limits};
use crate::remote::Warehouses;
use args::{Cli, Command, FetchArgs, Net, PackArgs, RunArgs, Shell, UnpackArgs};

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, 2) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level).format_timestamp_micros().target(env_logger::Target::Stderr);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.init();
}

/// Parses the command line, runs the command, and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            let args: Vec<String> = std::env::args().collect();
            eprintln!("repeatr: {}; see '{} --help'", one_line(&e), command_named(&args));
            return EXIT_RUNNER_ERROR;
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("repeatr: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32, Error> {
    // The job's child resolves paths under the state dir after it has left
    // the runner's working directory: hold it absolute from here on.
    let state_dir =
        std::path::absolute(&cli.state_dir).map_err(|err| Error::StateDir { path: cli.state_dir.clone(), err })?;
    let config = cli.config;
    match cli.command {
        Command::Run(args) => {
            let host = Host { state_dir, config };
            match work(args, host.config.as_deref())? {
                Work::Command { spec, net, limits, in_use } => {
                    let code = job::run(Request { host, spec, net, limits });
                    drop(in_use);
                    code
                }
                Work::Formula(f) => formula_run::run(&host, f),
            }
        }
        Command::Leases { json } => admin::leases(&state_dir, json),
        Command::Ps { json } => job_control::ps(&state_dir, json),
        Command::Stop { name, timeout } => {
            let timeout = duration("--timeout", &timeout)?;
            job_control::stop(&state_dir, &name, timeout)
        }
        Command::Kill { name, signal } => job_control::kill(&state_dir, &name, job_control::parse_signal(&signal)?),
        Command::Gc { cache: true, dry_run, json, .. } => admin::gc_cache(config.as_deref(), dry_run, json),
        Command::Gc { dry_run, json, rebuild, all, .. } => {
            admin::gc(&state_dir, config.as_deref(), GcOptions { dry_run, json, rebuild, all })
        }
        Command::Pack(args) => pack(args, config.as_deref()),
        Command::Unpack(args) => unpack(args, config.as_deref()),
        Command::Fetch(args) => fetch(args, config.as_deref()),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
    }
}

/// What `run` was asked to run.
enum Work {
    /// `in_use`: a tar root's cache entry, held until the job ends so that
    /// it is never evicted under it.
    Command {
        spec: Spec,
        net: NetRequest,
        limits: Limits,
        in_use: Option<Entry>,
    },
    Formula(FormulaJob),
}

/// `run`'s flags as the job's work: a formula, or a command with a spec
/// whose every host object (rootfs, mount sources) is open already.
fn work(args: RunArgs, config: Option<&Path>) -> Result<Work, Error> {
    if let Some(path) = &args.formula {
        job::require_root()?;
        let warehouses =
            Warehouses::from_options(&args.warehouse, args.save_to.as_deref(), &Config::load_warehouse(config)?)?;
        let id = JobId::new(args.name.as_deref())?;
        let mut job = FormulaJob::load(path, warehouses, args.check, id)?;
        job.stop_timeout = duration("--stop-timeout", &args.stop_timeout)?;
        return Ok(Work::Formula(job));
    }
    let Some(rootfs_arg) = &args.rootfs else {
        return Err(Error::Usage(
            "--rootfs PATH (or a FORMULA) is required: repeatr run --rootfs PATH -- CMD [ARGS...], \
             or repeatr run FORMULA.json; see 'repeatr run --help'"
                .into(),
        ));
    };
    match args.command.first() {
        None => return Err(SpecError::NoCommand.into()),
        Some(cmd) if cmd.is_empty() => return Err(SpecError::EmptyCommand.into()),
        Some(_) => {}
    }
    job::require_root()?;
    let id = JobId::new(args.name.as_deref())?;
    let hostname = id.hostname(args.hostname.as_deref())?;
    for kv in &args.env {
        spec::check_env(kv)?;
    }
    let workdir = spec::clean_job_path(&args.workdir).ok_or_else(|| SpecError::Workdir(args.workdir.clone()))?;
    let user = spec::parse_user(&args.user)?;
    let mounts = args.mounts.iter().map(|m| spec::parse_mount(m)).collect::<Result<Vec<_>, _>>()?;
    let caps = container::Caps::with_changes(&args.cap_add, &args.cap_drop)?;
    let publish = crate::publish::parse_all(&args.publish)?;
    if !publish.is_empty() && matches!(args.net, Net::None) {
        return Err(crate::publish::PublishError::NoNetwork.into());
    }
    let seccomp = container::seccomp::from_security_opts(&args.security_opt, &caps).map_err(SpecError::from)?;
    let rootfs = spec::open_rootfs(rootfs_arg)?;
    let limits = LimitStrings {
        memory: args.memory,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        rootfs_size: args.rootfs_size,
        shm_size: args.shm_size,
    }
    .or(&Config::load_limits(config)?)
    .parse(true)?;
    let process = process(&args.timeout, &args.stop_timeout, args.no_init, args.tty, args.interactive)?;
    // Last, once every flag is known good: a tar's first run unpacks it.
    let (rootfs, in_use) = place_root(rootfs, config)?;
    let spec = Spec {
        env: spec::build_env(&args.env, &hostname),
        id: id.to_string(),
        rootfs,
        argv: args.command,
        workdir,
        hostname,
        user,
        mounts,
        net: match args.net {
            Net::Bridge => NetMode::Bridge,
            Net::None => NetMode::None,
        },
        wares: Vec::new(),
        caps,
        seccomp,
        make_dirs: Vec::new(),
        stdout_to_stderr: false,
        process,
        // Set from the limits at launch.
        tmpfs: Default::default(),
    };
    Ok(Work::Command { spec, net: NetRequest { ip: args.ip, publish, named: id.given() }, limits, in_use })
}

/// A `--rootfs` tar is placed from the ware cache (unpacked into it on its
/// first run), as a directory root is: an overlay over the cached tree.
fn place_root(rootfs: RootfsArg, config: Option<&Path>) -> Result<(Rootfs, Option<Entry>), Error> {
    let (file, from_stdin) = match rootfs {
        RootfsArg::Dir(dir) => return Ok((dir, None)),
        RootfsArg::Tar { file, from_stdin } => (file, from_stdin),
    };
    let entry = Cache::from_config(config)?.ensure_tar(file, from_stdin)?;
    if from_stdin {
        // The tar used up our stdin; the job reads an empty one instead.
        let null = std::fs::File::open("/dev/null").map_err(Error::io("opening /dev/null"))?;
        nix::unistd::dup2_stdin(null.as_fd()).map_err(|e| Error::Io { what: "replacing stdin", err: e.into() })?;
    }
    Ok((entry.rootfs()?, Some(entry)))
}

/// How the job runs and stops, from `run`'s flags.
fn process(
    timeout: &Option<String>,
    stop_timeout: &str,
    no_init: bool,
    tty: bool,
    interactive: bool,
) -> Result<container::Process, SpecError> {
    if tty && !container::tty::is_terminal(std::io::stdin().as_fd()) {
        return Err(SpecError::TtyNotTerminal);
    }
    Ok(container::Process {
        init: !no_init,
        tty,
        interactive,
        stop_timeout: duration("--stop-timeout", stop_timeout)?,
        timeout: timeout.as_deref().map(|t| duration("--timeout", t)).transpose()?,
    })
}

/// A duration flag's value (`--timeout`, `--stop-timeout`).
fn duration(flag: &'static str, text: &str) -> Result<std::time::Duration, SpecError> {
    crate::duration::parse(text).map_err(|why| SpecError::Duration { flag, why })
}

fn pack(args: PackArgs, config: Option<&Path>) -> Result<i32, Error> {
    let filters = Filters::from_args(&args.filters)?;
    let flags: Vec<_> = args.warehouse.into_iter().collect();
    let warehouses = Warehouses::from_options(&flags, None, &Config::load_warehouse(config)?)?;
    let id = warehouses.pack(&args.path, &filters)?;
    println!("{id}");
    Ok(0)
}

fn unpack(args: UnpackArgs, config: Option<&Path>) -> Result<i32, Error> {
    let id: WareId = args.ware.parse()?;
    let warehouses = Warehouses::from_options(&args.warehouse, None, &Config::load_warehouse(config)?)?;
    let stats = warehouses.local(&id)?.unpack(&id, &args.dir)?;
    log::info!("unpacked {id}: {} entries, {} bytes", stats.entries, stats.bytes);
    // Whose files these are is the ware's (its filters flattened them, or
    // kept the packer's): say it, so nobody is surprised by uid 1000.
    let owners = owners_of(&args.dir).map_err(Error::io("reading back the unpacked tree"))?;
    let mut list: Vec<((u32, u32), u64)> = owners.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = list.iter().take(4).map(|((u, g), n)| format!("{u}:{g} ({n})")).collect();
    let more = if list.len() > 4 { format!(" and {} more", list.len() - 4) } else { String::new() };
    eprintln!(
        "repeatr: unpacked {} entries into {}, owned (uid:gid) as the ware says: {}{more}",
        stats.entries,
        args.dir.display(),
        shown.join(", ")
    );
    Ok(0)
}

/// `fetch WARE`: the local path of a verified copy (from the download
/// area for a remote ware), and with `--save-to` a copy there too.
fn fetch(args: FetchArgs, config: Option<&Path>) -> Result<i32, Error> {
    let id: WareId = args.ware.parse()?;
    let warehouses =
        Warehouses::from_options(&args.warehouse, args.save_to.as_deref(), &Config::load_warehouse(config)?)?;
    let local = warehouses.local(&id)?;
    // Verified here even when a local warehouse has it: `fetch` says the
    // copy it names is good.
    drop(local.open_verified(&id)?);
    if args.save_to.is_some() {
        warehouses.save(&id)?;
    }
    println!("{}", local.ware_path(&id).display());
    Ok(0)
}

/// How many entries below `root` (itself included) each owner has.
fn owners_of(root: &Path) -> std::io::Result<std::collections::HashMap<(u32, u32), u64>> {
    use std::os::unix::fs::MetadataExt;
    let mut owners = std::collections::HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)?;
        *owners.entry((m.uid(), m.gid())).or_insert(0) += 1;
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(owners)
}

/// Completion scripts and man pages, made by build.rs from the same
/// definition the parser uses.
const BASH_COMPLETION: &str = include_str!(concat!(env!("OUT_DIR"), "/repeatr.bash"));
const ZSH_COMPLETION: &str = include_str!(concat!(env!("OUT_DIR"), "/_repeatr"));
const FISH_COMPLETION: &str = include_str!(concat!(env!("OUT_DIR"), "/repeatr.fish"));
const MAN_PAGES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/man_pages.rs"));

fn completions(shell: Shell) -> Result<i32, Error> {
    let script = match shell {
        Shell::Bash => BASH_COMPLETION,
        Shell::Zsh => ZSH_COMPLETION,
        Shell::Fish => FISH_COMPLETION,
    };
    print_text(script)
}

fn print_text(text: &str) -> Result<i32, Error> {
    use std::io::Write;
    std::io::stdout().write_all(text.as_bytes()).map_err(|err| Error::Io { what: "writing to stdout", err })?;
    Ok(0)
}

/// The man page of `repeatr` on stdout, or with `dir` one page per
/// command (repeatr.1, repeatr-run.1, ...) written there.
fn man(dir: Option<&Path>) -> Result<i32, Error> {
    let Some(dir) = dir else {
        let main = MAN_PAGES.iter().find(|(name, _)| *name == "repeatr.1").map_or("", |(_, page)| page);
        return print_text(main);
    };
    for (name, page) in MAN_PAGES {
        std::fs::write(dir.join(name), page).map_err(|err| Error::Io { what: "writing a man page into --dir", err })?;
    }
    Ok(0)
}

/// clap's message in one line: the error, what it lists, and its tip
/// (a suggestion for a typo), without the usage block.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut head = String::new();
    let mut tips = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("Usage: ") || line.starts_with("For more information") {
            continue;
        }
        if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip.to_string());
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        // A list after "...:" or "[possible values: ...]" continues the
        // sentence; anything else is a sentence of its own.
        if !head.is_empty() && !head.ends_with(':') && !line.starts_with('[') {
            head.push(';');
        }
        if !head.is_empty() {
            head.push(' ');
        }
        head.push_str(line);
    }
    if head.is_empty() {
        head = "bad arguments".into();
    }
    for tip in tips {
        head += &format!(" ({tip})");
    }
    head
}

/// `repeatr SUBCOMMAND` if the command line names one (whose help is the
/// one to read), else `repeatr`.
fn command_named(args: &[String]) -> String {
    let cmd = Cli::command();
    let sub = args.iter().skip(1).take_while(|a| *a != "--").find_map(|a| cmd.find_subcommand(a));
    match sub {
        Some(s) => format!("repeatr {}", s.get_name()),
        None => "repeatr".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).expect_err("should be refused");
        let s = one_line(&e);
        assert!(!s.contains('\n'), "{s}");
        s
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
        assert_eq!(args::DEFAULT_STATE_DIR, crate::state::DEFAULT_STATE_DIR);
    }

    #[test]
    fn man_pages_and_completions_cover_every_command() {
        let names: Vec<&str> = MAN_PAGES.iter().map(|(n, _)| *n).collect();
        for sub in Cli::command().get_subcommands() {
            let page = format!("repeatr-{}.1", sub.get_name());
            assert!(names.contains(&page.as_str()), "no {page} in {names:?}");
            for script in [BASH_COMPLETION, ZSH_COMPLETION, FISH_COMPLETION] {
                assert!(script.contains(sub.get_name()), "{} missing from a completion script", sub.get_name());
            }
        }
        assert!(names.contains(&"repeatr.1"));
        assert!(FISH_COMPLETION.contains("rootfs") && BASH_COMPLETION.contains("--rootfs"));
    }

    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help text");
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no help text", sub.get_name());
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "repeatr");
    }

    #[test]
    fn errors_are_one_line_with_their_tip() {
        let typo = parse_err(&["repeatr", "gc", "--jsn"]);
        assert!(typo.contains("--jsn") && typo.contains("--json"), "{typo}");
        let args: Vec<String> = ["repeatr", "-v", "gc", "--jsn"].map(String::from).to_vec();
        assert_eq!(command_named(&args), "repeatr gc");
        let args: Vec<String> = ["repeatr", "run", "--", "gc"].map(String::from).to_vec();
        assert_eq!(command_named(&args), "repeatr run");
        let missing = parse_err(&["repeatr", "unpack", "tar:x"]);
        assert!(missing.contains("<DIR>") && !missing.contains("provided:;"), "{missing}");
        let opt = parse_err(&["repeatr", "run", "f.json", "--security-opt", "seccomp=unconfined"]);
        assert!(opt.contains("--security-opt") && opt.contains("cannot be used with"), "{opt}");
        let net = parse_err(&["repeatr", "run", "--net", "brige", "--rootfs", "/", "--", "true"]);
        assert!(net.contains("bridge") && !net.contains("; ["), "{net}");
    }

    #[test]
    fn run_without_rootfs_says_what_is_needed() {
        let cli = Cli::try_parse_from(["repeatr", "run", "--", "true"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let e = work(args, None).err().expect("refused").to_string();
        assert!(e.contains("--rootfs PATH (or a FORMULA)"), "{e}");
    }

    #[test]
    fn an_empty_command_is_a_usage_error() {
        let cli = Cli::try_parse_from(["repeatr", "run", "--rootfs", "/nonexistent", "--", ""]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let e = work(args, None).err().expect("refused").to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
