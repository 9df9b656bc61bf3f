//! The lease store against real SQLite files and real flocks, with real
//! processes where concurrency or death matters. Each test has its own temp
//! state dir; addresses come from 198.18.0.0/15 (RFC 2544 benchmarking).
//!
//! Child processes re-run this test binary with `child_runner` as the only
//! test and REPEATR_TEST_CHILD_DIR set: the child waits for a go file (so
//! that all children start together), opens the state dir, acquires a lease,
//! prints `LEASE <ip> <slot>`, and holds it until its stdin closes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use repeatr::state::{LeaseRequest, LeaseState, StateDir, StateError};
use rusqlite::{Connection, params};

mod common;

const BRIDGE: &str = "rtest0";

fn subnet(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A request on `net` with the first host as gateway.
fn req(job: &str, net: &str) -> LeaseRequest {
    let subnet = subnet(net);
    LeaseRequest {
        job: job.to_string(),
        bridge: BRIDGE.to_string(),
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        ip: None,
        command: format!("sleep {job}"),
        named: true,
        pid: std::process::id(),
        slots_per_bridge: repeatr::state::PORTS_PER_BRIDGE,
    }
}

fn fresh() -> (tempfile::TempDir, StateDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state")).unwrap();
    (tmp, dir)
}

// ---- child processes -------------------------------------------------------

#[test]
fn child_runner() {
    let Ok(dir) = std::env::var("REPEATR_TEST_CHILD_DIR") else {
        return;
    };
    let job = std::env::var("REPEATR_TEST_CHILD_JOB").unwrap();
    let net = std::env::var("REPEATR_TEST_CHILD_NET").unwrap();
    let go = PathBuf::from(std::env::var("REPEATR_TEST_CHILD_GO").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "go file never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    let state = StateDir::open(Path::new(&dir)).unwrap();
    let lease = state.acquire(&req(&job, &net)).unwrap();
    let reclaimed: Vec<String> = lease.reclaimed.iter().map(|(_, s)| s.to_string()).collect();
    println!("LEASE {} {} r{}", lease.record.ip, lease.record.slot, reclaimed.join(","));
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    state.release(lease).unwrap();
}

struct Runner {
    child: Child,
    out: BufReader<ChildStdout>,
}

fn spawn_runner(dir: &Path, job: &str, net: &str, go: &Path) -> Runner {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_runner", "--exact", "--nocapture", "--test-threads=1"])
        .env("REPEATR_TEST_CHILD_DIR", dir)
        .env("REPEATR_TEST_CHILD_JOB", job)
        .env("REPEATR_TEST_CHILD_NET", net)
        .env("REPEATR_TEST_CHILD_GO", go)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    Runner { child, out }
}

impl Runner {
    /// Reads up to the `LEASE` line. The harness prints its own output too,
    /// and `test child_runner ... ` has no newline before the test runs.
    fn lease(&mut self) -> (Ipv4Addr, u16) {
        let (ip, slot, _) = self.lease_reclaiming();
        (ip, slot)
    }

    /// The lease and the slots its acquisition reclaimed.
    fn lease_reclaiming(&mut self) -> (Ipv4Addr, u16, Vec<u16>) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "child exited without a lease");
            if let Some((_, rest)) = line.split_once("LEASE ") {
                let mut words = rest.split_whitespace();
                let ip = words.next().unwrap().parse().unwrap();
                let slot = words.next().unwrap().parse().unwrap();
                let reclaimed = words.next().unwrap().trim_start_matches('r');
                let reclaimed = reclaimed.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
                return (ip, slot, reclaimed);
            }
        }
    }

    /// Closes stdin: the child releases and exits.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn twenty_first_runs_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let go = tmp.path().join("go");
    let mut runners: Vec<Runner> =
        (0..20).map(|i| spawn_runner(&dir, &format!("job{i}"), "198.18.0.0/24", &go)).collect();
    std::fs::write(&go, "").unwrap();
    let leases: Vec<(Ipv4Addr, u16)> = runners.iter_mut().map(Runner::lease).collect();

    let ips: HashSet<_> = leases.iter().map(|l| l.0).collect();
    let slots: HashSet<_> = leases.iter().map(|l| l.1).collect();
    assert_eq!(ips.len(), 20, "{leases:?}");
    assert_eq!(slots.len(), 20, "{leases:?}");
    assert_eq!(slots, (0..20).collect(), "lowest slots first");
    assert!(!ips.contains(&ip("198.18.0.1")), "gateway handed out");

    let conn = Connection::open(dir.join("state.db")).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    let migrations = std::fs::read_dir("migrations")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count();
    assert_eq!(version, migrations as i64, "every migration applied once");
    drop(conn);

    let state = StateDir::open(&dir).unwrap();
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|l| l.state == LeaseState::Running));

    runners.into_iter().for_each(Runner::finish);
    assert!(state.list().unwrap().is_empty());
    assert_eq!(sidecars(&dir), 0, "every sidecar removed on release");
}

#[test]
fn killed_runner_is_reclaimed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let go = tmp.path().join("go");
    std::fs::write(&go, "").unwrap();
    let mut runner = spawn_runner(&dir, "victim", "198.18.1.0/24", &go);
    let (victim_ip, victim_slot) = runner.lease();

    let state = StateDir::open(&dir).unwrap();
    assert_eq!(state.list().unwrap()[0].state, LeaseState::Running);
    runner.child.kill().unwrap(); // SIGKILL: no release, no cleanup
    runner.child.wait().unwrap();

    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, LeaseState::Stale);

    // Round-robin goes on past the dead lease: a start reads only the rows
    // it walks past, and this one is not on its way yet.
    let lease = state.acquire(&req("next", "198.18.1.0/24")).unwrap();
    assert!(lease.reclaimed.is_empty(), "{:?}", lease.reclaimed);
    assert_ne!(lease.record.slot, victim_slot, "round-robin does not hand the slot straight back");
    assert_ne!(lease.record.ip, victim_ip, "round-robin does not hand the address straight back");
    assert_eq!(state.list().unwrap().len(), 2);
    // gc reclaims it whatever the position.
    let report = state.gc(false).unwrap();
    assert_eq!(report.reclaimed.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(), ["victim"]);
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].lease.job, "next");
}

/// A dead lease is reclaimed when the walk reaches it: here at once, as
/// the /30 has a single host.
#[test]
fn killed_runner_is_reclaimed_when_the_walk_reaches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let go = tmp.path().join("go");
    std::fs::write(&go, "").unwrap();
    let mut runner = spawn_runner(&dir, "victim", "198.18.1.4/30", &go);
    let (victim_ip, victim_slot) = runner.lease();
    runner.child.kill().unwrap();
    runner.child.wait().unwrap();

    let state = StateDir::open(&dir).unwrap();
    let lease = state.acquire(&req("next", "198.18.1.4/30")).unwrap();
    assert_eq!(lease.record.ip, victim_ip, "the subnet's only host");
    assert_eq!(lease.reclaimed, vec![(BRIDGE.to_string(), victim_slot)]);
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].lease.job, "next");
}

/// Start-up cost does not grow with the leases there are: an allocation
/// looks only at the rows on its round-robin way (and probes only their
/// slot locks), never at every lease, and skips a live job's address.
#[test]
fn an_allocation_reads_only_the_rows_on_its_way() {
    let (_tmp, state) = fresh();
    let net = "198.18.9.0/24";
    let live: Vec<_> = (0..3).map(|i| state.acquire(&req(&format!("live{i}"), net)).unwrap()).collect();
    assert_eq!(live[2].record.ip, ip("198.18.9.4"));
    let pinned = state.acquire(&LeaseRequest { ip: Some(ip("198.18.9.6")), ..req("pinned", net) }).unwrap();
    // 100 dead runners' leases ahead, in slots and addresses the walk has
    // not reached.
    for k in 0..100u16 {
        insert_row(
            state.root(),
            &format!("dead{k}"),
            &format!("198.18.9.{}", 100 + k),
            100 + k,
            1,
            1,
            &current_boot_id(),
        );
    }
    let a = state.acquire(&req("a", net)).unwrap();
    assert_eq!(a.record.ip, ip("198.18.9.5"));
    assert!(a.reclaimed.is_empty(), "reclaimed {:?}: every row was judged", a.reclaimed);
    let b = state.acquire(&req("b", net)).unwrap();
    assert_eq!(b.record.ip, ip("198.18.9.7"), "the live job's .6 is skipped");
    assert_eq!(state.list().unwrap().iter().filter(|l| l.state == LeaseState::Stale).count(), 100);

    // The walk reaches the first dead lease: it is reclaimed, its address
    // handed out; the others stay for later walks (or gc).
    let upto: Vec<_> = (8..100).map(|i| state.acquire(&req(&format!("fill{i}"), net)).unwrap()).collect();
    let c = state.acquire(&req("c", net)).unwrap();
    assert_eq!(c.record.ip, ip("198.18.9.100"));
    let stale = state.list().unwrap().iter().filter(|l| l.state == LeaseState::Stale).count();
    assert!((98..=99).contains(&stale), "{stale} stale left");
    let ips: HashSet<_> = live.iter().chain([&pinned, &a, &b, &c]).chain(&upto).map(|l| l.record.ip).collect();
    assert_eq!(ips.len(), 3 + 4 + upto.len(), "no address twice");
}

/// A live job's slot lock file deleted by hand: liveness falls back to its
/// pid and start time on every path, so gc, a dry run, `--ip` and the slot
/// walk all leave it alone, and a dry run makes no file.
#[test]
fn a_live_job_without_its_lock_file_keeps_its_slot_and_address() {
    let (_tmp, state) = fresh();
    let net = "198.18.19.0/24";
    let live = state.acquire(&req("live", net)).unwrap();
    let lock = state.root().join("slots").join(BRIDGE).join("0.lock");
    std::fs::remove_file(&lock).unwrap();

    assert!(!state.slot_is_free(BRIDGE, 0).unwrap());
    assert!(!lock.exists(), "judging the slot made its lock file again");
    assert!(state.try_lock_slot(BRIDGE, 0).unwrap().is_none(), "gc would delete the live job's veth");
    assert!(state.gc(true).unwrap().reclaimed.is_empty());
    assert!(state.gc(false).unwrap().reclaimed.is_empty());
    let e = state.acquire(&LeaseRequest { ip: Some(live.record.ip), ..req("other", net) }).unwrap_err();
    assert!(matches!(e, StateError::IpTaken { .. }), "{e}");
    assert_eq!(state.list().unwrap()[0].state, LeaseState::Running);
    // A slot whose sidecar names a process that is gone is free.
    drop(live);
    let sidecar = state.root().join("slots").join(BRIDGE).join("0.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    record["start_time"] = serde_json::json!(record["start_time"].as_u64().unwrap() + 1);
    std::fs::write(&sidecar, serde_json::to_vec(&record).unwrap()).unwrap();
    assert!(state.slot_is_free(BRIDGE, 0).unwrap());
    assert!(state.try_lock_slot(BRIDGE, 0).unwrap().is_some());
}

#[test]
fn concurrent_runners_reclaim_each_stale_lease_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    StateDir::open(&dir).unwrap();
    for slot in 0..5u16 {
        let addr = format!("198.18.9.{}", 100 + slot);
        insert_row(&dir, &format!("dead{slot}"), &addr, slot, 1, 1, &current_boot_id());
    }
    let go = tmp.path().join("go");
    let mut runners: Vec<Runner> =
        (0..10).map(|i| spawn_runner(&dir, &format!("job{i}"), "198.18.9.0/24", &go)).collect();
    std::fs::write(&go, "").unwrap();
    let leases: Vec<_> = runners.iter_mut().map(Runner::lease_reclaiming).collect();
    let mut reclaimed: Vec<u16> = leases.iter().flat_map(|l| l.2.iter().copied()).collect();
    reclaimed.sort();
    assert_eq!(reclaimed, [0, 1, 2, 3, 4], "each stale lease reclaimed exactly once: {leases:?}");
    let slots: HashSet<u16> = leases.iter().map(|l| l.1).collect();
    assert_eq!(slots, (0..10).collect());
    runners.into_iter().for_each(Runner::finish);
}

fn sidecars(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("slots").join(BRIDGE))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

// ---- allocation ------------------------------------------------------------

#[test]
fn slash_29_exhausts_after_five() {
    let (_tmp, state) = fresh();
    let held: Vec<_> = (0..5).map(|i| state.acquire(&req(&format!("j{i}"), "198.18.2.0/29")).unwrap()).collect();
    let got: Vec<_> = held.iter().map(|l| l.record.ip).collect();
    assert_eq!(got, (2..=6).map(|i| Ipv4Addr::new(198, 18, 2, i)).collect::<Vec<_>>());
    let e = state.acquire(&req("j5", "198.18.2.0/29")).unwrap_err();
    assert_eq!(e.to_string(), "no free address in 198.18.2.0/29: 5 leased");
    // A failed acquisition leaves nothing behind.
    assert_eq!(state.list().unwrap().len(), 5);
}

/// 1023 held locks are 1023 fds, beside those of the tests running in
/// parallel: more than a default soft limit of 1024. False if the hard
/// limit is too low.
fn raise_fd_limit(want: libc::rlim_t) -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write only the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur >= want
}

#[test]
fn bridge_out_of_slots() {
    if !raise_fd_limit(1023 + 256) {
        eprintln!("skipped: RLIMIT_NOFILE hard limit below 1279");
        return;
    }
    let (_tmp, state) = fresh();
    // Held slot locks without rows (what a db that lost them would show)
    // must be skipped like leased ones.
    // The hub's 1000 job slots held: the job goes on the first leaf.
    let held: Vec<_> = (0..1000).map(|s| state.try_lock_slot(BRIDGE, s).unwrap().unwrap()).collect();
    let lease = state.acquire(&req("late", "198.18.16.0/20")).unwrap();
    assert_eq!((lease.record.bridge.as_str(), lease.record.slot), ("rtest0a", 0));
    assert_eq!(lease.record.iface, "rtest0a-0");
    drop(held);
    state.release(lease).unwrap();
    // Every slot of every bridge of the domain held (2 per bridge here).
    let two = |job: &str| LeaseRequest { slots_per_bridge: 2, ..req(job, "198.18.16.0/20") };
    let mut leases = Vec::new();
    for i in 0..2 * 24 {
        leases.push(state.acquire(&two(&format!("j{i}"))).unwrap());
    }
    let bridges: std::collections::BTreeSet<_> = leases.iter().map(|l| l.record.bridge.clone()).collect();
    assert_eq!(bridges.len(), 24, "{bridges:?}");
    let e = state.acquire(&two("late")).unwrap_err().to_string();
    assert_eq!(
        e,
        "no free slot on bridge rtest0: all 2 slots of each of its 24 bridges (the hub and its leaves) are in use (a Linux bridge takes at most 1024 ports); wait for jobs to end or use another bridge"
    );
    // A slot freed on a leaf is found by the round-robin.
    let freed = leases.remove(30);
    let (bridge, slot) = (freed.record.bridge.clone(), freed.record.slot);
    state.release(freed).unwrap();
    let again = state.acquire(&two("late")).unwrap();
    assert_eq!((again.record.bridge.as_str(), again.record.slot), (bridge.as_str(), slot));
    // gc --all's step: refused while leaves hold leases, done once none do.
    assert!(!state.forget_leaves(BRIDGE).unwrap());
    drop(again);
    for l in leases {
        state.release(l).unwrap();
    }
    state.gc(false).unwrap();
    assert!(state.forget_leaves(BRIDGE).unwrap());
    assert_eq!(state.acquire(&two("after")).unwrap().record.bridge, BRIDGE, "back on the hub");
}

#[test]
fn round_robin_after_release() {
    let (_tmp, state) = fresh();
    let net = repeatr::config::Config::parse(
        "[network]\nbridge = \"rtest0\"\nsubnet = \"198.18.3.0/24\"\n",
        Path::new("test.toml"),
        "",
    )
    .unwrap()
    .network;
    let a = state.acquire(&LeaseRequest::new(&net, "a", "true")).unwrap();
    assert_eq!(a.record.ip, ip("198.18.3.2"));
    assert_eq!(a.record.iface, format!("{BRIDGE}-0"));
    state.release(a).unwrap();
    let b = state.acquire(&req("b", "198.18.3.0/24")).unwrap();
    assert_eq!(b.record.ip, ip("198.18.3.3"));
    // Slots go round-robin too: the veth of a job that just ended may still
    // be on its way out with its netns, under the slot's name.
    assert_eq!(b.record.slot, 1, "a freed slot is not handed straight back");
}

#[test]
fn saved_position_outside_a_new_subnet_is_ignored() {
    let (_tmp, state) = fresh();
    let a = state.acquire(&req("a", "198.18.4.0/24")).unwrap();
    state.release(a).unwrap();
    let b = state.acquire(&req("b", "198.18.5.0/24")).unwrap();
    assert_eq!(b.record.ip, ip("198.18.5.2"));
}

#[test]
fn duplicate_live_job_is_refused() {
    let (_tmp, state) = fresh();
    let _a = state.acquire(&req("same", "198.18.6.0/24")).unwrap();
    let e = state.acquire(&req("same", "198.18.6.0/24")).unwrap_err();
    assert!(matches!(e, StateError::DuplicateJob { .. }), "{e}");
    assert!(e.to_string().contains("job same is already running"), "{e}");
}

#[test]
fn static_ip_conflicts() {
    let (_tmp, state) = fresh();
    let net = "198.18.7.0/24";
    let with_ip = |job: &str, addr: &str| LeaseRequest { ip: Some(ip(addr)), ..req(job, net) };
    let held = state.acquire(&with_ip("holder", "198.18.7.50")).unwrap();
    assert_eq!(held.record.ip, ip("198.18.7.50"));

    let cases = [
        ("198.18.7.1", "is the gateway of 198.18.7.0/24"),
        ("198.18.7.0", "is the network address of 198.18.7.0/24"),
        ("198.18.7.255", "is the broadcast address of 198.18.7.0/24"),
        ("198.18.8.9", "is outside the subnet 198.18.7.0/24"),
        ("198.18.7.50", "is taken by job holder"),
    ];
    for (addr, want) in cases {
        let e = state.acquire(&with_ip("other", addr)).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("--ip"), "{addr}: {e}");
        assert!(!e.contains('\n'));
    }
    // A static address does not move the round-robin position.
    let auto = state.acquire(&req("auto", net)).unwrap();
    assert_eq!(auto.record.ip, ip("198.18.7.2"));
}

// ---- liveness --------------------------------------------------------------

/// Writes a lease row as a runner that has died would have left it: the
/// slot lock file exists, nobody holds it.
fn insert_row(dir: &Path, job: &str, addr: &str, slot: u16, pid: u32, start_time: i64, boot_id: &str) {
    insert_row_without_lock_file(dir, job, addr, slot, pid, start_time, boot_id);
    let state = StateDir::open(dir).unwrap();
    drop(state.try_lock_slot(BRIDGE, slot).unwrap().unwrap());
}

fn insert_row_without_lock_file(
    dir: &Path,
    job: &str,
    addr: &str,
    slot: u16,
    pid: u32,
    start_time: i64,
    boot_id: &str,
) {
    let conn = Connection::open(dir.join("state.db")).unwrap();
    conn.execute(
        "INSERT INTO leases (job, bridge, subnet, ip, gateway, slot, iface, pid, start_time, boot_id, command, started_at)
         VALUES (?1, ?2, '198.18.9.0/24', ?3, '198.18.9.1', ?4, ?5, ?6, ?7, ?8, 'true', '2026-01-01T00:00:00Z')",
        params![job, BRIDGE, addr, slot, format!("{BRIDGE}-{slot}"), pid, start_time, boot_id],
    )
    .unwrap();
}

fn own_start_time() -> i64 {
    let pid = libc::pid_t::try_from(std::process::id()).unwrap();
    i64::try_from(repeatr::sys::process_start_time(pid).unwrap()).unwrap()
}

#[test]
fn lease_whose_pid_is_alive_but_lock_free_is_stale() {
    let (_tmp, state) = fresh();
    let me = std::process::id();
    // The pid now belongs to a live process (ours): a pid check would keep
    // this lease forever. The free slot lock says its runner is gone.
    insert_row(state.root(), "reused", "198.18.9.2", 0, me, own_start_time() + 1, &current_boot_id());
    // Even pid + start time of a live process do not beat the lock.
    insert_row(state.root(), "same", "198.18.9.3", 1, me, own_start_time(), &current_boot_id());
    let listed = state.list().unwrap();
    assert!(listed.iter().all(|l| l.state == LeaseState::Stale), "{listed:?}");

    let lease = state.acquire(&req("fresh", "198.18.9.0/24")).unwrap();
    assert_eq!(lease.reclaimed, vec![(BRIDGE.to_string(), 0), (BRIDGE.to_string(), 1)]);
    assert_eq!(lease.record.slot, 0);
    assert_eq!(state.list().unwrap().len(), 1);
}

#[test]
fn lease_from_another_boot_is_stale_even_if_its_slot_is_locked() {
    let (_tmp, state) = fresh();
    insert_row(state.root(), "old", "198.18.9.2", 0, 1, 1, "00000000-0000-0000-0000-000000000000");
    // Someone holds slot 0 without a row (e.g. cleaning up its veth).
    let cleaner = state.try_lock_slot(BRIDGE, 0).unwrap().unwrap();
    assert_eq!(cleaner.iface(), format!("{BRIDGE}-0"));
    assert_eq!(state.list().unwrap()[0].state, LeaseState::Stale);

    let lease = state.acquire(&req("new", "198.18.9.0/24")).unwrap();
    assert_eq!(lease.reclaimed, vec![(BRIDGE.to_string(), 0)]);
    assert_eq!(lease.record.slot, 1, "a held slot lock is skipped even without a row");
    assert!(state.try_lock_slot(BRIDGE, 1).unwrap().is_none(), "the lease holds its slot");
    drop(cleaner);
    assert!(state.try_lock_slot(BRIDGE, 0).unwrap().is_some());
}

#[test]
fn without_a_lock_file_pid_and_start_time_decide() {
    let (_tmp, state) = fresh();
    let me = std::process::id();
    let boot = current_boot_id();
    insert_row_without_lock_file(state.root(), "alive", "198.18.9.2", 0, me, own_start_time(), &boot);
    insert_row_without_lock_file(state.root(), "reused", "198.18.9.3", 1, me, own_start_time() + 1, &boot);
    let states: Vec<_> = state.list().unwrap().into_iter().map(|l| (l.lease.job, l.state)).collect();
    assert_eq!(states, [("alive".to_string(), LeaseState::Running), ("reused".to_string(), LeaseState::Stale)]);
}

fn current_boot_id() -> String {
    repeatr::sys::boot_id().unwrap()
}

#[test]
fn gc_reclaims_and_dry_run_only_reports() {
    let (_tmp, state) = fresh();
    let live = state.acquire(&req("live", "198.18.9.0/24")).unwrap();
    insert_row(state.root(), "dead", "198.18.9.77", 5, 1, 1, &current_boot_id());
    // A dead runner's sidecar without a row (killed before its commit).
    let orphan = state.root().join("slots").join(BRIDGE).join("7.json");
    std::fs::write(&orphan, "{}").unwrap();

    let report = state.gc(true).unwrap();
    assert!(report.dry_run);
    assert_eq!(report.reclaimed.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(), ["dead"]);
    assert_eq!(state.list().unwrap().len(), 2, "dry run changes nothing");

    let report = state.gc(false).unwrap();
    assert_eq!(report.reclaimed.len(), 1);
    assert_eq!(report.reclaimed[0].iface, format!("{BRIDGE}-5"));
    assert_eq!(report.sidecars_removed, vec![orphan.clone()]);
    assert!(!orphan.exists());
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].lease.job, "live");
    // The caller now takes the slot to delete the leftover veth.
    assert!(state.try_lock_slot(BRIDGE, 5).unwrap().is_some());
    state.release(live).unwrap();
}

/// Rows of runners that died (pid 1 of another start time, this boot) in
/// `slots` of `bridge`, addresses from `first` on (`first` + slot), in one
/// transaction.
fn insert_dead_rows(dir: &Path, bridge: &str, first: Ipv4Addr, slots: &[u16]) {
    let mut conn = Connection::open(dir.join("state.db")).unwrap();
    let tx = conn.transaction().unwrap();
    for &slot in slots {
        let ip = Ipv4Addr::from(u32::from(first) + u32::from(slot));
        tx.execute(
            "INSERT INTO leases (job, bridge, subnet, ip, gateway, slot, iface, pid, start_time, boot_id, command, started_at)
             VALUES (?1, ?2, '198.18.12.0/22', ?3, '198.18.12.1', ?4, ?5, 1, 1, ?6, 'true', '2026-01-01T00:00:00Z')",
            params![format!("dead-{bridge}-{slot}"), bridge, ip.to_string(), slot, format!("{bridge}-{slot}"), current_boot_id()],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// After a host-wide crash `gc` removes a thousand sidecars at once (on
/// two threads: `Subdirs::remove_all`): every dead one goes, with or
/// without its row, and the live job's stays. With 1000 rows or more
/// (`SNAPSHOT_FROM`), the sweep judges them with the lock snapshot.
#[test]
fn gc_after_a_crash_removes_every_dead_sidecar_and_keeps_the_live_one() {
    let (_tmp, state) = fresh();
    let live = state.acquire(&req("live", "198.18.12.0/22")).unwrap();
    let slots = state.root().join("slots").join(BRIDGE);
    let dead: Vec<u16> = (0..1023).filter(|&s| s != live.record.slot).collect();
    // The first 1000 have a row (a runner killed after its commit), the
    // rest none (killed before it); every slot lock is free.
    insert_dead_rows(state.root(), BRIDGE, Ipv4Addr::new(198, 18, 12, 10), &dead[..1000]);
    for &slot in &dead {
        std::fs::write(slots.join(format!("{slot}.json")), "{}").unwrap();
        drop(state.try_lock_slot(BRIDGE, slot).unwrap().unwrap());
    }
    assert_eq!(sidecars(state.root()), dead.len() + 1);

    let report = state.gc(false).unwrap();
    assert_eq!(report.reclaimed.len(), 1000);
    let mut removed = report.sidecars_removed.clone();
    removed.sort();
    let mut want: Vec<_> = dead.iter().map(|s| slots.join(format!("{s}.json"))).collect();
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(sidecars(state.root()), 1, "the live job's sidecar stays");
    assert!(slots.join(format!("{}.json", live.record.slot)).exists());
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].lease.job, "live");
    state.release(live).unwrap();
}

/// `gc` in a child pid namespace with its own /proc, where /proc/locks
/// leaves out the locks of processes it cannot see: it must not take their
/// absence for freedom (the lock snapshot proves nothing there, every
/// lock is probed). Here the live lease is this process's, invisible to
/// the child, among enough dead ones (1000 on another bridge) for the
/// sweep to take the snapshot.
#[test]
fn gc_in_a_child_pid_namespace_keeps_a_live_lease_held_outside_it() {
    if !common::require_root() {
        return;
    }
    let (_tmp, state) = fresh();
    let live = state.acquire(&req("outside", "198.18.9.0/24")).unwrap();
    insert_row(state.root(), "dead", "198.18.9.77", 5, 1, 1, &current_boot_id());
    let many: Vec<u16> = (0..1000).collect();
    insert_dead_rows(state.root(), "rtest1", Ipv4Addr::new(198, 18, 12, 10), &many);
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .args(["child_gc", "--exact", "--nocapture", "--test-threads=1"])
        .env("REPEATR_TEST_GC_DIR", state.root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child gc failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let reclaimed = stdout.lines().find_map(|l| l.split_once("RECLAIMED ")).map(|(_, r)| r.trim().to_string());
    let mut want = vec!["dead".to_string()];
    want.extend(many.iter().map(|s| format!("dead-rtest1-{s}")));
    want.sort();
    let mut got: Vec<String> = reclaimed.unwrap_or_default().split(',').map(String::from).collect();
    got.sort();
    assert_eq!(got, want, "{stdout}");
    let listed = state.list().unwrap();
    assert_eq!(listed.iter().map(|i| i.lease.job.as_str()).collect::<Vec<_>>(), ["outside"]);
    assert_eq!(listed[0].state, LeaseState::Running);
    state.release(live).unwrap();
}

/// The child of the test above: `gc` of REPEATR_TEST_GC_DIR, printing the
/// jobs it reclaimed.
#[test]
fn child_gc() {
    let Ok(dir) = std::env::var("REPEATR_TEST_GC_DIR") else {
        return;
    };
    let report = StateDir::open(Path::new(&dir)).unwrap().gc(false).unwrap();
    let jobs: Vec<&str> = report.reclaimed.iter().map(|r| r.job.as_str()).collect();
    println!("RECLAIMED {}", jobs.join(","));
}

// ---- list ------------------------------------------------------------------

#[test]
fn list_while_held_and_after_release() {
    let (_tmp, state) = fresh();
    let lease = state.acquire(&LeaseRequest { command: "echo hi".into(), ..req("shown", "198.18.10.0/24") }).unwrap();
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    let json = serde_json::to_value(&listed[0]).unwrap();
    assert_eq!(json["job"], "shown");
    assert_eq!(json["ip"], "198.18.10.2");
    assert_eq!(json["slot"], 0);
    assert_eq!(json["iface"], format!("{BRIDGE}-0"));
    assert_eq!(json["bridge"], BRIDGE);
    assert_eq!(json["pid"], std::process::id());
    assert_eq!(json["state"], "running");
    assert_eq!(json["command"], "echo hi");
    let started = json["started_at"].as_str().unwrap();
    assert!(started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T', "{started}");

    let sidecar = state.root().join("slots").join(BRIDGE).join("0.json");
    assert!(sidecar.exists());
    state.release(lease).unwrap();
    assert!(state.list().unwrap().is_empty());
    assert!(!sidecar.exists());
    assert!(state.try_lock_slot(BRIDGE, 0).unwrap().is_some(), "release frees the slot lock");
}

// ---- damage ----------------------------------------------------------------

fn remove_db(root: &Path) {
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(root.join(f));
    }
}

#[test]
fn corrupt_db_is_refused_then_rebuilt_from_live_jobs() {
    let (tmp, state) = fresh();
    let root = tmp.path().join("state");
    let live = state.acquire(&req("live", "198.18.11.0/24")).unwrap();
    let dead = state.acquire(&req("dead", "198.18.11.0/24")).unwrap();
    let dead_slot = dead.record.slot;
    drop(dead); // runner died: its sidecar stays, its lock is free

    remove_db(&root);
    std::fs::write(root.join("state.db"), vec![0x5a; 8192]).unwrap();

    let e = StateDir::open(&root).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StateError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("state.db") && msg.contains("repeatr gc --rebuild") && !msg.contains('\n'), "{msg}");
    let e = state.acquire(&req("new", "198.18.11.0/24")).unwrap_err().to_string();
    assert!(e.contains("state.db") && e.contains("repeatr gc --rebuild"), "{e}");

    let report = StateDir::rebuild(&root).unwrap();
    let aside = report.moved_aside.clone().unwrap();
    assert!(aside.file_name().unwrap().to_str().unwrap().starts_with("state.db.corrupt-"));
    assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 8192], "damaged file kept");
    assert_eq!(report.restored.len(), 1);
    assert_eq!(report.restored[0], live.record);
    assert_eq!(report.dropped, vec![root.join("slots").join(BRIDGE).join(format!("{dead_slot}.json"))]);

    let state = StateDir::open(&root).unwrap();
    let listed = state.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].lease.job.as_str(), listed[0].state), ("live", LeaseState::Running));
    let next = state.acquire(&req("new", "198.18.11.0/24")).unwrap();
    assert_ne!(next.record.ip, live.record.ip);
    assert_ne!(next.record.slot, live.record.slot);
    state.release(live).unwrap();
}

#[test]
fn missing_db_with_live_jobs_is_refused() {
    let (tmp, state) = fresh();
    let root = tmp.path().join("state");
    let live = state.acquire(&req("live", "198.18.12.0/24")).unwrap();
    remove_db(&root);

    let e = StateDir::open(&root).unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("live job live") && msg.contains("0.json") && msg.contains("repeatr gc --rebuild"), "{msg}");
    assert!(state.acquire(&req("x", "198.18.12.0/24")).is_err(), "never allocate from an empty stand-in");

    let report = StateDir::rebuild(&root).unwrap();
    assert!(report.moved_aside.is_none());
    assert_eq!(report.restored, vec![live.record.clone()]);
    let state = StateDir::open(&root).unwrap();
    let next = state.acquire(&req("x", "198.18.12.0/24")).unwrap();
    assert_eq!(next.record.ip, ip("198.18.12.3"), "round-robin resumes after the restored lease");
}

#[test]
fn db_that_forgot_a_live_job_blocks_allocation() {
    let (tmp, state) = fresh();
    let root = tmp.path().join("state");
    let live = state.acquire(&req("live", "198.18.13.0/24")).unwrap();
    // An old copy of the database put back: the row is gone, the job
    // lives, and the copy's write count is behind state.gen.
    put_back_an_old_copy(&root);
    let e = state.acquire(&req("x", "198.18.13.0/24")).unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
    StateDir::rebuild(&root).unwrap();
    let next = state.acquire(&req("x", "198.18.13.0/24")).unwrap();
    assert_ne!(next.record.ip, live.record.ip);
}

/// What restoring an old copy of state.db does to it: the leases taken
/// since are gone, and so are the writes that counted them.
fn put_back_an_old_copy(root: &Path) {
    let conn = Connection::open(root.join("state.db")).unwrap();
    conn.execute("DELETE FROM leases", []).unwrap();
    conn.execute("UPDATE meta SET value = value - 1 WHERE key = 'generation'", []).unwrap();
}

/// Without state.gen (or with one that does not match), the rows are not
/// trusted: every sidecar is compared with them, as after a restore.
#[test]
fn a_missing_generation_file_means_the_full_check() {
    let (tmp, state) = fresh();
    let root = tmp.path().join("state");
    let _live = state.acquire(&req("live", "198.18.13.0/24")).unwrap();
    let conn = Connection::open(root.join("state.db")).unwrap();
    conn.execute("DELETE FROM leases", []).unwrap();
    drop(conn);
    std::fs::remove_file(root.join("state.gen")).unwrap();
    let e = state.acquire(&req("x", "198.18.13.0/24")).unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
}

/// With matching counts an allocation reads no sidecar; `gc` always
/// checks them all and repairs a damaged one of a live job from its row.
#[test]
fn damaged_sidecar_of_a_known_job_is_rewritten() {
    let (_tmp, state) = fresh();
    let live = state.acquire(&req("live", "198.18.13.0/24")).unwrap();
    let path = state.root().join("slots").join(BRIDGE).join("0.json");
    std::fs::write(&path, "{ not json").unwrap();
    let _next = state.acquire(&req("next", "198.18.13.0/24")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{ not json", "the fast path leaves sidecars alone");
    state.gc(false).unwrap();
    let back: repeatr::state::LeaseRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, live.record);
}

#[test]
fn unusable_state_dir_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let e = StateDir::open(&file).unwrap_err().to_string();
    assert!(e.contains("not-a-dir") && !e.contains('\n'), "{e}");
}

#[test]
fn bad_requests_are_refused() {
    let (_tmp, state) = fresh();
    let cases = [
        LeaseRequest { bridge: "../etc".into(), ..req("a", "198.18.14.0/24") },
        LeaseRequest { job: String::new(), ..req("a", "198.18.14.0/24") },
        LeaseRequest { subnet: subnet("198.18.14.0/31"), ..req("a", "198.18.14.0/24") },
        LeaseRequest { gateway: ip("198.18.15.1"), ..req("a", "198.18.14.0/24") },
    ];
    for r in cases {
        let e = state.acquire(&r).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }
}

// ---- full and read-only filesystems (root only) ----------------------------

/// In a child with its own mount namespace: a 512 KiB tmpfs as the state
/// dir's filesystem, filled up, then remounted read-only. Prints one
/// `RESULT <case> <message>` line per case.
#[test]
fn child_small_fs() {
    use nix::mount::{MsFlags, mount};
    let Ok(dir) = std::env::var("REPEATR_TEST_SMALLFS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
    mount(Some("tmpfs"), &dir, Some("tmpfs"), MsFlags::empty(), Some("size=512k")).unwrap();
    let root = dir.join("state");
    let state = StateDir::open(&root).unwrap();
    let _held = state.acquire(&req("first", "198.18.17.0/24")).unwrap();

    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    let _ = filler.sync_all();
    let full = (0..50).find_map(|i| state.acquire(&req(&format!("j{i}"), "198.18.17.0/24")).err());
    println!("RESULT full {}", full.map(|e| e.to_string()).unwrap_or_default());
    // A rebuild on the full disk fails, and leaves the database it would
    // have replaced where and as it was.
    let db = root.join("state.db");
    let before = std::fs::metadata(&db).unwrap();
    let rebuilt = StateDir::rebuild(&root).err().map(|e| e.to_string()).unwrap_or_default();
    let after = std::fs::metadata(&db).unwrap();
    let kept = after.ino() == before.ino() && after.len() == before.len() && after.len() > 0;
    let leftovers = std::fs::read_dir(&root).unwrap().filter(|e| {
        let name = e.as_ref().unwrap().file_name();
        let name = name.to_string_lossy();
        name.starts_with("state.db.rebuild") || name.starts_with("state.db.corrupt")
    });
    println!("RESULT rebuild {rebuilt} kept={kept} leftovers={}", leftovers.count());

    drop(filler);
    std::fs::remove_file(dir.join("filler")).unwrap();
    // A file open for writing (the slot lock, the state's SQLite
    // connection) makes a read-only remount fail with EBUSY.
    drop(_held);
    drop(state);
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(none, &dir, none, flags, none).unwrap();
    let ro = StateDir::open(&root).err();
    println!("RESULT ro {}", ro.map(|e| e.to_string()).unwrap_or_default());
}

#[test]
fn full_and_read_only_state_dir_errors() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_small_fs", "--exact", "--nocapture", "--test-threads=1"])
        .env("REPEATR_TEST_SMALLFS", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result = |case: &str| {
        let tag = format!("RESULT {case} ");
        stdout
            .lines()
            .find_map(|l| l.split_once(&tag).map(|(_, m)| m.to_string()))
            .unwrap_or_else(|| panic!("no {case} result in {stdout}"))
    };
    let root = tmp.path().join("state");
    let rebuild = result("rebuild");
    assert!(rebuild.contains("is full") && rebuild.ends_with("kept=true leftovers=0"), "rebuild: {rebuild}");
    for (case, want) in [("full", "is full"), ("ro", "must be writable")] {
        let msg = result(case);
        assert!(msg.contains(want), "{case}: {msg}");
        assert!(msg.contains(root.to_str().unwrap()), "{case} names no file: {msg}");
    }
}

#[test]
fn reclaiming_an_old_row_keeps_the_sidecar_of_a_live_job_in_its_slot() {
    let (_tmp, state) = fresh();
    let live = state.acquire(&req("live", "198.18.18.0/24")).unwrap();
    // A database restored from an old copy: the live job's row is gone and
    // an old-boot row claims its slot.
    put_back_an_old_copy(state.root());
    insert_row_without_lock_file(state.root(), "old", "198.18.9.9", 0, 1, 1, "other-boot");
    let e = state.acquire(&req("x", "198.18.18.0/24")).unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
    let report = StateDir::rebuild(state.root()).unwrap();
    assert_eq!(report.restored, vec![live.record.clone()]);
}

/// A 0-byte state.db (truncated, or emptied) while jobs live: every entry
/// point refuses it with the same line, none shows an empty view.
#[test]
fn an_emptied_db_with_live_jobs_is_refused_everywhere() {
    let (tmp, state) = fresh();
    let root = tmp.path().join("state");
    let live = state.acquire(&req("live", "198.18.20.0/24")).unwrap();
    remove_db(&root);
    std::fs::write(root.join("state.db"), b"").unwrap();
    let e = StateDir::open(&root).unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
    assert!(e.to_string().contains("repeatr gc --rebuild"), "{e}");
    let report = StateDir::rebuild(&root).unwrap();
    assert_eq!(report.restored, vec![live.record.clone()]);
    assert_eq!(StateDir::open(&root).unwrap().list().unwrap().len(), 1);
}

/// A state.db cut short while runners keep their connections open: every
/// entry point says it is damaged, at once (no wait for a lock that the
/// live runners' connections would never give up) and in one line.
#[test]
fn a_truncated_db_is_diagnosed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let go = tmp.path().join("go");
    std::fs::write(&go, "").unwrap();
    let mut runner = spawn_runner(&dir, "live", "198.18.25.0/24", &go);
    runner.lease();
    let db = dir.join("state.db");
    let whole = std::fs::read(&db).unwrap();
    // (A cut at a page boundary leaves what the WAL holds readable: the
    // pages SQLite reads come from the WAL, and are the latest.)
    for len in [0, 100, 1000, 3000] {
        std::fs::write(&db, &whole[..len]).unwrap();
        let t = Instant::now();
        let r = StateDir::open(&dir).and_then(|s| s.list());
        let e = r.map(drop).expect_err(&format!("{len} of {} bytes: taken for a database", whole.len()));
        let msg = e.to_string();
        assert!(t.elapsed() < Duration::from_secs(2), "{len} bytes: {:?} to say {msg}", t.elapsed());
        assert!(msg.contains("repeatr gc --rebuild") && !msg.contains('\n'), "{len} bytes: {msg}");
    }
    runner.child.kill().unwrap();
    runner.child.wait().unwrap();
}

/// `leases` (and `gc --dry-run`, which lists) judge the database as an
/// allocation does: one that forgot a live job is refused, not shown empty.
#[test]
fn listing_a_db_that_forgot_a_live_job_is_refused() {
    let (tmp, state) = fresh();
    let root = tmp.path().join("state");
    let _live = state.acquire(&req("live", "198.18.21.0/24")).unwrap();
    put_back_an_old_copy(&root);
    let e = state.list().unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
    let e = state.gc(true).unwrap_err();
    assert!(matches!(e, StateError::LostLeases { .. }), "{e}");
}

/// Two rebuilds within one second keep both old files, under two names.
#[test]
fn rebuilds_never_overwrite_a_backup() {
    let (tmp, _state) = fresh();
    let root = tmp.path().join("state");
    let mut kept = Vec::new();
    for byte in [0x5a, 0x6b, 0x7c] {
        remove_db(&root);
        std::fs::write(root.join("state.db"), vec![byte; 8192]).unwrap();
        let aside = StateDir::rebuild(&root).unwrap().moved_aside.unwrap();
        kept.push((aside, byte));
    }
    let names: HashSet<_> = kept.iter().map(|k| k.0.clone()).collect();
    assert_eq!(names.len(), 3, "{kept:?}");
    for (path, byte) in kept {
        assert_eq!(std::fs::read(&path).unwrap(), vec![byte; 8192], "{} overwritten", path.display());
    }
    assert!(!root.join("state.db.rebuild").exists());
    StateDir::open(&root).unwrap().acquire(&req("after", "198.18.22.0/24")).unwrap();
}

/// A sidecar's temp file left by a writer that failed (ENOSPC) or died
/// before its rename: gc removes it and says so.
#[test]
fn gc_removes_stray_temp_files() {
    let (_tmp, state) = fresh();
    let held = state.acquire(&req("live", "198.18.23.0/24")).unwrap();
    let tmp = state.root().join("slots").join(BRIDGE).join(".5.json.tmp");
    std::fs::write(&tmp, b"").unwrap();
    let report = state.gc(false).unwrap();
    assert_eq!(report.sidecars_removed, vec![tmp.clone()]);
    assert!(!tmp.exists());
    assert!(state.root().join("slots").join(BRIDGE).join("0.json").exists(), "the live sidecar stays");
    state.release(held).unwrap();
}

/// The WAL stays small: the release that leaves no lease copies it into
/// the database and cuts it.
#[test]
fn the_wal_is_cut_when_the_last_lease_goes() {
    let (_tmp, state) = fresh();
    let wal = state.root().join("state.db-wal");
    for i in 0..40 {
        let l = state.acquire(&req(&format!("j{i}"), "198.18.24.0/24")).unwrap();
        let m = state.acquire(&req(&format!("k{i}"), "198.18.24.0/24")).unwrap();
        state.release(l).unwrap();
        state.release(m).unwrap();
    }
    let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(size <= 64 << 10, "WAL is {size} bytes after 80 jobs, none left");
}

/// Not a check: prints how acquire and release scale with live leases
/// (`cargo test --release --test state_leases -- --ignored --nocapture`).
#[test]
#[ignore]
fn acquire_latency() {
    let (_tmp, state) = fresh();
    let mut held = Vec::new();
    let mut times = Vec::new();
    for i in 0..1000 {
        let t = Instant::now();
        held.push(state.acquire(&req(&format!("j{i}"), "198.18.64.0/20")).unwrap());
        times.push(t.elapsed());
        if (i + 1) % 250 == 0 {
            let mut last: Vec<_> = times[i + 1 - 250..].to_vec();
            last.sort();
            println!("leases {:4}: acquire p50 {:?} p99 {:?}", i + 1, last[125], last[247]);
        }
    }
    let t = Instant::now();
    let n = held.len();
    for lease in held {
        state.release(lease).unwrap();
    }
    println!("release: {:?} each", t.elapsed() / n as u32);
}

/// A lease's peers are the other jobs of its bridge as /etc/hosts lines, in
/// slot order; a damaged row (an address that is no dotted quad, a job id
/// with a newline) is left out rather than written into a job's file.
#[test]
fn peers_are_hosts_lines_of_the_other_jobs() {
    let (tmp, state) = fresh();
    let net = "198.18.30.0/24";
    let a = state.acquire(&req("web", net)).unwrap();
    let b = state.acquire(&req("db.main", net)).unwrap();
    assert_eq!(a.peers, "", "the first job has no peers");
    assert_eq!(b.peers, format!("{}\tweb\n", a.record.ip));
    let conn = Connection::open(tmp.path().join("state/state.db")).unwrap();
    conn.execute("UPDATE leases SET ip = '198.18.30.x' || char(10) || '1.2.3.4 evil' WHERE job = 'web'", params![])
        .unwrap();
    drop(conn);
    let c = state.acquire(&req("client", net)).unwrap();
    assert_eq!(c.peers, format!("{}\tdb.main\n", b.record.ip), "the damaged row is left out");
}

/// Only named jobs are peers: an anonymous job's id is random, no name
/// anyone looks up, and a thousand of them would be read at every start
/// and fill every job's /etc/hosts. A database from before `named`
/// (schema 3) keeps listing its rows once migrated, as it did.
#[test]
fn only_named_jobs_are_peers_and_older_rows_count_as_named() {
    let (tmp, state) = fresh();
    let net = "198.18.31.0/24";
    let web = state.acquire(&req("web", net)).unwrap();
    let anon = state.acquire(&LeaseRequest { named: false, ..req("3f2a9c0d1e4b", net) }).unwrap();
    let client = state.acquire(&req("client", net)).unwrap();
    assert_eq!(client.peers, format!("{}\tweb\n", web.record.ip), "the anonymous job is left out");
    assert!(web.record.named && !anon.record.named);
    let listed = state.list().unwrap();
    assert!(listed.iter().any(|l| l.lease.job == anon.record.job && !l.lease.named), "the row keeps it: {listed:?}");

    // Back to schema 3, as a binary before `named` left it, with its rows.
    let conn = Connection::open(tmp.path().join("state/state.db")).unwrap();
    conn.execute_batch("DROP INDEX leases_named; ALTER TABLE leases DROP COLUMN named; PRAGMA user_version = 3;")
        .unwrap();
    drop(conn);
    let reopened = StateDir::open(&tmp.path().join("state")).unwrap();
    let later = reopened.acquire(&req("later", net)).unwrap();
    let lines: Vec<&str> = later.peers.lines().collect();
    assert_eq!(lines.len(), 3, "every older row is listed: {lines:?}");
    assert!(lines.contains(&format!("{}\t{}", anon.record.ip, anon.record.job).as_str()), "{lines:?}");
}
