//! Bridge networking against the real kernel (needs root).
//!
//! Every test uses its own bridge name and its own /24 out of
//! 198.18.0.0/15 (benchmarking space, never routed), and a guard that
//! deletes what it made even when the test panics. Job netns are made by a
//! thread that unshares its network namespace and hands back an fd of it:
//! no processes, and the netns dies with the fd.

mod common;
use common::require_root;

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use repeatr::network::{
    AttachedVeth, Deletion, HostNet, JobSide, LinkOwner, NetworkError, OtherOwner, Role, VethSpec, delete_link,
    delete_own_link, ensure_bridge, host_ipv4_routes, links_with_prefix, loopback_up, mac_for_ip,
};
use serde_json::Value;

/// Test `n`'s bridge name and subnet: unique per process and test.
fn names(n: u32) -> (String, Ipv4Net) {
    assert!(n < 16);
    let pid = std::process::id();
    let bridge = format!("rt{}x{n}", pid % 1000);
    assert!(bridge.len() <= 10);
    // 198.18.0.0/15 holds 512 /24s: 32 process slots of 16 tests each.
    let idx = (pid % 32) * 16 + n;
    let subnet = Ipv4Net::new(Ipv4Addr::new(198, 18 + (idx / 256) as u8, (idx % 256) as u8, 0), 24).expect("valid /24");
    (bridge, subnet)
}

/// Whose links these tests make: a directory cargo keeps for them.
fn owner() -> LinkOwner {
    LinkOwner::of_dir(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("test owner")
}

fn host(subnet: Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + i)
}

/// Deletes every link it was told about, veths before the bridge, even on
/// panic; job netns (held by fds) go away after it.
struct Guard {
    links: Vec<String>,
    netns: Vec<OwnedFd>,
}

impl Guard {
    fn new(bridge: &str) -> Self {
        // A leftover from an earlier crashed run of a process with this pid.
        let _ = delete_link(bridge);
        Guard { links: vec![bridge.to_string()], netns: Vec::new() }
    }

    fn veth(&mut self, name: &str) {
        self.links.insert(0, name.to_string());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for l in &self.links {
            if let Err(e) = delete_link(l) {
                eprintln!("cleanup: {e}");
            }
        }
        self.netns.clear();
    }
}

/// A fresh network namespace, as a job child would have after clone.
fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let f = std::fs::File::open("/proc/thread-self/ns/net").expect("open netns");
        OwnedFd::from(f)
    })
    .join()
    .expect("netns thread")
}

/// Runs a command inside `netns`.
fn run_in(netns: &OwnedFd, args: &[&str]) -> Output {
    let fd = netns.as_raw_fd();
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    // SAFETY: setns is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("spawn")
}

fn json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

fn host_json(args: &[&str]) -> Value {
    json(Command::new("ip").args(args).output().expect("run ip"))
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == flag))
}

fn has_addr(link: &Value, ip: Ipv4Addr, prefix: u8) -> bool {
    link["addr_info"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["local"] == ip.to_string().as_str() && x["prefixlen"] == prefix))
}

fn mac_str(ip: Ipv4Addr) -> String {
    mac_for_ip(ip).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn spec(bridge: &str, subnet: Ipv4Net, slot: u32, mtu: u32) -> VethSpec {
    VethSpec {
        host_name: format!("{bridge}-{slot}"),
        bridge: bridge.to_string(),
        // Set by `attach`, which knows the bridge's ifindex.
        bridge_index: 0,
        ip: host(subnet, 2 + slot),
        prefix: subnet.prefix_len(),
        gateway: host(subnet, 1),
        mtu,
    }
}

/// Plugs `netns` into the bridge `s.bridge` (ifindex `bridge`, as
/// `ensure_bridge` returned it) the runner's way: a pending veth, then
/// finished with `s`'s lease.
fn attach(bridge: u32, s: &VethSpec, netns: &OwnedFd) -> Result<AttachedVeth, NetworkError> {
    let mut host = HostNet::open(owner())?;
    let pending = host.create_pending(s.mtu, netns.as_fd())?;
    // On a thread that ends with it, as the runner's lease thread does.
    let mut job = std::thread::scope(|t| t.spawn(|| JobSide::from_here(netns.as_fd())).join().unwrap())?;
    host.finish_pending(pending, &VethSpec { bridge_index: bridge, ..s.clone() }, &mut job)
}

#[test]
fn ensure_bridge_is_idempotent_and_repairs() {
    if !require_root() {
        return;
    }
    let (br, net) = names(0);
    let _g = Guard::new(&br);
    let gw = host(net, 1);
    let a = ensure_bridge(&br, gw, net, 1400, &owner()).expect("create");
    let b = ensure_bridge(&br, gw, net, 1400, &owner()).expect("again");
    assert_eq!(a, b);

    let check = || {
        let v = host_json(&["-j", "addr", "show", "dev", &br]);
        let l = &v[0];
        assert_eq!(l["ifindex"], a);
        assert_eq!(l["mtu"], 1400);
        assert!(has_flag(l, "UP"), "{l}");
        assert_eq!(l["address"], mac_str(gw).as_str());
        assert!(has_addr(l, gw, 24), "{l}");
        let d = host_json(&["-j", "-d", "link", "show", "dev", &br]);
        assert_eq!(d[0]["linkinfo"]["info_kind"], "bridge");
        // Off: with it on, every port's up walks every port's timers.
        assert_eq!(d[0]["linkinfo"]["info_data"]["mcast_snooping"], 0, "{}", d[0]["linkinfo"]);
    };
    check();

    // An admin took it down and removed the address: the next run repairs.
    let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().expect("ip").success());
    ok(&["link", "set", &br, "down"]);
    ok(&["addr", "del", &format!("{gw}/24"), "dev", &br]);
    ok(&["link", "set", &br, "type", "bridge", "mcast_snooping", "1"]);
    assert_eq!(ensure_bridge(&br, gw, net, 1400, &owner()).expect("repair"), a);
    check();

    // Its subnet route is now a host route (what the overlap check sees).
    let routes = host_ipv4_routes().expect("routes");
    assert!(routes.contains(&(net, br.clone())), "{routes:?}");
}

#[test]
fn ensure_bridge_refuses_bad_input_and_non_bridges() {
    if !require_root() {
        return;
    }
    let (br, net) = names(1);
    let mut g = Guard::new(&br);
    assert!(ensure_bridge(&br, net.network(), net, 1500, &owner()).is_err());
    assert!(ensure_bridge(&br, host(net, 1), net, 10, &owner()).is_err());
    assert!(ensure_bridge("a-name-too-long-x", host(net, 1), net, 1500, &owner()).is_err());
    // A veth host end with the bridge's name is not a bridge.
    let ns = new_netns();
    let other = format!("{br}o");
    g.veth(&other);
    let other_index = ensure_bridge(&other, host(net, 1), net, 1500, &owner()).expect("bridge");
    let mut s = spec(&other, net, 0, 1500);
    s.host_name = br.clone();
    attach(other_index, &s, &ns).expect("attach");
    let e = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect_err("not a bridge");
    assert!(e.to_string().contains("veth"), "{e}");
    g.netns.push(ns);
}

/// A bridge (test `n`'s name and subnet) with one job attached at `slot`,
/// all at `mtu`: its guard, job netns, spec and the job's `ip -j addr`,
/// after checking that eth0 has the job's address and MTU.
fn one_job(n: u32, slot: u32, mtu: u32) -> (Guard, OwnedFd, VethSpec, Value) {
    let (br, net) = names(n);
    let mut g = Guard::new(&br);
    let br_index = ensure_bridge(&br, host(net, 1), net, mtu, &owner()).expect("bridge");
    let ns = new_netns();
    let s = spec(&br, net, slot, mtu);
    g.veth(&s.host_name);
    attach(br_index, &s, &ns).expect("attach");
    let links = json(run_in(&ns, &["ip", "-j", "addr"]));
    let eth0 = links.as_array().unwrap().iter().find(|l| l["ifname"] == "eth0").expect("eth0");
    assert!(has_addr(eth0, s.ip, 24), "{eth0}");
    assert_eq!(eth0["mtu"], mtu);
    (g, ns, s, links)
}

#[test]
fn attach_job_configures_the_netns() {
    if !require_root() {
        return;
    }
    let (mut g, ns, s, links) = one_job(2, 7, 1450);
    let br = s.bridge.clone();
    let eth0 = links.as_array().unwrap().iter().find(|l| l["ifname"] == "eth0").expect("eth0");
    assert!(has_flag(eth0, "UP"));
    assert_eq!(eth0["address"], mac_str(s.ip).as_str());
    let lo = links.as_array().unwrap().iter().find(|l| l["ifname"] == "lo").expect("lo");
    assert!(has_flag(lo, "UP"), "{lo}");

    let routes = json(run_in(&ns, &["ip", "-j", "-4", "route"]));
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == s.gateway.to_string().as_str() && r["dev"] == "eth0"),
        "{routes}"
    );

    let h = host_json(&["-j", "link", "show", "dev", &s.host_name]);
    assert_eq!(h[0]["master"], br.as_str());
    assert_eq!(h[0]["mtu"], 1450);
    assert!(has_flag(&h[0], "UP"));

    assert_eq!(links_with_prefix(&format!("{br}-")).expect("list"), vec![s.host_name.clone()]);
    assert!(delete_link(&s.host_name).expect("delete"));
    assert!(links_with_prefix(&format!("{br}-")).expect("list").is_empty());
    // Deleting the host end took the job end with it.
    let after = json(run_in(&ns, &["ip", "-j", "link"]));
    assert!(after.as_array().unwrap().iter().all(|l| l["ifname"] != "eth0"), "{after}");
    g.netns.push(ns);
}

#[test]
fn two_jobs_reach_each_other_and_the_gateway() {
    if !require_root() {
        return;
    }
    let (br, net) = names(3);
    let mut g = Guard::new(&br);
    let index = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    let (a, b) = (new_netns(), new_netns());
    let (sa, sb) = (spec(&br, net, 0, 1500), spec(&br, net, 1, 1500));
    g.veth(&sa.host_name);
    g.veth(&sb.host_name);
    attach(index, &sa, &a).expect("attach a");
    attach(index, &sb, &b).expect("attach b");

    let ping = |ns: &OwnedFd, ip: Ipv4Addr| {
        let out = run_in(ns, &["ping", "-c1", "-W2", &ip.to_string()]);
        assert!(out.status.success(), "ping {ip}: {}", String::from_utf8_lossy(&out.stdout));
    };
    ping(&a, sb.ip);
    ping(&b, sa.ip);
    ping(&a, sa.gateway);
    ping(&b, sb.gateway);
    // Loopback works inside the job too.
    ping(&a, Ipv4Addr::LOCALHOST);
    g.netns.push(a);
    g.netns.push(b);
}

#[test]
fn delete_link_of_a_missing_name_is_false() {
    if !require_root() {
        return;
    }
    let (br, _) = names(4);
    assert!(!delete_link(&format!("{br}-nope")).expect("delete"));
    assert!(delete_link("bad/name").is_err());
}

#[test]
fn host_routes_exclude_default_and_cover_host_addresses() {
    if !require_root() {
        return;
    }
    let routes = host_ipv4_routes().expect("routes");
    assert!(!routes.is_empty());
    assert!(routes.iter().all(|(n, _)| n.prefix_len() > 0), "{routes:?}");
    // Every global address's subnet shows up as a route on its device.
    let addrs = host_json(&["-j", "-4", "addr"]);
    for l in addrs.as_array().unwrap() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            let Some(p) = a["prefixlen"].as_u64().filter(|&p| p > 0 && p < 32) else {
                continue;
            };
            if a["scope"] != "global" || !has_flag(l, "UP") {
                continue;
            }
            let ip: Ipv4Addr = a["local"].as_str().unwrap().parse().unwrap();
            let net = Ipv4Net::new(ip, p as u8).unwrap().trunc();
            let dev = l["ifname"].as_str().unwrap().to_string();
            // Other tests create and delete their bridges meanwhile.
            if dev.starts_with("rt") {
                continue;
            }
            assert!(routes.contains(&(net, dev.clone())), "{net} on {dev} missing from {routes:?}");
        }
    }
}

#[test]
fn attach_replaces_a_stale_host_link() {
    if !require_root() {
        return;
    }
    let (br, net) = names(5);
    let mut g = Guard::new(&br);
    let index = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    let s = spec(&br, net, 3, 1500);
    g.veth(&s.host_name);
    // A runner killed before its teardown left its veth (and its netns) behind.
    let old = new_netns();
    attach(index, &s, &old).expect("first");
    let new = new_netns();
    attach(index, &s, &new).expect("over a stale link");
    let links = json(run_in(&new, &["ip", "-j", "link"]));
    assert!(links.as_array().unwrap().iter().any(|l| l["ifname"] == "eth0"));
    g.netns.push(old);
    g.netns.push(new);
}

#[test]
fn attach_fails_cleanly() {
    if !require_root() {
        return;
    }
    let (br, net) = names(6);
    let mut g = Guard::new(&br);
    let ns = new_netns();
    let s = spec(&br, net, 0, 1500);
    g.veth(&s.host_name);
    // The bridge is deleted after its ifindex was taken: the kernel
    // refuses the veth's master, the error names the bridge, and the veth
    // is deleted.
    let gone = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    assert!(delete_link(&br).expect("delete the bridge"));
    let e = attach(gone, &s, &ns).expect_err("no bridge");
    assert!(e.to_string().contains(&br), "{e}");
    let index = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    // eth0 already taken in the netns: the veth is created nowhere.
    attach(index, &s, &ns).expect("attach");
    let mut s2 = spec(&br, net, 1, 1500);
    s2.host_name = format!("{br}-1");
    g.veth(&s2.host_name);
    let e: NetworkError = attach(index, &s2, &ns).expect_err("eth0 exists");
    assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    eprintln!("attach over a taken eth0: {e}");
    // The veth is made on no bridge (its lease picks one of the domain's):
    // the error names the job's eth0.
    assert!(e.to_string().contains("eth0"), "{e}");
    assert_eq!(links_with_prefix(&format!("{br}-")).expect("list"), vec![s.host_name.clone()]);
    g.netns.push(ns);
}

#[test]
fn loopback_up_in_a_fresh_netns() {
    if !require_root() {
        return;
    }
    let ns = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        loopback_up().expect("lo up");
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").expect("open"))
    })
    .join()
    .expect("thread");
    let lo = json(run_in(&ns, &["ip", "-j", "link", "show", "lo"]));
    assert!(has_flag(&lo[0], "UP"), "{lo}");
}

#[test]
fn twenty_concurrent_attaches_on_one_bridge() {
    if !require_root() {
        return;
    }
    const N: u32 = 20;
    let (br, net) = names(7);
    let mut g = Guard::new(&br);
    // Concurrent ensure_bridge too: racing runners must all succeed.
    let barrier = Arc::new(Barrier::new(N as usize));
    let ok = Arc::new(AtomicU32::new(0));
    let specs: Vec<VethSpec> = (0..N).map(|i| spec(&br, net, i, 1500)).collect();
    for s in &specs {
        g.veth(&s.host_name);
    }
    let handles: Vec<_> = specs
        .iter()
        .cloned()
        .map(|s| {
            let (barrier, ok, br) = (barrier.clone(), ok.clone(), br.clone());
            std::thread::spawn(move || {
                let ns = new_netns();
                barrier.wait();
                let t = Instant::now();
                let index = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
                attach(index, &s, &ns).expect("attach");
                ok.fetch_add(1, Ordering::SeqCst);
                (ns, t.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for h in handles {
        let (ns, d) = h.join().expect("thread");
        slowest = slowest.max(d);
        g.netns.push(ns);
    }
    assert_eq!(ok.load(Ordering::SeqCst), N);
    eprintln!("{N} concurrent ensure_bridge + attach: slowest {slowest:?}");
    let listed = links_with_prefix(&format!("{br}-")).expect("list");
    assert_eq!(listed.len(), N as usize, "{listed:?}");
    let master = host_json(&["-j", "link", "show", "master", &br]);
    assert_eq!(master.as_array().unwrap().len(), N as usize);

    let handles: Vec<_> = specs
        .iter()
        .map(|s| {
            let name = s.host_name.clone();
            std::thread::spawn(move || delete_link(&name))
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("thread").expect("delete"));
    }
    assert!(links_with_prefix(&format!("{br}-")).expect("list").is_empty());
}

#[test]
fn attach_job_timing() {
    if !require_root() {
        return;
    }
    const N: u32 = 50;
    let (br, net) = names(8);
    let mut g = Guard::new(&br);
    let index = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    let s = spec(&br, net, 0, 1500);
    g.veth(&s.host_name);
    let (mut attached, mut delete, mut max) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..N {
        let ns = new_netns();
        let t = Instant::now();
        attach(index, &s, &ns).expect("attach");
        let d = t.elapsed();
        attached += d;
        max = max.max(d);
        let t = Instant::now();
        assert!(delete_link(&s.host_name).expect("delete"));
        delete += t.elapsed();
    }
    let t = Instant::now();
    for _ in 0..N {
        ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    }
    let ensure = t.elapsed() / N;
    eprintln!(
        "attach mean {:?} (max {max:?}), delete_link mean {:?}, ensure_bridge (existing) mean {ensure:?}, over {N}",
        attached / N,
        delete / N
    );
}

/// The runner's real situation: a child process in its own netns, reached
/// through /proc/PID/ns/net; teardown after the child (and netns) died.
#[test]
fn attach_to_a_child_process_netns_and_tear_down_after_it_died() {
    if !require_root() {
        return;
    }
    let (br, net) = names(9);
    let mut g = Guard::new(&br);
    let index = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect("bridge");
    let s = spec(&br, net, 4, 1500);
    g.veth(&s.host_name);

    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    // SAFETY: unshare is a plain syscall, fine between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    let ns = OwnedFd::from(std::fs::File::open(format!("/proc/{}/ns/net", child.id())).expect("open netns"));
    attach(index, &s, &ns).expect("attach");
    let out = Command::new("nsenter")
        .args(["-t", &child.id().to_string(), "-n", "ping", "-c1", "-W2", &s.gateway.to_string()])
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // The job dies and nobody holds its netns any more: the kernel tears
    // the veth down on its own, asynchronously; delete_link must not mind.
    drop(ns);
    child.kill().expect("kill");
    child.wait().expect("wait");
    let deleted = delete_link(&s.host_name).expect("delete after death");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !links_with_prefix(&format!("{br}-")).expect("list").is_empty() {
        assert!(Instant::now() < deadline, "veth outlived its netns");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("delete_link after the netns died returned {deleted}");
}

/// What a refused runner must leave as it was: the bridge's flags,
/// addresses, alias and ports.
fn bridge_state(br: &str) -> (Value, Value, Value, Vec<String>) {
    let l = host_json(&["-j", "-d", "addr", "show", "dev", br])[0].clone();
    let ports = host_json(&["-j", "link", "show", "master", br]);
    let ports = ports.as_array().unwrap().iter().map(|p| p["ifname"].as_str().unwrap().to_string()).collect();
    (l["flags"].clone(), l["addr_info"].clone(), l["ifalias"].clone(), ports)
}

/// Two state dirs configured with one bridge: the bridge carries the
/// marker of the one that made it, and the other is refused it before
/// anything about it changes; links are deleted only by their own state
/// dir, by ifindex after the check.
#[test]
fn a_bridge_and_its_veths_are_their_state_dirs_own() {
    if !require_root() {
        return;
    }
    let (br, net) = names(10);
    let mut g = Guard::new(&br);
    let gw = host(net, 1);
    let index = ensure_bridge(&br, gw, net, 1500, &owner()).expect("create");
    let d = host_json(&["-j", "-d", "link", "show", "dev", &br]);
    let alias = d[0]["ifalias"].as_str().expect("the bridge has an alias");
    assert!(alias.starts_with("repeatr:") && alias.ends_with(env!("CARGO_TARGET_TMPDIR")), "{alias}");
    let ns = new_netns();
    let s = spec(&br, net, 0, 1500);
    g.veth(&s.host_name);
    attach(index, &s, &ns).expect("attach");
    let v = host_json(&["-j", "-d", "link", "show", "dev", &s.host_name]);
    assert_eq!(v[0]["ifalias"].as_str(), Some(alias), "the host veth carries the marker too");

    let other_dir = tempfile::tempdir().unwrap();
    let other = LinkOwner::of_dir(other_dir.path()).unwrap();
    let before = bridge_state(&br);
    let e = ensure_bridge(&br, gw, net, 1500, &other).expect_err("another state dir's bridge");
    assert!(matches!(&e, NetworkError::NotOurs(f) if f.role == Role::Bridge), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("--state-dir {}", env!("CARGO_TARGET_TMPDIR"))), "{msg}");
    assert!(msg.contains(&other_dir.path().display().to_string()) && !msg.contains('\n'), "{msg}");
    assert_eq!(bridge_state(&br), before);

    let theirs = OtherOwner::StateDir { label: env!("CARGO_TARGET_TMPDIR").to_string() };
    assert_eq!(delete_own_link(&s.host_name, &other, false).expect("check"), Deletion::Kept(theirs));
    assert_eq!(delete_own_link(&s.host_name, &owner(), true).expect("dry run"), Deletion::Deleted);
    assert_eq!(bridge_state(&br), before, "neither deleted it");
    assert_eq!(delete_own_link(&s.host_name, &owner(), false).expect("delete"), Deletion::Deleted);
    assert_eq!(delete_own_link(&s.host_name, &owner(), false).expect("again"), Deletion::Missing);
    assert!(links_with_prefix(&format!("{br}-")).expect("list").is_empty());
    g.netns.push(ns);
}

/// A bridge made by hand (`ip link add NAME type bridge`), with or without
/// an alias of its own, is not repeatr's: refused, down and without an
/// address as it was.
#[test]
fn a_bridge_made_by_hand_is_refused_as_it_is() {
    if !require_root() {
        return;
    }
    let (br, net) = names(11);
    let _g = Guard::new(&br);
    let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().expect("ip").success(), "{args:?}");
    ok(&["link", "add", &br, "type", "bridge"]);
    for alias in [None, Some("lab uplink")] {
        if let Some(a) = alias {
            ok(&["link", "set", &br, "alias", a]);
        }
        let before = bridge_state(&br);
        let e = ensure_bridge(&br, host(net, 1), net, 1500, &owner()).expect_err("a bridge made by hand");
        let expected = OtherOwner::NotRepeatr { alias: alias.map(String::from) };
        assert!(matches!(&e, NetworkError::NotOurs(f) if f.owner == expected), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("not made by repeatr") && msg.contains(&format!("ip link del {br}")), "{msg}");
        assert!(alias.is_none_or(|a| msg.contains(a)), "{msg}");
        assert_eq!(bridge_state(&br), before);
        assert!(!has_flag(&host_json(&["-j", "link", "show", "dev", &br])[0], "UP"));
    }
}

/// An MTU below IPv6's minimum (1280): the links have no IPv6 at all, and
/// neither the bridge nor the veth asks to turn it off (the kernel would
/// refuse that); the job still gets its address.
#[test]
fn a_bridge_and_veth_below_the_ipv6_mtu_work() {
    if !require_root() {
        return;
    }
    let (mut g, ns, _, _) = one_job(9, 3, 1200);
    g.netns.push(ns);
}
