//! Command line: argument parsing, logging set-up, and the one place where
//! errors become a message and an exit code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::container::NetMode;
use crate::error::{EXIT_RUNNER_ERROR, Error};
use crate::formula::{Filters, WareId, Warehouse};
use crate::{admin, job};

fn parse_net(s: &str) -> Result<NetMode, String> {
    match s {
        "bridge" => Ok(NetMode::Bridge),
        "none" => Ok(NetMode::None),
        _ => Err("expected bridge or none".into()),
    }
}

#[derive(Parser, Debug)]
#[command(name = "repeatr", version, about = "Run jobs in ephemeral containers, no daemon needed")]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Where leases and locks live (default /run/repeatr: they die with a reboot).
    #[arg(long, env = "REPEATR_STATE_DIR", global = true, default_value = crate::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Configuration file (default /etc/repeatr/config.toml; every key optional).
    #[arg(long, env = "REPEATR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run CMD in a new container; exits with the job's status.
    Run(RunArgs),
    /// Show who holds which address and slot; stale leases are marked.
    Leases {
        /// An array of JSON objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// After a crash or reboot: reclaim stale leases, delete leftover veths, report.
    Gc {
        /// Say what would be done, do nothing.
        #[arg(long)]
        dry_run: bool,
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
}

#[derive(Args, Debug, Clone)]
pub struct PackArgs {
    /// A directory, a .tar/.tar.gz file, or - for a tar on stdin.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The warehouse directory (wares live in DIR/tar/HASH.tar).
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR")]
    pub warehouse: Option<PathBuf>,
    /// Change a filter: uid=N|keep, gid=N|keep, mtime=2010-01-01T00:00:00Z|@SECS|keep,
    /// setid|sticky|dev=keep|ignore|reject. Repeatable.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct UnpackArgs {
    /// The ware id, tar:HASH.
    #[arg(value_name = "WARE")]
    pub ware: String,
    /// An existing, empty directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The warehouse directory.
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR")]
    pub warehouse: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// A formula (JSON) to run instead of --rootfs and CMD: its record goes to stdout.
    #[arg(value_name = "FORMULA", conflicts_with_all = ["rootfs", "command"])]
    pub formula: Option<PathBuf>,
    /// With FORMULA: where the input wares are and the outputs go (or REPEATR_WAREHOUSE).
    #[arg(long, value_name = "DIR", env = "REPEATR_WAREHOUSE", requires = "formula")]
    pub warehouse: Option<PathBuf>,
    /// With FORMULA: compare the results with this earlier run record; exit 1 if any differ.
    #[arg(long, value_name = "RECORD", requires = "formula")]
    pub check: Option<PathBuf>,
    /// The root filesystem: a directory, a .tar/.tar.gz file, or - for a tar on stdin.
    #[arg(long, value_name = "PATH", required_unless_present = "formula")]
    pub rootfs: Option<PathBuf>,
    /// Networking: bridge (an address of its own on the configured bridge) or none (only lo).
    #[arg(long, value_name = "MODE", default_value = "bridge", value_parser = parse_net)]
    pub net: NetMode,
    /// Ask for this IPv4 address on the bridge (it must be free and a host of the subnet).
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Bind a host path into the job: SRC:DST[:ro|:rw] (rw by default). Repeatable.
    #[arg(long = "mount", value_name = "SRC:DST[:ro|:rw]")]
    pub mounts: Vec<String>,
    /// Set an environment variable in the job. Repeatable. The host's environment never leaks in.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the job (created if missing).
    #[arg(long, short = 'w', value_name = "DIR", default_value = "/")]
    pub workdir: String,
    /// Hostname of the job (default: the job id).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// User and group to run as, numeric.
    #[arg(long, short = 'u', value_name = "UID[:GID]", default_value = "0:0")]
    pub user: String,
    /// The job id (default: a short generated id).
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
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
            // clap's message spans several lines; a runner error is one.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            eprintln!("repeatr: {first}; see 'repeatr --help'");
            return EXIT_RUNNER_ERROR;
        }
    };
    init_logging(cli.verbose, cli.quiet);
    // The job's child resolves paths under the state dir after it has
    // left the runner's working directory: hold them absolute from here on.
    let mut cli = cli;
    match std::path::absolute(&cli.state_dir) {
        Ok(p) => cli.state_dir = p,
        Err(e) => return report(&Error::StateDir { path: cli.state_dir.clone(), err: e }),
    }
    let result = match &cli.command {
        Command::Run(args) => job::run(&cli, args),
        Command::Leases { json } => admin::leases(&cli, *json),
        Command::Gc { dry_run, json, rebuild } => admin::gc(&cli, *dry_run, *json, *rebuild),
        Command::Pack(args) => pack(args),
        Command::Unpack(args) => unpack(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn pack(args: &PackArgs) -> Result<i32, Error> {
    let filters = Filters::from_args(&args.filters)?;
    let warehouse = Warehouse::from_option(args.warehouse.clone())?;
    let id = warehouse.pack(&args.path, &filters)?;
    println!("{id}");
    Ok(0)
}

fn unpack(args: &UnpackArgs) -> Result<i32, Error> {
    let id: WareId = args.ware.parse()?;
    let warehouse = Warehouse::from_option(args.warehouse.clone())?;
    let stats = warehouse.unpack(&id, &args.dir)?;
    log::info!("unpacked {id}: {} entries, {} bytes", stats.entries, stats.bytes);
    Ok(0)
}

fn report(e: &Error) -> i32 {
    eprintln!("repeatr: {e}");
    e.exit_code()
}
