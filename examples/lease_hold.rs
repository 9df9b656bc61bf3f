//! Holds live leases without containers, for `bench/network.sh live`: each
//! one a real lease (row, sidecar, slot lock held by this process), so a
//! runner's start-up meets them as it would meet running jobs.
//!
//!   lease_hold --state-dir DIR [--time BRIDGE=SUBNET:CYCLES] BRIDGE=SUBNET:COUNT...
//!
//! With `--time`, once all are taken, times CYCLES acquire+release pairs of
//! one more job on BRIDGE (the state's share of a start, apart from the
//! noise of a loaded host) and prints `acquire p50 <us> p95 <us> release
//! p50 <us>`. Then prints `held N`, holds the leases until stdin closes,
//! and releases them. No network device is touched.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ipnet::Ipv4Net;
use repeatr::state::{LeaseRequest, StateDir};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    state_dir: PathBuf,
    /// BRIDGE=SUBNET:CYCLES: time this many acquire+release pairs.
    #[arg(long)]
    time: Option<String>,
    /// BRIDGE=SUBNET:COUNT: COUNT leases on BRIDGE from SUBNET (gateway:
    /// its first host).
    specs: Vec<String>,
}

fn parse(spec: &str) -> Result<(String, Ipv4Net, usize), String> {
    let bad = || format!("{spec:?}: want BRIDGE=SUBNET:COUNT");
    let (bridge, rest) = spec.split_once('=').ok_or_else(bad)?;
    let (subnet, count) = rest.split_once(':').ok_or_else(bad)?;
    Ok((bridge.to_string(), subnet.parse().map_err(|_| bad())?, count.parse().map_err(|_| bad())?))
}

/// One fd per held slot lock.
fn raise_fd_limit(want: u64) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write only the struct passed.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_cur.max(want.min(lim.rlim_max));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if !ok || lim.rlim_cur < want {
        return Err(format!("RLIMIT_NOFILE allows {} open files, {want} needed", lim.rlim_cur));
    }
    Ok(())
}

fn request(bridge: &str, subnet: Ipv4Net, job: String) -> Result<LeaseRequest, String> {
    let gateway = subnet.hosts().next().ok_or("subnet has no hosts")?;
    Ok(LeaseRequest {
        job,
        bridge: bridge.to_string(),
        subnet,
        gateway,
        ip: None,
        command: "lease_hold".into(),
        // Anonymous, as the jobs of a burst are: no peer of a later job.
        named: false,
        pid: std::process::id(),
        slots_per_bridge: repeatr::state::ports_per_bridge(),
    })
}

fn micros(mut d: Vec<Duration>, q: f64) -> u128 {
    d.sort();
    d.get(((d.len() as f64 * q) as usize).min(d.len().saturating_sub(1))).map_or(0, Duration::as_micros)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let specs = args.specs.iter().map(|s| parse(s)).collect::<Result<Vec<_>, _>>()?;
    let total: usize = specs.iter().map(|s| s.2).sum();
    raise_fd_limit(total as u64 + 64)?;
    let state = StateDir::open(&args.state_dir)?;
    let pid = std::process::id();
    let mut held = Vec::with_capacity(total);
    for (bridge, subnet, count) in &specs {
        for i in 0..*count {
            held.push(state.acquire(&request(bridge, *subnet, format!("hold-{pid}-{bridge}-{i}"))?)?);
        }
    }
    if let Some(spec) = &args.time {
        let (bridge, subnet, cycles) = parse(spec)?;
        let (mut acquire, mut release) = (Vec::new(), Vec::new());
        for i in 0..cycles {
            let req = request(&bridge, subnet, format!("timed-{pid}-{i}"))?;
            let t = Instant::now();
            let lease = state.acquire(&req)?;
            acquire.push(t.elapsed());
            let t = Instant::now();
            state.release(lease)?;
            release.push(t.elapsed());
        }
        let (a50, a95, r50) = (micros(acquire.clone(), 0.5), micros(acquire, 0.95), micros(release, 0.5));
        println!("acquire p50 {a50} p95 {a95} release p50 {r50}");
    }
    println!("held {}", held.len());
    std::io::stdout().flush()?;
    std::io::stdin().read_to_end(&mut Vec::new())?;
    for lease in held {
        state.release(lease)?;
    }
    Ok(())
}
