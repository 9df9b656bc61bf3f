//! The command line's definition, and nothing else: build.rs compiles this
//! file on its own to generate the man pages and shell completions, so it
//! needs only clap and std.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `/run/repeatr`: leases die with a reboot. `crate::state::DEFAULT_STATE_DIR`
/// is the same path (a unit test checks), written again here because this
/// file must build without the crate.
pub const DEFAULT_STATE_DIR: &str = "/run/repeatr";

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
    #[arg(long, value_name = "DIR", env = "REPEATR_STATE_DIR", global = true, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Configuration file (default /etc/repeatr/config.toml; every key optional).
    #[arg(long, value_name = "FILE", env = "REPEATR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run CMD in a new container (or a FORMULA); exits with the job's status.
    Run(RunArgs),
    /// Show who holds which address and slot; stale leases are marked.
    Leases {
        /// An array of JSON objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the jobs running on this host, networked or not.
    Ps {
        /// An array of JSON objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a job: SIGTERM to its init, SIGKILL after --timeout; returns once it is gone.
    Stop {
        /// The job's id (its --name; see repeatr ps).
        #[arg(value_name = "NAME")]
        name: String,
        /// How long the job has to end after SIGTERM: 500ms, 30s, 5m, 2h.
        #[arg(long, value_name = "DURATION", default_value = "10s")]
        timeout: String,
    },
    /// Send a signal to a job's init (default KILL), without waiting.
    Kill {
        /// The job's id (its --name; see repeatr ps).
        #[arg(value_name = "NAME")]
        name: String,
        /// The signal: a name (TERM, SIGTERM) or a number (15).
        #[arg(long, short = 's', value_name = "SIG", default_value = "KILL")]
        signal: String,
    },
    /// After a crash or reboot: reclaim stale leases, delete leftover veths and outputs, evict the ware cache over budget, report.
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
        /// Also delete the bridges no job uses, with their NAT (nftables table, IPv4 forwarding repeatr turned on).
        #[arg(long)]
        all: bool,
        /// Only evict the ware cache's least recently used entries down to [cache] max_size (never one in use).
        #[arg(long, conflicts_with_all = ["rebuild", "all"])]
        cache: bool,
    },
    /// Store a directory or tar in the warehouse as a ware; prints its id (tar:HASH).
    Pack(PackArgs),
    /// Verify a ware and unpack it into an existing empty directory.
    Unpack(UnpackArgs),
    /// Fetch a ware from the warehouses into the download area (verified); prints its local path.
    Fetch(FetchArgs),
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
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// A directory, a .tar/.tar.gz file, or - for a tar on stdin.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Where the ware goes: a directory (wares live in DIR/tar/HASH.tar), file:///DIR or
    /// s3://BUCKET/PREFIX (default: the config's warehouse.save, else its first warehouse.fetch).
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR|URL")]
    pub warehouse: Option<PathBuf>,
    /// Change a filter: uid=N|keep, gid=N|keep, mtime=2010-01-01T00:00:00Z|@SECS|keep,
    /// setid|sticky|dev=keep|ignore|reject. Repeatable.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// The ware id, tar:HASH.
    #[arg(value_name = "WARE")]
    pub ware: String,
    /// An existing, empty directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A warehouse to look in: a directory, file:///DIR, s3://BUCKET/PREFIX, http(s)://HOST/PATH.
    /// Repeatable: the first that has the ware serves it.
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR|URL")]
    pub warehouse: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The ware id, tar:HASH.
    #[arg(value_name = "WARE")]
    pub ware: String,
    /// A warehouse to look in: a directory, file:///DIR, s3://BUCKET/PREFIX, http(s)://HOST/PATH.
    /// Repeatable: the first that has the ware serves it.
    #[arg(long, env = "REPEATR_WAREHOUSE", value_name = "DIR|URL")]
    pub warehouse: Vec<PathBuf>,
    /// Also save the ware there: a directory, file:///DIR or s3://BUCKET/PREFIX.
    #[arg(long, value_name = "DIR|URL")]
    pub save_to: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A formula (JSON) to run instead of --rootfs and CMD: its record goes to stdout. The
    /// formula says all of its job (network, mounts, env, user, limits, timeout), so the flags
    /// that set up a command's job are refused beside it rather than left unheeded.
    #[arg(value_name = "FORMULA", conflicts_with_all = [
        "rootfs", "command", "net", "ip", "mounts", "env", "workdir", "hostname", "user",
        "cap_add", "cap_drop", "security_opt", "no_init", "tty", "interactive", "timeout",
        "memory", "cpus", "pids_limit", "rootfs_size", "shm_size", "publish",
    ])]
    pub formula: Option<PathBuf>,
    /// With FORMULA: a warehouse the input wares are looked for in (or REPEATR_WAREHOUSE): a
    /// directory, file:///DIR, s3://BUCKET/PREFIX, http(s)://HOST/PATH. Repeatable: the first
    /// that has a ware serves it; outputs go to the first unless --save-to says.
    #[arg(long, value_name = "DIR|URL", env = "REPEATR_WAREHOUSE", requires = "formula")]
    pub warehouse: Vec<PathBuf>,
    /// With FORMULA: where the outputs are saved (a directory, file:///DIR or s3://BUCKET/PREFIX).
    #[arg(long, value_name = "DIR|URL", requires = "formula")]
    pub save_to: Option<PathBuf>,
    /// With FORMULA: compare the results with this earlier run record; exit 1 if the job
    /// succeeded and an output differs.
    #[arg(long, value_name = "RECORD", requires = "formula")]
    pub check: Option<PathBuf>,
    /// The root filesystem: a directory, a .tar/.tar.gz file, or - for a tar on stdin.
    #[arg(long, value_name = "PATH")]
    pub rootfs: Option<PathBuf>,
    /// Networking: bridge (an address of its own on the configured bridge) or none (only lo).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Net::Bridge)]
    pub net: Net,
    /// Ask for this IPv4 address on the bridge (it must be free and a host of the subnet).
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<Ipv4Addr>,
    /// Forward the host's HOSTPORT (on every address of the host) to the job's JOBPORT, tcp by
    /// default. Repeatable. Needs --net bridge and network.egress = "nat".
    #[arg(long = "publish", short = 'p', value_name = "HOSTPORT:JOBPORT[/tcp|/udp]")]
    pub publish: Vec<String>,
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
    /// Give the job a capability beyond the default set (podman's), e.g. NET_RAW; ALL for
    /// every one. Repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Take a capability out of the default set, e.g. CHOWN; ALL for every one. Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// As docker's: seccomp=unconfined (no syscall filter) or seccomp=PROFILE.json (a profile in
    /// docker's format instead of docker's default one, which every job gets otherwise).
    #[arg(long = "security-opt", value_name = "seccomp=unconfined|PROFILE")]
    pub security_opt: Vec<String>,
    /// Run CMD as pid 1 itself, without repeatr's init (for an image that brings its own):
    /// the kernel then drops every signal CMD has no handler for, and orphans are CMD's to reap.
    #[arg(long)]
    pub no_init: bool,
    /// Give the job a pseudo-terminal (stdin must be one): its stdin, stdout, stderr and
    /// controlling terminal. With -i, keys go to the job (Ctrl-C, Ctrl-Z act inside it).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep stdin attached: with -t, relay it to the job's terminal (without -t the job has
    /// the runner's stdin anyway).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Stop the job after this long (30s, 5m, 2h): SIGTERM, then SIGKILL after the stop
    /// timeout; the runner exits 124.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// How long a job may take to stop after SIGINT/SIGTERM/SIGHUP/SIGQUIT (or --timeout)
    /// before it is killed as a whole; a second Ctrl-C kills it at once.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub stop_timeout: String,
    /// The job id (default: 12 random hex digits); also the default hostname.
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,
    /// Memory limit, e.g. 512m or 2g (swap off for the job); default: the config's limits.memory, else none.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit in CPUs, fractional (0.5 is half of one); default: the config's limits.cpus, else none.
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Most processes and threads the job may have at once; max for none; default: the config's limits.pids-limit, else 4096.
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<String>,
    /// Size of the job's writable root (a tmpfs), e.g. 2g; default: the config's limits.rootfs-size,
    /// else an eighth of the host's RAM, at most 8g.
    #[arg(long = "rootfs-size", value_name = "SIZE")]
    pub rootfs_size: Option<String>,
    /// Size of /dev/shm; default: the config's limits.shm-size, else 64m.
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Net {
    /// An address of its own on the configured bridge.
    Bridge,
    /// A new network namespace with only lo.
    None,
}
