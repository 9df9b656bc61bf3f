//! A job may send only as itself (issue 9, item 7): the attack as it was
//! done, by a job given NET_RAW, against another job on the same bridge
//! and against the host. Each check has its control: with the port filter
//! taken off by hand the same probe does what the attack did, so a pass is
//! the filter's and not a probe that sends nothing.
//!
//! Real runners, bridge and kernel (needs root). Its own state dir, bridge
//! name and subnet (198.19.160.0/24: the shared helpers use
//! 198.19.0-127, the benchmarks 198.19.200 and up), and a guard that
//! deletes the bridge even when the test fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use repeatr::network::mac_for_ip;

/// Deletes the test's bridge at the end, whatever happened; the runners
/// (dropped before it) take their jobs and veths with them.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

fn mac_str(ip: Ipv4Addr) -> String {
    mac_for_ip(ip).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn tc(args: &[&str]) -> String {
    let out = Command::new("tc").args(args).output().expect("tc (iproute2)");
    assert!(out.status.success(), "tc {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The host's neighbour entry for `addr` on `bridge`, e.g.
/// "198.19.160.3 lladdr 02:42:c6:13:a0:03 STALE".
fn neigh(bridge: &str, addr: Ipv4Addr) -> String {
    ip(&["neigh", "show", "dev", bridge, "to", &addr.to_string()])
}

/// The bridge port `mac` is learned on, if any.
fn fdb_port(bridge: &str, mac: &str) -> Option<String> {
    let fdb = Command::new("bridge").args(["fdb", "show", "br", bridge]).output().expect("bridge (iproute2)");
    stdout(&fdb).lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(mac)).then(|| {
            let dev = l.split_whitespace().skip_while(|w| *w != "dev").nth(1);
            dev.unwrap_or("").to_string()
        })
    })
}

/// Frames a port's filter dropped: its ingress qdisc's drop counter.
fn port_drops(port: &str) -> u64 {
    let out = tc(&["-s", "-j", "qdisc", "show", "dev", port, "ingress"]);
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    q[0]["drops"].as_u64().unwrap_or_else(|| panic!("no ingress qdisc on {port}: {out}"))
}

/// A job that runs the lines written to it as shell commands, one at a
/// time, and answers each with "done <status>".
struct Shell {
    runner: Runner,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Shell {
    /// Ends the job (its input closes) and waits for its runner.
    fn finish(self) {
        let Shell { mut runner, stdin, stdout } = self;
        drop((stdin, stdout));
        assert!(runner.wait().unwrap().success());
    }

    fn run(&mut self, line: &str) -> i32 {
        writeln!(self.stdin, "{line}").unwrap();
        let mut out = String::new();
        loop {
            out.clear();
            assert!(self.stdout.read_line(&mut out).unwrap() > 0, "the job ended during {line:?}");
            if let Some(status) = out.trim().strip_prefix("done ") {
                return status.parse().unwrap();
            }
        }
    }
}

struct Net {
    repeatr: Repeatr,
    config: PathBuf,
}

impl Net {
    fn cmd(&self) -> Command {
        let mut c = self.repeatr.cmd();
        c.env("REPEATR_CONFIG", &self.config);
        c
    }

    /// A networked job at `addr` that runs what [`Shell::run`] sends it.
    fn shell(&self, rootfs: &Path, addr: Ipv4Addr, opts: &[&str]) -> Shell {
        let mut c = self.cmd();
        c.args(["run", "--net", "bridge", "--ip", &addr.to_string(), "--rootfs"]).arg(rootfs).args(opts);
        c.args(["--", "/bin/sh", "-c", "echo ready; while read -r l; do sh -c \"$l\"; echo \"done $?\"; done"]);
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let (stdin, out) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let mut shell = Shell { runner: Runner::new(child), stdin, stdout: BufReader::new(out) };
        let mut line = String::new();
        shell.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the job at {addr} did not start");
        shell
    }

    /// The host veth of the job at `addr`.
    fn port(&self, addr: Ipv4Addr) -> String {
        let out = self.cmd().args(["leases", "--json"]).output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let leases: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let lease = leases.iter().find(|l| l["ip"] == addr.to_string()).expect("a lease for the job");
        lease["iface"].as_str().unwrap().to_string()
    }
}

/// Whether `sock` gets `text` within a short wait (other datagrams skipped).
fn receives(sock: &UdpSocket, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && &buf[..n] == text.as_bytes()
        {
            return true;
        }
    }
    false
}

fn rootfs_with_probe() -> Rootfs {
    let rootfs = Rootfs::busybox();
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(rootfs.path().join("bin/spoofprobe"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/spoofprobe.c"))
        .status()
        .expect("gcc (the test command installs it)");
    assert!(built.success());
    rootfs
}

#[test]
fn a_job_with_net_raw_cannot_pose_as_another_job_or_route_the_host() {
    if !require_root() {
        return;
    }
    let repeatr = Repeatr::new();
    let bridge = format!("rsp{}", std::process::id() % 100000);
    let _guard = BridgeGuard(bridge.clone());
    let config = repeatr.state.path().join("spoofing.toml");
    std::fs::write(
        &config,
        format!("[network]\nbridge = \"{bridge}\"\nsubnet = \"198.19.160.0/24\"\ndns = []\negress = \"none\"\n"),
    )
    .unwrap();
    let net = Net { repeatr, config };
    let gw = Ipv4Addr::new(198, 19, 160, 1);
    let gw_mac = mac_str(gw);
    let rootfs = rootfs_with_probe();
    let (a_ip, b_ip) = (Ipv4Addr::new(198, 19, 160, 2), Ipv4Addr::new(198, 19, 160, 3));
    let (a_mac, b_mac) = (mac_str(a_ip), mac_str(b_ip));

    let b = net.shell(rootfs.path(), b_ip, &[]);
    let mut a = net.shell(rootfs.path(), a_ip, &["--cap-add", "NET_RAW"]);
    let (a_port, b_port) = (net.port(a_ip), net.port(b_ip));
    for port in [&a_port, &b_port] {
        let filters = tc(&["filter", "show", "dev", port, "ingress"]);
        assert!(filters.contains("bpf") && filters.contains("direct-action"), "{port}: {filters}");
    }
    // The bridge has no IPv6, so no router advertisement can give the
    // host a route or an address through it.
    assert_no_ipv6(&bridge);

    // The host learns B's MAC (and the bridge B's port) from B itself.
    let ping = Command::new("ping").args(["-c1", "-W2", &b_ip.to_string()]).output().unwrap();
    assert!(ping.status.success(), "ping B: {}", stdout(&ping));
    assert!(neigh(&bridge, b_ip).contains(&b_mac), "{}", neigh(&bridge, b_ip));
    assert_eq!(fdb_port(&bridge, &b_mac).as_deref(), Some(b_port.as_str()));
    let sock = UdpSocket::bind((gw, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let port = sock.local_addr().unwrap().port();

    let udp = |from: Ipv4Addr, text: &str| format!("spoofprobe udp {from} {gw} {port} {text}");
    let arp = format!("spoofprobe arp {a_mac} {b_ip} {gw}");
    let forged = format!("spoofprobe frame {b_mac} {gw_mac} {a_ip} {gw} {port} forged-mac");
    // The kernel lets an ARP packet override a neighbour entry only once
    // the entry is a second old (net.ipv4.neigh.*.locktime).
    let locktime = || std::thread::sleep(Duration::from_millis(1500));

    // (2) Datagrams from a raw socket: A's own source address passes (the
    // probe works), B's does not.
    assert_eq!(a.run(&udp(a_ip, "honest")), 0);
    assert!(receives(&sock, "honest"), "A's own datagram did not arrive");
    assert_eq!(a.run(&udp(b_ip, "spoofed")), 0);
    assert!(!receives(&sock, "spoofed"), "a datagram from B's address, sent by A, reached the host");

    // (1) An ARP reply "B's address is at A's MAC" leaves the host's
    // neighbour entry for B alone.
    locktime();
    assert_eq!(a.run(&arp), 0);
    assert!(neigh(&bridge, b_ip).contains(&b_mac), "the host now sends B's traffic to A: {}", neigh(&bridge, b_ip));

    // (3) A frame with B's MAC as its source: dropped, so the bridge still
    // sends B's frames to B's port.
    assert_eq!(a.run(&forged), 0);
    assert!(!receives(&sock, "forged-mac"), "a frame from B's MAC, sent by A, reached the host");
    assert_eq!(fdb_port(&bridge, &b_mac).as_deref(), Some(b_port.as_str()), "the bridge learned B's MAC on A's port");

    // (4) A router advertisement from A (its own MAC, so only its kind is
    // wrong) is dropped at the port: even with IPv6 turned back on on the
    // bridge, it gives the host no route.
    let ra = format!("spoofprobe ra {a_mac}");
    let before = port_drops(&a_port);
    assert_eq!(a.run(&ra), 0);
    assert!(port_drops(&a_port) > before, "nothing dropped at A's port");
    let ipv6 = Path::new("/proc/sys/net/ipv6").exists();
    if ipv6 {
        set_ipv6(&bridge, true);
        assert_eq!(a.run(&ra), 0);
        assert!(!ra_route(&bridge), "A's RA gave the host a route through the bridge");
        set_ipv6(&bridge, false);
    }
    assert_eq!(ip(&["-6", "addr", "show", "dev", &bridge]).trim(), "", "IPv6 addresses on the bridge");

    // Controls: without A's filter, the same probes do what the attack did.
    tc(&["filter", "del", "dev", &a_port, "ingress"]);
    assert_eq!(a.run(&udp(b_ip, "spoofed")), 0);
    assert!(receives(&sock, "spoofed"), "control: the spoofed datagram never arrived even unfiltered");
    locktime();
    assert_eq!(a.run(&arp), 0);
    assert!(neigh(&bridge, b_ip).contains(&a_mac), "control: the ARP reply did not take: {}", neigh(&bridge, b_ip));
    assert_eq!(a.run(&forged), 0);
    assert!(receives(&sock, "forged-mac"), "control: the forged frame never arrived even unfiltered");
    assert_eq!(fdb_port(&bridge, &b_mac).as_deref(), Some(a_port.as_str()), "control: B's MAC not learned on A's port");
    if ipv6 {
        // The RA is one the host would take, and the bridge's own wall
        // holds without the port's.
        set_ipv6(&bridge, true);
        assert_eq!(a.run(&ra), 0);
        assert!(ra_route(&bridge), "control: the RA gave no route even unfiltered");
        set_ipv6(&bridge, false);
        assert_eq!(a.run(&ra), 0);
        assert!(!ra_route(&bridge), "an RA gave the host a route through a bridge without IPv6");
    }
    a.finish();
    b.finish();

    // A bridge whose IPv6 was turned back on (or made by an older repeatr)
    // is put right by the next job.
    if ipv6 {
        set_ipv6(&bridge, true);
        let mut c = net.cmd();
        c.args(["run", "--net", "bridge", "--rootfs"]).arg(rootfs.path()).args(["--", "/bin/true"]);
        let out = c.stdin(Stdio::null()).output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_no_ipv6(&bridge);
    }
}

/// Turns the bridge's IPv6, RAs and autoconf on (by hand, as an admin
/// might), or off again as repeatr leaves them.
fn set_ipv6(bridge: &str, on: bool) {
    let values = if on {
        [("accept_ra", "2"), ("autoconf", "1"), ("disable_ipv6", "0")]
    } else {
        [("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "1")]
    };
    for (setting, value) in values {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{bridge}/{setting}"), value).unwrap();
    }
}

/// Whether the host has a route through the bridge that an RA gave it
/// (waiting a moment for the RA to be processed).
fn ra_route(bridge: &str) -> bool {
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        if ip(&["-6", "route", "show", "dev", bridge, "proto", "ra"]).contains("default") {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bridge's IPv6 is off, RAs and autoconf with it (if the host has IPv6).
fn assert_no_ipv6(bridge: &str) {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return;
    }
    for (setting, want) in [("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "1")] {
        let got = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{bridge}/{setting}")).unwrap();
        assert_eq!(got.trim(), want, "{bridge}: {setting}");
    }
}
