//! Lease acquire + release cycles through the real state store, for
//! `bench/network.sh` (one process of many started at once):
//!
//!   lease_bench --state-dir DIR --subnet CIDR --bridge NAME --iterations N
//!
//! No network device is touched: this measures the coordination alone
//! (flock + one SQLite transaction + slot lock + sidecar, each way).

use std::path::PathBuf;

use clap::Parser;
use ipnet::Ipv4Net;
use repeatr::state::{LeaseRequest, StateDir};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long)]
    subnet: Ipv4Net,
    #[arg(long)]
    bridge: String,
    #[arg(long, default_value_t = 100)]
    iterations: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let state = StateDir::open(&args.state_dir)?;
    let gateway = args.subnet.hosts().next().ok_or("subnet has no hosts")?;
    let pid = std::process::id();
    for i in 0..args.iterations {
        let req = LeaseRequest {
            job: format!("bench-{pid}-{i}"),
            bridge: args.bridge.clone(),
            subnet: args.subnet,
            gateway,
            ip: None,
            command: "lease_bench".into(),
            named: false,
            pid,
            slots_per_bridge: repeatr::state::ports_per_bridge(),
        };
        let lease = state.acquire(&req)?;
        state.release(lease)?;
    }
    Ok(())
}
