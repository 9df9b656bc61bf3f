//! Command line: argument parsing, logging set-up, turning flags into the
//! job's request, and the one place where errors become a message and an
//! exit code.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::admin::{self, GcOptions};
use crate::container::{self, NetMode, Spec, SpecError, spec};
use crate::error::{EXIT_RUNNER_ERROR, Error};
use crate::formula::{Filters, WareId, Warehouse};
use crate::job::{self, FormulaJob, Host, JobId, Request, Work};

#[derive(Parser, Debug)]
#[command(name = "repeatr", version, about = "Run jobs in ephemeral containers, no daemon needed")]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Where leases and locks live (default /run/repeatr: they die with a reboot).
    #[arg(long, value_name = "DIR", env = "REPEATR_STATE_DIR", global = true, default_value = crate::state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Configuration file (default /etc/repeatr/config.toml; every key optional).
    #[arg(long, value_name = "FILE", env = "REPEATR_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run CMD in a new container (or a FORMULA); exits with the job's status.
    Run(RunArgs),
    /// Show who holds which address and slot; stale leases are marked.
    Leases {
        /// An array of JSON objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// After a crash or reboot: reclaim stale leases, delete leftover veths and outputs, report.
    Gc {
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print what was done as one JSON object instead of lines of text.
        #[arg(long)]
        json: bool,
        /// Rebuild a damaged or lost state.db from the live jobs' lease records.
        #[arg(long)]
        rebuild: bool,
    },
    /// Store a directory or tar in the warehouse as a ware; prints its id (tar:HASH).
    Pack(PackArgs),
    /// Verify a ware and unpack it into an existing empty directory.
    Unpack(UnpackArgs),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into DIR.
    Man {
        /// Write repeatr.1, repeatr-run.1, ... into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
struct PackArgs {
    /// A directory, a .tar/.tar.gz file, or - for a tar on stdin.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The warehouse directory (wares live in DIR/tar/HASH.tar).
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR")]
    warehouse: Option<PathBuf>,
    /// Change a filter: uid=N|keep, gid=N|keep, mtime=2010-01-01T00:00:00Z|@SECS|keep,
    /// setid|sticky|dev=keep|ignore|reject. Repeatable.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
}

#[derive(Args, Debug)]
struct UnpackArgs {
    /// The ware id, tar:HASH.
    #[arg(value_name = "WARE")]
    ware: String,
    /// An existing, empty directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The warehouse directory.
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR")]
    warehouse: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A formula (JSON) to run instead of --rootfs and CMD: its record goes to stdout.
    #[arg(value_name = "FORMULA", conflicts_with_all = ["rootfs", "command"])]
    formula: Option<PathBuf>,
    /// With FORMULA: where the input wares are and the outputs go (or REPEATR_WAREHOUSE).
    #[arg(long, value_name = "DIR", env = "REPEATR_WAREHOUSE", requires = "formula")]
    warehouse: Option<PathBuf>,
    /// With FORMULA: compare the results with this earlier run record; exit 1 if the job
    /// succeeded and an output differs.
    #[arg(long, value_name = "RECORD", requires = "formula")]
    check: Option<PathBuf>,
    /// The root filesystem: a directory, a .tar/.tar.gz file, or - for a tar on stdin.
    #[arg(long, value_name = "PATH")]
    rootfs: Option<PathBuf>,
    /// Networking: bridge (an address of its own on the configured bridge) or none (only lo).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Net::Bridge)]
    net: Net,
    /// Ask for this IPv4 address on the bridge (it must be free and a host of the subnet).
    #[arg(long, value_name = "ADDR")]
    ip: Option<Ipv4Addr>,
    /// Bind a host path into the job: SRC:DST[:ro|:rw] (rw by default). Repeatable.
    #[arg(long = "mount", value_name = "SRC:DST[:ro|:rw]")]
    mounts: Vec<String>,
    /// Set an environment variable in the job. Repeatable. The host's environment never leaks in.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the job (created if missing).
    #[arg(long, short = 'w', value_name = "DIR", default_value = "/")]
    workdir: String,
    /// Hostname of the job (default: the job id).
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// User and group to run as, numeric.
    #[arg(long, short = 'u', value_name = "UID[:GID]", default_value = "0:0")]
    user: String,
    /// The job id (default: 12 random hex digits); also the default hostname.
    #[arg(long, value_name = "ID")]
    name: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Net {
    /// An address of its own on the configured bridge.
    Bridge,
    /// A new network namespace with only lo.
    None,
}

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
            let work = work(args)?;
            job::run(Request { host: Host { state_dir, config }, work })
        }
        Command::Leases { json } => admin::leases(&state_dir, json),
        Command::Gc { dry_run, json, rebuild } => {
            admin::gc(&state_dir, config.as_deref(), GcOptions { dry_run, json, rebuild })
        }
        Command::Pack(args) => pack(args),
        Command::Unpack(args) => unpack(args),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
    }
}

/// `run`'s flags as the job's work: a formula, or a command with a spec
/// whose every host object (rootfs, mount sources) is open already.
fn work(args: RunArgs) -> Result<Work, Error> {
    if let Some(path) = &args.formula {
        job::require_root()?;
        let warehouse = Warehouse::from_option(args.warehouse)?;
        let id = JobId::new(args.name.as_deref())?;
        return Ok(Work::Formula(FormulaJob::load(path, warehouse, args.check, id)?));
    }
    let Some(rootfs) = &args.rootfs else {
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
    let spec = Spec {
        env: spec::build_env(&args.env, &hostname),
        id: id.to_string(),
        rootfs: spec::open_rootfs(rootfs)?,
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
        caps: container::Caps::DockerDefault,
        make_dirs: Vec::new(),
        stdout_to_stderr: false,
    };
    Ok(Work::Command { spec, ip: args.ip })
}

fn pack(args: PackArgs) -> Result<i32, Error> {
    let filters = Filters::from_args(&args.filters)?;
    let warehouse = Warehouse::from_option(args.warehouse)?;
    let id = warehouse.pack(&args.path, &filters)?;
    println!("{id}");
    Ok(0)
}

fn unpack(args: UnpackArgs) -> Result<i32, Error> {
    let id: WareId = args.ware.parse()?;
    let warehouse = Warehouse::from_option(args.warehouse)?;
    let stats = warehouse.unpack(&id, &args.dir)?;
    log::info!("unpacked {id}: {} entries, {} bytes", stats.entries, stats.bytes);
    Ok(0)
}

fn completions(shell: Shell) -> Result<i32, Error> {
    use clap_complete::shells;
    let mut cmd = Cli::command();
    let out = &mut std::io::stdout();
    match shell {
        Shell::Bash => clap_complete::generate(shells::Bash, &mut cmd, "repeatr", out),
        Shell::Zsh => clap_complete::generate(shells::Zsh, &mut cmd, "repeatr", out),
        Shell::Fish => clap_complete::generate(shells::Fish, &mut cmd, "repeatr", out),
    }
    Ok(0)
}

/// The man page of `repeatr` on stdout, or with `dir` one page per
/// command (repeatr.1, repeatr-run.1, ...) written there.
fn man(dir: Option<&Path>) -> Result<i32, Error> {
    let cmd = Cli::command();
    let write_err = |err| Error::Io { what: "writing the man page", err };
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()).map_err(write_err)?,
        Some(dir) => {
            clap_mangen::generate_to(cmd, dir).map_err(write_err)?;
        }
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
        assert!(
            typo.contains("--jsn") && typo.contains("--json") && typo.ends_with("see 'repeatr gc --help'"),
            "{typo}"
        );
        let missing = parse_err(&["repeatr", "unpack", "tar:x"]);
        assert!(missing.contains("<DIR>") && !missing.contains("provided:;"), "{missing}");
        let net = parse_err(&["repeatr", "run", "--net", "brige", "--rootfs", "/", "--", "true"]);
        assert!(net.contains("bridge") && !net.contains("; ["), "{net}");
    }

    #[test]
    fn run_without_rootfs_says_what_is_needed() {
        let cli = Cli::try_parse_from(["repeatr", "run", "--", "true"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let e = work(args).err().expect("refused").to_string();
        assert!(e.contains("--rootfs PATH (or a FORMULA)"), "{e}");
    }

    #[test]
    fn an_empty_command_is_a_usage_error() {
        let cli = Cli::try_parse_from(["repeatr", "run", "--rootfs", "/nonexistent", "--", ""]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let e = work(args).err().expect("refused").to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
