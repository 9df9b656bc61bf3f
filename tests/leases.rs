//! Bridge networking and leases end to end: real bridges, veths, netns and
//! SQLite state, many runners at once. Every test has its own state dir,
//! bridge name and subnet from 198.18.0.0/15, and a guard that removes the
//! bridge and any veth of it even when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One test's network: config file, bridge, subnet. Drop removes the bridge
/// and every `{bridge}-N` link left (none should be: the tests check that).
struct TestNet {
    repeatr: Repeatr,
    bridge: String,
    gateway: String,
    config: PathBuf,
    shared: tempfile::TempDir,
}

impl TestNet {
    /// `tag` is one letter per test; `third` the third octet of the subnet
    /// 198.18.THIRD.0/24 (or the prefix given).
    fn new(tag: &str, third: u8, prefix: u8) -> TestNet {
        let repeatr = Repeatr::new();
        let bridge = format!("rt{}{tag}", std::process::id() % 100000);
        let subnet = format!("198.18.{third}.0/{prefix}");
        let gateway = format!("198.18.{third}.1");
        let config = repeatr.state.path().join("config.toml");
        std::fs::write(
            &config,
            format!("[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\ndns = [\"198.18.{third}.1\"]\negress = \"none\"\n"),
        )
        .unwrap();
        let shared = tempfile::Builder::new().prefix("rpt-shared-").tempdir().unwrap();
        TestNet { repeatr, bridge, gateway, config, shared }
    }

    fn cmd(&self) -> Command {
        let mut c = self.repeatr.cmd();
        c.env("REPEATR_CONFIG", &self.config);
        c
    }

    /// A networked job running `script` with the shared dir at /shared.
    fn job(&self, opts: &[&str], script: &str) -> Command {
        let mut c = self.cmd();
        let shared = format!("{}:/shared", self.shared.path().display());
        c.args(["run", "--rootfs"]).arg(self.rootfs()).args(["--mount", &shared]).args(opts);
        c.args(["--", "/bin/sh", "-c", script]).stdin(Stdio::null());
        c
    }

    fn rootfs(&self) -> PathBuf {
        self.repeatr.state.path().join("rootfs")
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn leases_json(&self) -> Vec<serde_json::Value> {
        let out = self.output(&["leases", "--json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    /// The host veths of this test's bridge: `{bridge}-N` by name, and any
    /// port of the bridge (retired `rpt~…` links the kernel is still
    /// destroying included).
    fn veths(&self) -> Vec<String> {
        let names = |args: &[&str]| -> Vec<String> {
            let out = Command::new("ip").args(args).output().unwrap();
            stdout(&out)
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap().to_string())
                .collect()
        };
        let live = format!("{}-", self.bridge);
        let mut v: Vec<String> = names(&["-o", "link", "show"]).into_iter().filter(|n| n.starts_with(&live)).collect();
        for port in names(&["-o", "link", "show", "master", &self.bridge]) {
            if !v.contains(&port) {
                v.push(port);
            }
        }
        v
    }

    /// After the jobs ended: every veth gone (retired ones within seconds,
    /// as the kernel tears down the jobs' netns).
    fn assert_no_veths(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.veths().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.veths().is_empty(), "veths left: {:?}", self.veths());
    }

    /// Waits until `n` files exist in the shared dir (jobs announce themselves there).
    fn wait_files(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let names: Vec<String> = std::fs::read_dir(self.shared.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ip-"))
                .collect();
            if names.len() >= n {
                return names;
            }
            assert!(Instant::now() < deadline, "only {} of {n} jobs came up", names.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether any runner of this test still holds a lease (its slot lock).
    fn runners_alive(&self) -> bool {
        let out = self.cmd().args(["leases", "--json"]).output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).ok())
            .is_some_and(|l| l.iter().any(|x| x["state"] == "running"))
    }

    fn release_all(&self) {
        std::fs::write(self.shared.path().join("stop"), "").unwrap();
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // A test that failed half way leaves HOLD jobs waiting: let them go
        // before the shared dir (and with it any chance of a stop) is gone.
        let _ = std::fs::write(self.shared.path().join("stop"), "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.runners_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for v in self.veths() {
            let _ = Command::new("ip").args(["link", "del", &v]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
    }
}

/// Makes sure a link named `iface` exists, as a runner of this test's state
/// dir that died between creating its veth and tearing it down leaves one:
/// carrying the state dir's marker (the bridge's alias). The dead job's own
/// veth may still be there (the kernel removes it when the netns is freed,
/// in the background); otherwise a stand-in link is made.
fn leave_link(net: &TestNet, iface: &str) {
    let show = Command::new("ip").args(["-j", "-d", "link", "show", "dev", &net.bridge]).output().unwrap();
    let bridge: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let marker = bridge[0]["ifalias"].as_str().expect("the bridge carries its state dir's marker").to_string();
    // The dead job's veth may be half way through its removal (the kernel
    // destroys it with the job's netns, asynchronously): only a link this
    // test made counts, never the dying one, which would vanish under gc.
    for _ in 0..250 {
        // A veth (this kernel has no dummy driver); deleting it takes its peer along.
        let peer = format!("p{iface}");
        let made = Command::new("ip")
            .args(["link", "add", iface, "type", "veth", "peer", "name", &peer])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if made {
            let st = Command::new("ip").args(["link", "set", iface, "alias", &marker]).status().unwrap();
            assert!(st.success(), "could not mark the stand-in {iface}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("could not leave a link named {iface}");
}

/// A busybox rootfs at the net's rootfs path (inside its state temp dir).
fn with_rootfs(net: &TestNet) {
    let r = Rootfs::busybox();
    let status = Command::new("cp").arg("-a").arg(r.path()).arg(net.rootfs()).status().unwrap();
    assert!(status.success());
}

/// A job that records its address in /shared (written aside, then renamed,
/// so the test never reads a half-written file), then waits for /shared/stop.
const HOLD: &str = "ip=$(ip -4 -o addr show eth0 | awk '{print $4}'); echo $ip > /shared/.t-$(hostname); \
                    mv /shared/.t-$(hostname) /shared/ip-$(hostname); \
                    while [ ! -e /shared/stop ]; do sleep 0.05; done";

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

#[test]
fn hundred_concurrent_jobs_get_distinct_addresses_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("a", 10, 24);
    with_rootfs(&net);
    let n = 100;
    let children: Vec<Child> = (0..n)
        .map(|i| {
            net.job(&["--name", &format!("j{i}")], HOLD).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let names = net.wait_files(n);
    // All 100 are alive at once here: each waits for /shared/stop.
    let mut ips: Vec<String> =
        names.iter().map(|f| std::fs::read_to_string(net.shared.path().join(f)).unwrap().trim().to_string()).collect();
    assert_eq!(net.leases_json().len(), n, "one lease per running job");
    net.release_all();
    for out in wait_all(children) {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "addresses were not distinct: {ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("198.18.10.") && ip.ends_with("/24")), "{ips:?}");
    assert!(net.leases_json().is_empty(), "leases left after the jobs ended");
    net.assert_no_veths();
}

/// ... and find the named ones, only those, by name in /etc/hosts.
#[test]
fn jobs_reach_each_other_and_the_gateway() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("b", 11, 24);
    with_rootfs(&net);
    let server = net.job(&["--name", "srv", "--ip", "198.18.11.50"], HOLD).stdout(Stdio::null()).spawn().unwrap();
    let anonymous = net.job(&[], HOLD).stdout(Stdio::null()).spawn().unwrap();
    let files = net.wait_files(2);
    let anon_id = files.iter().find_map(|f| f.strip_prefix("ip-").filter(|h| *h != "srv")).unwrap().to_string();
    // busybox's ping needs a raw socket (it has no fallback to ping
    // sockets, unlike iputils'): NET_RAW is not in the default set.
    let out = net
        .job(&["--cap-add", "NET_RAW"], &format!("ping -c1 -W3 {} >/dev/null && echo gw-ok; ping -c1 -W3 198.18.11.50 >/dev/null && echo peer-ok; cat /etc/resolv.conf; cat /etc/hosts", net.gateway))
        .output()
        .unwrap();
    net.release_all();
    wait_all(vec![server, anonymous]);
    let o = stdout(&out);
    assert!(o.lines().any(|l| l == "198.18.11.50\tsrv"), "the named job, by its name: {o}");
    assert!(!o.contains(&anon_id), "the anonymous job {anon_id} is no one's peer: {o}");
    assert!(o.contains("gw-ok") && o.contains("peer-ok"), "{o}\n{}", stderr(&out));
    assert!(o.contains("nameserver 198.18.11.1"), "{o}");
    assert!(o.contains("198.18.11."), "the job's own address in /etc/hosts: {o}");
}

#[test]
fn sigkill_of_a_runner_then_the_next_run_reclaims() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("c", 12, 24);
    with_rootfs(&net);
    let mut runner = net.job(&["--name", "victim", "--ip", "198.18.12.7"], HOLD).stdout(Stdio::null()).spawn().unwrap();
    net.wait_files(1);
    runner.kill().unwrap();
    runner.wait().unwrap();
    // The lease row is still there, but nobody holds its slot lock.
    let leases = net.leases_json();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["state"], "stale", "{leases:?}");
    assert_eq!(leases[0]["job"], "victim");
    let iface = leases[0]["iface"].as_str().unwrap().to_string();
    // A crash between veth creation and teardown leaves the host end: fake it.
    leave_link(&net, &iface);
    let out = net.job(&["--ip", "198.18.12.7"], "ip -4 -o addr show eth0").output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("198.18.12.7/24"));
    assert!(net.leases_json().is_empty());
    net.assert_no_veths();
}

#[test]
fn a_slash_29_is_exhausted_by_concurrent_jobs() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("d", 13, 29);
    with_rootfs(&net);
    // 8 addresses - network - broadcast - gateway = 5.
    let holders: Vec<Child> = (0..5).map(|_| net.job(&[], HOLD).stdout(Stdio::null()).spawn().unwrap()).collect();
    net.wait_files(5);
    let out = net.job(&[], "true").output().unwrap();
    // The refused job's veth, made while its lease was being taken, is
    // gone once it has exited (HostNet::discard's own test checks it goes
    // before the job's netns does).
    let ports = net.veths();
    net.release_all();
    wait_all(holders);
    assert_eq!(ports.len(), 5, "only the five holders' veths: {ports:?}");
    assert!(ports.iter().all(|p| !p.starts_with(repeatr::network::PENDING_PREFIX)), "{ports:?}");
    assert_eq!(code(&out), 125);
    assert_eq!(stderr(&out).trim(), "repeatr: no free address in 198.18.13.0/29: 5 leased");
    net.assert_no_veths();
}

#[test]
fn ip_requests_are_checked() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("e", 14, 24);
    with_rootfs(&net);
    let holder = net.job(&["--name", "holder", "--ip", "198.18.14.9"], HOLD).stdout(Stdio::null()).spawn().unwrap();
    net.wait_files(1);
    let cases = [
        ("198.18.14.1", "gateway"),
        ("198.18.14.0", "network"),
        ("198.18.14.255", "broadcast"),
        ("198.18.99.3", "outside"),
        ("198.18.14.9", "holder"),
    ];
    let mut outs = Vec::new();
    for (ip, _) in cases {
        outs.push(net.job(&["--ip", ip], "true").output().unwrap());
    }
    net.release_all();
    wait_all(vec![holder]);
    for ((ip, needle), out) in cases.iter().zip(outs) {
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "--ip {ip}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "--ip {ip}: {err}");
    }
    assert!(net.leases_json().is_empty());
    net.assert_no_veths();
}

#[test]
fn twenty_first_runs_at_once_on_an_empty_state_dir() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("f", 15, 24);
    with_rootfs(&net);
    assert!(!net.repeatr.state.path().join("state.db").exists());
    let children: Vec<Child> = (0..20)
        .map(|_| net.job(&[], "ip -4 -o addr show eth0").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for out in wait_all(children) {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).contains("198.18.15."));
    }
    assert!(net.leases_json().is_empty());
    net.assert_no_veths();
}

#[test]
fn a_corrupt_state_file_is_detected_and_rebuilt() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("g", 16, 24);
    with_rootfs(&net);
    let holder = net.job(&["--name", "survivor", "--ip", "198.18.16.20"], HOLD).stdout(Stdio::null()).spawn().unwrap();
    net.wait_files(1);
    let db = net.repeatr.state.path().join("state.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let out = net.job(&[], "true").output().unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert!(err.contains("state.db") && err.contains("gc --rebuild"), "{err}");
    let out = net.output(&["gc", "--rebuild"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let leases = net.leases_json();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["job"], "survivor");
    assert_eq!(leases[0]["state"], "running");
    // The rebuilt state still knows .20 is taken.
    let out = net.job(&["--ip", "198.18.16.20"], "true").output().unwrap();
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("survivor"), "{}", stderr(&out));
    net.release_all();
    wait_all(vec![holder]);
    assert!(net.leases_json().is_empty());
}

#[test]
fn leases_json_while_jobs_run_and_after() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("h", 17, 24);
    with_rootfs(&net);
    let holder = net.job(&["--name", "listed", "--ip", "198.18.17.33"], HOLD).stdout(Stdio::null()).spawn().unwrap();
    net.wait_files(1);
    let leases = net.leases_json();
    assert_eq!(leases.len(), 1);
    let l = &leases[0];
    assert_eq!(l["job"], "listed");
    assert_eq!(l["named"], true, "--name: a name other jobs' /etc/hosts list");
    assert_eq!(l["ip"], "198.18.17.33");
    assert_eq!(l["state"], "running");
    assert_eq!(l["pid"], holder.id());
    assert_eq!(l["iface"], format!("{}-{}", net.bridge, l["slot"]));
    assert!(l["command"].as_str().unwrap().starts_with("/bin/sh -c"));
    assert!(l["started_at"].as_str().unwrap().ends_with('Z'));
    let table = stdout(&net.output(&["leases"]));
    assert!(table.starts_with("JOB") && table.contains("listed") && table.contains("running"), "{table}");
    net.release_all();
    wait_all(vec![holder]);
    assert!(net.leases_json().is_empty());
    // The retired host veth goes with the job's netns, which the kernel
    // destroys asynchronously: until then gc would (rightly) take it.
    net.assert_no_veths();
    let out = net.output(&["gc"]);
    assert_eq!(stdout(&out), "nothing to clean\n", "{}", stderr(&out));
}

#[test]
fn gc_reclaims_and_deletes_leftovers() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("i", 18, 24);
    with_rootfs(&net);
    let mut runner = net.job(&["--name", "crashy"], HOLD).stdout(Stdio::null()).spawn().unwrap();
    net.wait_files(1);
    runner.kill().unwrap();
    runner.wait().unwrap();
    let iface = net.leases_json()[0]["iface"].as_str().unwrap().to_string();
    leave_link(&net, &iface);
    let dry = net.output(&["gc", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(v["reclaimed"][0]["job"], "crashy");
    assert_eq!(v["veths_deleted"][0], iface.as_str());
    assert_eq!(net.leases_json().len(), 1, "dry run changed nothing");
    assert_eq!(net.veths(), std::slice::from_ref(&iface));
    let out = net.output(&["gc"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("reclaimed lease of job crashy"), "{}", stdout(&out));
    assert!(net.leases_json().is_empty());
    net.assert_no_veths();
}

#[test]
fn bad_network_config_is_refused_in_one_line() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("j", 19, 24);
    with_rootfs(&net);
    let host_route = host_route();
    let cases: Vec<(String, &str)> = vec![
        ("subnet = \"198.18.19.5/24\"".into(), "198.18.19.5/24"),
        ("subnet = \"fd00::/64\"".into(), "IPv4"),
        ("subnet = \"198.18.19.0/31\"".into(), "/31"),
        ("subnet = \"198.18.19.0/32\"".into(), "/32"),
        (format!("subnet = \"{host_route}\""), "network.subnet"),
        ("bridge = \"bad name\"".into(), "bridge"),
        ("bridge = \"waytoolongbridge\"".into(), "bridge"),
        ("mtu = 0".into(), "mtu"),
        ("mtu = 70000".into(), "mtu"),
        ("colour = \"blue\"".into(), "colour"),
    ];
    for (line, needle) in cases {
        let cfg = net.repeatr.state.path().join("bad.toml");
        std::fs::write(&cfg, format!("[network]\negress = \"none\"\n{line}\n")).unwrap();
        let out = net
            .cmd()
            .env("REPEATR_CONFIG", &cfg)
            .args(["run", "--rootfs"])
            .arg(net.rootfs())
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{line}: {err}");
        assert_eq!(err.lines().count(), 1, "{line}: {err}");
        assert!(err.contains(needle), "{line}: {err}");
    }
    net.assert_no_veths();
}

/// The subnet of the host's first global IPv4 address (a route the host has).
fn host_route() -> String {
    let out = Command::new("ip").args(["-4", "-o", "route", "show", "scope", "link"]).output().unwrap();
    stdout(&out)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .expect("a link-scope route on the host")
        .to_string()
}

#[test]
fn a_read_only_state_dir_is_refused() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("k", 20, 24);
    with_rootfs(&net);
    let ro = tempfile::Builder::new().prefix("rpt-ro-").tempdir().unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"]).arg(ro.path()).status().unwrap();
    assert!(st.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(ro.path());
    let out = net
        .cmd()
        .env("REPEATR_STATE_DIR", ro.path().join("state"))
        .args(["run", "--rootfs"])
        .arg(net.rootfs())
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Read-only"), "{err}");
    net.assert_no_veths();
}

/// `--state-dir` given relative to the caller's directory: the job's child
/// looks up paths under it after it has left that directory, so the runner
/// must hold it absolute (a networked run once failed here with a
/// misleading "opening the job's network namespace").
#[test]
fn a_relative_state_dir_works_for_networked_jobs() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("l", 21, 24);
    with_rootfs(&net);
    let mut c = net.cmd();
    c.env_remove("REPEATR_STATE_DIR").current_dir(net.repeatr.state.path()).args(["--state-dir", "rel-state"]);
    c.args(["run", "--rootfs", "rootfs", "--", "/bin/sh", "-c", "ip -4 -o addr show eth0"]).stdin(Stdio::null());
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("198.18.21."), "{}", stdout(&out));
    assert!(net.repeatr.state.path().join("rel-state/state.db").exists());
    let mut l = net.cmd();
    l.env_remove("REPEATR_STATE_DIR").current_dir(net.repeatr.state.path()).args(["--state-dir", "rel-state"]);
    let out = l.args(["leases", "--json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "[]", "{}", stderr(&out));
    net.assert_no_veths();
}

/// The host end of a running job's veth as the host sees it: (ifindex,
/// flags, master, alias).
fn veth_state(iface: &str) -> (u64, Vec<String>, String, String) {
    let out = Command::new("ip").args(["-j", "-d", "link", "show", "dev", iface]).output().unwrap();
    assert!(out.status.success(), "{iface}: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &v[0];
    let flags = l["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
    (l["ifindex"].as_u64().unwrap(), flags, s("master"), s("ifalias"))
}

/// The address on eth0 inside the netns of the job that `runner` runs.
fn job_address(runner: &Child) -> String {
    let job = children_of(runner.id());
    let pid = job.first().expect("the runner's job").to_string();
    let out = Command::new("nsenter").args(["-t", &pid, "-n", "ip", "-4", "-o", "addr", "show", "eth0"]).output();
    stdout(&out.unwrap()).split_whitespace().nth(3).unwrap_or_default().to_string()
}

/// A running job of this test's state dir and what a second state dir
/// must not change about it: its lease's iface, its veth, its address.
fn running_job(net: &TestNet, name: &str) -> (Child, String, (u64, Vec<String>, String, String), String) {
    let runner = net.job(&["--name", name], HOLD).stdout(Stdio::null()).spawn().unwrap();
    net.wait_files(1);
    let iface = net.leases_json()[0]["iface"].as_str().unwrap().to_string();
    let veth = veth_state(&iface);
    assert!(veth.1.iter().any(|f| f == "UP") && veth.2 == net.bridge, "{veth:?}");
    let ip = job_address(&runner);
    assert!(ip.starts_with("198.18."), "{ip}");
    (runner, iface, veth, ip)
}

/// Two state dirs configured with the same bridge: the second's run is
/// refused in one line that names the first, before it changes anything;
/// the first job keeps its veth and address, and the second state dir
/// holds no lease.
#[test]
fn a_second_state_dir_is_refused_the_bridge() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("m", 22, 24);
    with_rootfs(&net);
    let (runner, iface, veth, ip) = running_job(&net, "first");
    let other = tempfile::Builder::new().prefix("rpt-state-").tempdir().unwrap();
    let out = net.job(&["--name", "second"], "ip -4 -o addr show eth0").env("REPEATR_STATE_DIR", other.path()).output();
    let out = out.unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}\n{}", stdout(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    let first = net.repeatr.state.path().display().to_string();
    assert!(err.contains(&format!("bridge {} belongs to the state dir {first}", net.bridge)), "{err}");
    assert!(err.contains(&format!("--state-dir {first}")) && err.contains("network.bridge"), "{err}");
    assert_eq!(veth_state(&iface), veth, "the first job's veth");
    assert_eq!(job_address(&runner), ip, "the first job's address");
    let leases = net.cmd().env("REPEATR_STATE_DIR", other.path()).args(["leases", "--json"]).output().unwrap();
    assert_eq!(stdout(&leases).trim(), "[]", "{}", stderr(&leases));
    net.release_all();
    for out in wait_all(vec![runner]) {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert!(net.leases_json().is_empty());
    net.assert_no_veths();
}

/// `gc` run with another state dir (and this test's config) deletes
/// nothing of a running job: its veth is another state dir's, so it is
/// left alone and reported.
#[test]
fn gc_of_another_state_dir_leaves_a_running_job_alone() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("n", 23, 24);
    with_rootfs(&net);
    let (runner, iface, veth, ip) = running_job(&net, "busy");
    let other = tempfile::Builder::new().prefix("rpt-state-").tempdir().unwrap();
    let gc = |args: &[&str]| net.cmd().env("REPEATR_STATE_DIR", other.path()).arg("gc").args(args).output().unwrap();
    let first = net.repeatr.state.path().display().to_string();
    for args in [&["--dry-run", "--json"][..], &["--json"]] {
        let out = gc(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["veths_deleted"], serde_json::json!([]), "{v}");
        assert_eq!(v["links_kept"][0]["name"], iface.as_str(), "{v}");
        assert_eq!(v["links_kept"][0]["owner"], format!("belongs to the state dir {first}"), "{v}");
    }
    let out = gc(&[]);
    assert!(
        stdout(&out).contains(&format!("left {iface} alone: it belongs to the state dir {first}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(veth_state(&iface), veth, "the running job's veth");
    assert_eq!(job_address(&runner), ip, "the running job's address");
    assert_eq!(net.leases_json()[0]["state"], "running");
    net.release_all();
    for out in wait_all(vec![runner]) {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    net.assert_no_veths();
}

/// A bridge of the configured name made by hand is not repeatr's: the run
/// is refused in one line saying so and how to fix it, and the bridge is
/// left down and without an address; once it is deleted, the run works.
#[test]
fn a_bridge_made_by_hand_is_refused() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("o", 24, 24);
    with_rootfs(&net);
    let st = Command::new("ip").args(["link", "add", &net.bridge, "type", "bridge"]).status().unwrap();
    assert!(st.success());
    let out = net.job(&[], "true").output().unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not made by repeatr") && err.contains(&format!("ip link del {}", net.bridge)), "{err}");
    let show = Command::new("ip").args(["-j", "addr", "show", "dev", &net.bridge]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v[0]["addr_info"], serde_json::json!([]), "{v}");
    assert!(!v[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{v}");
    assert!(net.leases_json().is_empty());
    assert!(net.veths().is_empty(), "{:?}", net.veths());
    let st = Command::new("ip").args(["link", "del", &net.bridge]).status().unwrap();
    assert!(st.success());
    let out = net.job(&[], "ip -4 -o addr show eth0").output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("198.18.24."), "{}", stdout(&out));
    net.assert_no_veths();
}

/// A runner killed while it made its bridge leaves it under a pending name
/// (`rpt+<pid>-<n>`), marked but not yet renamed: `gc` deletes it once that
/// pid is gone, and leaves a live runner's and another state dir's alone.
#[test]
fn gc_deletes_half_made_bridges_of_its_own_state_dir() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("p", 25, 24);
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let ours = repeatr::network::LinkOwner::of_dir(net.repeatr.state.path()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let theirs = repeatr::network::LinkOwner::of_dir(other_dir.path()).unwrap();
    let pending = |pid: u32, n: u32| format!("{}{pid:x}-{n:x}", repeatr::network::PENDING_PREFIX);
    let (stale, live, foreign) = (pending(dead.id(), 0), pending(std::process::id(), 0xfff0), pending(dead.id(), 1));
    struct Del(Vec<String>);
    impl Drop for Del {
        fn drop(&mut self) {
            for l in &self.0 {
                let _ = Command::new("ip").args(["link", "del", l]).stderr(Stdio::null()).status();
            }
        }
    }
    let _del = Del(vec![stale.clone(), live.clone(), foreign.clone()]);
    for (name, owner) in [(&stale, &ours), (&live, &ours), (&foreign, &theirs)] {
        let st = Command::new("ip").args(["link", "add", name, "type", "bridge"]).status().unwrap();
        assert!(st.success());
        let st = Command::new("ip").args(["link", "set", name, "alias", &owner.alias()]).status().unwrap();
        assert!(st.success());
    }
    let exists = |name: &str| Command::new("ip").args(["link", "show", name]).output().unwrap().status.success();
    let out = net.output(&["gc", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bridges_deleted"], serde_json::json!([stale]), "{v}");
    let kept: Vec<&str> = v["links_kept"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(kept, vec![foreign.as_str()], "{v}");
    assert!(!exists(&stale) && exists(&live) && exists(&foreign));
}

/// A running job whose slot lock file was deleted by hand keeps its veth
/// and its lease through `gc --dry-run` and `gc`: liveness falls back to its
/// runner's pid and start time on every path, and the dry run makes no lock
/// file again.
#[test]
fn gc_leaves_a_running_job_without_its_lock_file_alone() {
    if !require_root() {
        return;
    }
    let net = TestNet::new("q", 26, 24);
    with_rootfs(&net);
    let (runner, iface, veth, ip) = running_job(&net, "nolock");
    let slot = net.leases_json()[0]["slot"].as_u64().unwrap();
    let lock = net.repeatr.state.path().join("slots").join(&net.bridge).join(format!("{slot}.lock"));
    std::fs::remove_file(&lock).unwrap();
    for args in [&["gc", "--dry-run", "--json"][..], &["gc", "--json"]] {
        let out = net.output(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["veths_deleted"], serde_json::json!([]), "{args:?}: {v}");
        assert_eq!(v["reclaimed"], serde_json::json!([]), "{args:?}: {v}");
        if args[1] == "--dry-run" {
            assert!(!lock.exists(), "the dry run made the lock file again");
        }
    }
    assert_eq!(veth_state(&iface), veth, "the running job's veth");
    assert_eq!(job_address(&runner), ip, "the running job's address");
    assert_eq!(net.leases_json()[0]["state"], "running");
    net.release_all();
    for out in wait_all(vec![runner]) {
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    net.assert_no_veths();
}
