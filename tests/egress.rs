//! Egress by NAT and DNS that answers (issue 12), against the real kernel
//! (needs root), without touching the real host's forwarding or firewall:
//! every runner here runs in a "stand-in host" network namespace the test
//! makes, wired by a veth to a second one that plays the internet, where
//! a tiny HTTP server and a tiny DNS server of the test's own (threads of
//! this process, in that namespace) answer on 198.18.254.2. The NAT table
//! and `ip_forward=1` the runner sets up are the stand-in's; each test
//! checks at its end that the real host's `ip_forward` and `nft list
//! ruleset` are as they were, and deletes both namespaces (and stops its
//! servers and runners) even when it fails.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

/// The stand-in host's end of the uplink and the internet's.
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 254, 1);
const WORLD: Ipv4Addr = Ipv4Addr::new(198, 18, 254, 2);
const HTTP_PORT: u16 = 8080;
/// The bridge inside the stand-in host (no other netns sees it).
const BRIDGE: &str = "rpe0";
const SUBNET: &str = "198.19.8.0/24";
/// Names the test DNS server answers with WORLD; others get NXDOMAIN.
const DOMAIN: &str = ".egress.test";

/// The real host's IPv4 forwarding and nftables ruleset.
fn real_host_firewall() -> (String, String) {
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ruleset = Command::new("nft").args(["list", "ruleset"]).output().expect("nft (apt-get install nftables)");
    assert!(ruleset.status.success(), "{}", stderr(&ruleset));
    (forwarding, stdout(&ruleset))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    stdout(&out)
}

fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

static N: AtomicU32 = AtomicU32::new(0);

/// The two namespaces, deleted on drop. Created before them, the record of
/// the real host's firewall that [`StandIn::finish`] compares with.
struct StandIn {
    host: String,
    world: String,
    host_ns: File,
    world_ns: File,
    real_before: (String, String),
    repeatr: Repeatr,
    config: PathBuf,
    rootfs: Rootfs,
}

impl StandIn {
    /// Both namespaces and the uplink between them; `egress` for the
    /// runner's config (the config also points its host resolv.conf at a
    /// file naming the internet's DNS server).
    fn new(egress: &str) -> StandIn {
        let real_before = real_host_firewall();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("rpteg{}x{n}", std::process::id());
        let (host, world) = (format!("{tag}h"), format!("{tag}w"));
        ip(&["netns", "add", &host]);
        // From here on, Drop deletes what was made.
        let open = |name: &str| File::open(format!("/run/netns/{name}")).unwrap();
        let mut me = StandIn {
            host_ns: open(&host),
            world_ns: {
                let _ = Command::new("ip").args(["netns", "add", &world]).status();
                open(&world)
            },
            host,
            world,
            real_before,
            repeatr: Repeatr::new(),
            config: PathBuf::new(),
            rootfs: Rootfs::busybox(),
        };
        let (h, w) = (me.host.clone(), me.world.clone());
        ip(&["-n", &h, "link", "set", "lo", "up"]);
        ip(&["-n", &w, "link", "set", "lo", "up"]);
        ip(&["-n", &h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &w]);
        ip(&["-n", &h, "addr", "add", &format!("{UPLINK}/24"), "dev", "up0"]);
        ip(&["-n", &w, "addr", "add", &format!("{WORLD}/24"), "dev", "eth0"]);
        ip(&["-n", &h, "link", "set", "up0", "up"]);
        ip(&["-n", &w, "link", "set", "eth0", "up"]);
        let resolv = me.repeatr.state.path().join("host-resolv.conf");
        std::fs::write(&resolv, format!("# the stand-in host's\nnameserver 127.0.0.1\nnameserver {WORLD}\n")).unwrap();
        me.config = me.repeatr.state.path().join("egress.toml");
        std::fs::write(
            &me.config,
            format!(
                "[network]\nbridge = \"{BRIDGE}\"\nsubnet = \"{SUBNET}\"\negress = \"{egress}\"\nhost_resolv_conf = \"{}\"\n",
                resolv.display()
            ),
        )
        .unwrap();
        me
    }

    /// A runner command in the stand-in host.
    fn cmd(&self) -> Command {
        self.cmd_in(&self.host_ns)
    }

    /// A runner command in the netns `ns` (one of the two).
    fn cmd_in(&self, ns: &File) -> Command {
        let mut c = self.repeatr.cmd();
        c.env("REPEATR_CONFIG", &self.config);
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// A bridged job running `script`, output captured.
    fn sh(&self, opts: &[&str], script: &str) -> Output {
        let mut c = self.cmd();
        c.args(["run", "--net", "bridge", "--rootfs"]).arg(self.rootfs.path()).args(opts);
        c.args(["--", "/bin/sh", "-c", script]).stdin(Stdio::null()).output().unwrap()
    }

    /// A command in the stand-in host's netns (`ip netns exec`).
    fn in_host(&self, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.host]).args(args).output().unwrap()
    }

    fn host_forwarding(&self) -> String {
        stdout(&self.in_host(&["cat", "/proc/sys/net/ipv4/ip_forward"])).trim().to_string()
    }

    fn host_ruleset(&self) -> String {
        let out = self.in_host(&["nft", "list", "ruleset"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    }

    fn host_has_link(&self, name: &str) -> bool {
        self.in_host(&["ip", "link", "show", name]).status.success()
    }

    /// Servers in the internet netns, stopped on drop.
    fn servers(&self) -> Servers {
        Servers::start(&self.world_ns)
    }

    /// The end of a test: the real host's firewall is as it was.
    fn finish(self) {
        let before = self.real_before.clone();
        drop(self);
        assert_eq!(real_host_firewall(), before, "the real host's ip_forward or nftables ruleset changed");
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for ns in [&self.host, &self.world] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// An HTTP server that answers every request with "peer ADDR" (the
/// address it sees), and a DNS server for `*.egress.test`, both on WORLD.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    dns_queries: Arc<AtomicU32>,
}

/// Moves this thread into the netns `ns`.
fn enter(ns: &File) {
    // SAFETY: setns on a valid fd changes only this thread's netns.
    assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "{}", std::io::Error::last_os_error());
}

impl Servers {
    fn start(world: &File) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let dns_queries = Arc::new(AtomicU32::new(0));
        let ready = Arc::new(Barrier::new(3));
        let http = {
            let (world, stop, ready) = (world.try_clone().unwrap(), stop.clone(), ready.clone());
            std::thread::spawn(move || {
                enter(&world);
                let l = TcpListener::bind(SocketAddr::from((WORLD, HTTP_PORT))).unwrap();
                l.set_nonblocking(true).unwrap();
                ready.wait();
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                            let mut req = Vec::new();
                            let mut buf = [0u8; 512];
                            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => req.extend_from_slice(&buf[..n]),
                                }
                            }
                            let body = format!("peer {}\n", peer.ip());
                            let _ = write!(
                                s,
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        let dns = {
            let (world, stop, ready, queries) =
                (world.try_clone().unwrap(), stop.clone(), ready.clone(), dns_queries.clone());
            std::thread::spawn(move || {
                enter(&world);
                let sock = UdpSocket::bind(SocketAddr::from((WORLD, 53))).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                ready.wait();
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = dns_answer(&buf[..n]) {
                        let _ = sock.send_to(&reply, from);
                    }
                }
            })
        };
        ready.wait();
        Servers { stop, threads: vec![http, dns], dns_queries }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The reply to one DNS query: an A record WORLD for a name under DOMAIN
/// (nothing for other types), NXDOMAIN for any other name.
fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    while i < q.len() && q[i] != 0 {
        let len = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let question_end = i + 5;
    let name = format!(".{}", labels.join("."));
    let ours = name.ends_with(DOMAIN);
    let answer = ours && qtype == 1;
    let mut r = q.get(..question_end)?.to_vec();
    r[2] = 0x81; // response, recursion desired
    r[3] = if ours { 0x80 } else { 0x83 }; // recursion available; NXDOMAIN if not ours
    r[6..12].copy_from_slice(&[0, u8::from(answer), 0, 0, 0, 0]);
    if answer {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&WORLD.octets());
    }
    Some(r)
}

/// An HTTP GET of the outside server's page, its body on stdout (busybox's
/// wget crashes in its static build's resolver: nc and sed instead).
const FETCH: &str = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 198.18.254.2 8080 | sed -n 's/^peer /peer /p'";

#[test]
fn a_job_reaches_the_outside_masqueraded_behind_the_host() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let _servers = s.servers();
    assert_eq!(s.host_forwarding(), "0", "a fresh netns forwards nothing");
    let out = s.sh(&[], FETCH);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("peer {UPLINK}\n"), "the server sees the stand-in host's address");
    assert_eq!(s.host_forwarding(), "1");
    let rules = s.host_ruleset();
    assert!(rules.contains(&format!("table ip repeatr-{BRIDGE}")) && rules.contains("masquerade"), "{rules}");
    // A later run finds it all there and changes nothing.
    let out = s.sh(&[], FETCH);
    assert_eq!((code(&out), stdout(&out)), (0, format!("peer {UPLINK}\n")), "{}", stderr(&out));
    assert_eq!(s.host_ruleset(), rules);

    // gc --all in another netns than the NAT's leaves it alone, and says where.
    let gc = s.cmd_in(&s.world_ns).args(["gc", "--all"]).output().unwrap();
    assert_eq!(code(&gc), 125, "{}{}", stdout(&gc), stderr(&gc));
    assert!(
        stdout(&gc).contains("another network namespace") && stdout(&gc).contains("run repeatr gc --all there"),
        "{}",
        stdout(&gc)
    );
    assert_eq!((s.host_ruleset(), s.host_forwarding()), (rules.clone(), "1".to_string()));

    // gc --all with no job left: the bridge, the table and forwarding go.
    let gc = s.cmd().args(["gc", "--all"]).output().unwrap();
    assert_eq!(code(&gc), 0, "{}{}", stdout(&gc), stderr(&gc));
    let said = stdout(&gc);
    assert!(said.contains(&format!("deleted bridge {BRIDGE}")), "{said}");
    assert!(said.contains(&format!("removed nftables table repeatr-{BRIDGE}")), "{said}");
    assert!(said.contains("turned off IPv4 forwarding"), "{said}");
    assert!(!s.host_has_link(BRIDGE));
    assert_eq!(s.host_ruleset(), "", "nothing of repeatr's is left");
    assert_eq!(s.host_forwarding(), "0");
    // And the next run sets it all up again.
    let out = s.sh(&[], FETCH);
    assert_eq!((code(&out), stdout(&out)), (0, format!("peer {UPLINK}\n")), "{}", stderr(&out));
    s.finish();
}

#[test]
fn with_egress_none_a_job_cannot_reach_out_and_the_host_is_untouched() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("none");
    let servers = s.servers();
    let out = s.sh(
        &[],
        &format!("cat /etc/resolv.conf; {FETCH} | grep -q peer && echo REACHED-OUT; nslookup web{DOMAIN}; true"),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.starts_with("# no DNS: network.egress is \"none\""), "{said}");
    assert!(!said.contains("REACHED-OUT") && !said.contains("peer "), "{said}");
    assert_eq!(servers.dns_queries.load(Ordering::SeqCst), 0, "no query reached the DNS server");
    assert_eq!(s.host_forwarding(), "0");
    assert_eq!(s.host_ruleset(), "");
    assert!(s.host_has_link(BRIDGE), "the bridge itself is made as ever");
    drop(servers);
    s.finish();
}

#[test]
fn a_job_resolves_names_through_the_hosts_nameserver() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let servers = s.servers();
    // The name's address from nslookup's answer, then the page from it.
    let fetch_by_name = format!(
        "addr=$(nslookup web{DOMAIN} | sed -n '/^Name:/,$ s/^Address:* *\\([0-9.]*\\)$/\\1/p' | head -n1); echo \"resolved $addr\"; {}",
        FETCH.replace("198.18.254.2", "$addr")
    );
    let out = s.sh(&[], &format!("cat /etc/resolv.conf; {fetch_by_name}"));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    // The loopback nameserver of the host's file is left out.
    assert!(said.starts_with(&format!("nameserver {WORLD}\n")) && !said.contains("127.0.0.1"), "{said}");
    assert!(said.contains(&format!("resolved {WORLD}\n")), "{said}");
    assert!(said.ends_with(&format!("peer {UPLINK}\n")), "{said}");
    assert!(servers.dns_queries.load(Ordering::SeqCst) > 0);
    drop(servers);
    s.finish();
}

#[test]
fn twenty_concurrent_first_runs_make_one_table() {
    if !require_root() {
        return;
    }
    const RUNS: usize = 20;
    let s = StandIn::new("nat");
    let barrier = Arc::new(Barrier::new(RUNS));
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..RUNS)
            .map(|_| {
                let (s, barrier) = (&s, barrier.clone());
                scope.spawn(move || {
                    let mut c = s.cmd();
                    c.args(["run", "--net", "bridge", "--rootfs"]).arg(s.rootfs.path()).args(["--", "/bin/true"]);
                    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
                    barrier.wait();
                    c.output().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert_eq!(code(out), 0, "{}", stderr(out));
        assert!(stderr(out).is_empty(), "{}", stderr(out));
    }
    let rules = s.host_ruleset();
    assert_eq!(rules.matches("table ").count(), 1, "{rules}");
    // Egress, and the hairpin of published ports.
    assert_eq!(rules.matches("masquerade").count(), 2, "{rules}");
    assert_eq!(rules.matches(" accept\n").count(), 3, "{rules}");
    assert_eq!(rules.matches("map @published").count(), 2, "{rules}");
    assert_eq!(s.host_forwarding(), "1");
    s.finish();
}

#[test]
fn a_forward_chain_that_drops_is_named_in_one_warning() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let _servers = s.servers();
    // What docker does to a host: iptables' FORWARD policy DROP.
    let nft = |script: &str| {
        let out = s.in_host(&["nft", script]);
        assert!(out.status.success(), "{script}: {}", stderr(&out));
    };
    nft("add table ip filter");
    nft("add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }");
    let out = s.sh(&[], FETCH);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "dropped on the way");
    // (nc says it timed out: the job's own stderr)
    let warning: String = stderr(&out).lines().filter(|l| l.starts_with("repeatr:")).collect();
    assert_eq!(stderr(&out).matches("repeatr:").count(), 1, "{}", stderr(&out));
    assert!(
        warning.contains("warning:")
            && warning.contains("FORWARD of table ip filter")
            && warning.contains(&format!("iptables -I FORWARD -i {BRIDGE} -j ACCEPT")),
        "{warning}"
    );
    // The remedy it names works.
    let out = s.in_host(&["iptables", "-I", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT"]);
    if out.status.success() {
        let ct = ["-I", "FORWARD", "-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"];
        let out = s.in_host(&[&["iptables"][..], &ct[..]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let out = s.sh(&[], FETCH);
        assert_eq!((code(&out), stdout(&out)), (0, format!("peer {UPLINK}\n")), "{}", stderr(&out));
    } else {
        eprintln!("no iptables here: the remedy is not tried ({})", stderr(&out));
    }
    s.finish();
}

/// A mount namespace of its own for the runner, where /usr/sbin/nft (and
/// /sbin/nft through Debian's merged /usr) is an empty file: a host without
/// nftables, as far as the runner can tell.
fn without_nft(c: &mut Command, empty: &std::path::Path) {
    let empty = std::ffi::CString::new(empty.as_os_str().as_encoded_bytes()).unwrap();
    let target = c"/usr/sbin/nft";
    // SAFETY: unshare and mount are plain syscalls, fine between fork and
    // exec; the strings outlive the child's use of them (moved in).
    unsafe {
        c.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(empty.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn bad_input_is_one_line_125_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let nothing_left = |what: &str| {
        assert!(!s.host_has_link(BRIDGE), "{what}: the bridge was made");
        assert_eq!(s.host_ruleset(), "", "{what}");
        assert_eq!(s.host_forwarding(), "0", "{what}");
        let leases = s.cmd().args(["leases", "--json"]).output().unwrap();
        assert_eq!(stdout(&leases).trim(), "[]", "{what}: {}", stderr(&leases));
        assert!(!s.repeatr.state.path().join("egress").join(BRIDGE).exists(), "{what}");
    };

    // No nft where egress needs it: says which package.
    let empty = s.repeatr.state.path().join("not-nft");
    std::fs::write(&empty, "").unwrap();
    let mut c = s.cmd();
    c.args(["run", "--net", "bridge", "--rootfs"]).arg(s.rootfs.path()).args(["--", "/bin/true"]);
    without_nft(&mut c, &empty);
    let out = c.stdin(Stdio::null()).output().unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("apt-get install nftables") && err.contains("network.egress"), "{err}");
    nothing_left("nft missing");

    // An egress that is neither nat nor none.
    for value in ["\"NAT\"", "\"masq\"", "1"] {
        let config = s.repeatr.state.path().join("bad.toml");
        std::fs::write(&config, format!("[network]\nbridge = \"{BRIDGE}\"\nsubnet = \"{SUBNET}\"\negress = {value}\n"))
            .unwrap();
        let out = s
            .cmd()
            .env("REPEATR_CONFIG", &config)
            .args(["run", "--net", "bridge", "--rootfs"])
            .arg(s.rootfs.path())
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{value}: {err}");
        assert_eq!(err.lines().count(), 1, "{value}: {err}");
        assert!(err.contains("network.egress") || err.contains("expected a string"), "{value}: {err}");
        nothing_left(value);
    }
    s.finish();
}

#[test]
fn a_job_reaches_a_job_started_before_it_by_name() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let mut c = s.cmd();
    c.args(["run", "--net", "bridge", "--name", "web", "--rootfs"]).arg(s.rootfs.path());
    c.args([
        "--",
        "/bin/sh",
        "-c",
        "echo ready; printf 'HTTP/1.0 200 OK\\r\\n\\r\\nhello from web\\n' | nc -l -p 8000",
    ]);
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut web = Runner::new(child);
    wait_for_line(&mut web, "ready");
    // nc in the job may not listen yet: a few tries.
    let client = "grep -w web /etc/hosts; for i in $(seq 50); do \
        out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 web 8000 2>/dev/null | grep hello) && break; sleep 0.1; done; echo \"$out\"";
    let out = s.sh(&["--name", "client"], client);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.starts_with("198.19.8.") && said.lines().next().unwrap().ends_with("\tweb"), "{said}");
    assert!(said.ends_with("hello from web\n"), "{said}");
    assert!(web.wait().unwrap().success(), "the web job ended after its one answer");
    drop(web);
    s.finish();
}

/// A job serving `count` HTTP answers ("hello 1", "hello 2", ...) on its
/// port 80, published as `publish`; its runner, once it said "ready".
fn web_job(s: &StandIn, name: &str, publish: &[&str], count: u32) -> Runner {
    let mut c = s.cmd();
    c.args(["run", "--net", "bridge", "--name", name, "--rootfs"]).arg(s.rootfs.path());
    for p in publish {
        c.args(["--publish", p]);
    }
    let script = format!(
        "echo ready; for i in $(seq {count}); do printf 'HTTP/1.0 200 OK\\r\\n\\r\\nhello %s\\n' $i | nc -l -p 80 >/dev/null; done"
    );
    c.args(["--", "/bin/sh", "-c", &script]);
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut web = Runner::new(child);
    wait_for_line(&mut web, "ready");
    web
}

/// An HTTP GET of `addr` from a thread in the netns `ns`: the body's
/// "hello" line. Retried while nothing listens yet (the job's nc starts
/// after its "ready").
fn get_from(ns: &File, addr: SocketAddr) -> String {
    let ns = ns.try_clone().unwrap();
    std::thread::spawn(move || {
        enter(&ns);
        let mut last = String::new();
        for _ in 0..50 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                    let mut got = String::new();
                    let _ = s.read_to_string(&mut got);
                    if let Some(line) = got.lines().find(|l| l.starts_with("hello")) {
                        return line.to_string();
                    }
                    last = format!("answer {got:?}");
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no answer from {addr}: {last}");
    })
    .join()
    .unwrap()
}

/// The elements of the stand-in host's `published` map, as `tcp . 18080 :
/// 198.19.8.2 . 80` (without the timeout and expiry `nft` shows).
fn published(s: &StandIn) -> Vec<String> {
    let out = s.in_host(&["nft", "list", "map", "ip", &format!("repeatr-{BRIDGE}"), "published"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let Some(start) = text.find("elements = {") else { return Vec::new() };
    let end = text[start..].find('}').unwrap() + start;
    let element = |e: &str| {
        let (key, value) = e.split_once(" : ").unwrap();
        format!("{} : {}", key.split_whitespace().take(3).collect::<Vec<_>>().join(" "), value.trim())
    };
    text[start + 12..end].split(',').map(str::trim).filter(|e| !e.is_empty()).map(element).collect()
}

#[test]
fn a_published_port_reaches_the_job_from_outside_the_host_and_other_jobs() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let mut web = web_job(&s, "web", &["18080:80"], 3);
    let elements = published(&s);
    assert_eq!(elements.len(), 1, "{elements:?}");
    assert!(elements[0].starts_with("tcp . 18080 : 198.19.8.") && elements[0].ends_with(" . 80"), "{elements:?}");

    // A second live job asking for the host port is refused, naming the first.
    let out = s.sh(&["--name", "second", "-p", "18080:81"], "echo RAN");
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("host port 18080/tcp is published by job web"), "{err}");
    assert!(!stdout(&out).contains("RAN"));
    assert_eq!(published(&s), elements, "the first job's element is untouched");

    // From the internet, to the stand-in host's address.
    let uplink = SocketAddr::from((UPLINK, 18080));
    assert_eq!(get_from(&s.world_ns, uplink), "hello 1");
    // From the host itself (the output hook).
    assert_eq!(get_from(&s.host_ns, uplink), "hello 2");
    // From another job, through the host's address (hairpin).
    let out =
        s.sh(&["--name", "client"], "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 198.18.254.1 18080 | grep hello");
    assert_eq!((code(&out), stdout(&out)), (0, "hello 3\n".to_string()), "{}", stderr(&out));

    assert!(web.wait().unwrap().success(), "web ends after its three answers");
    drop(web);
    assert_eq!(published(&s), Vec::<String>::new(), "the element went with the job");
    let leases = s.cmd().args(["leases", "--json"]).output().unwrap();
    assert_eq!(stdout(&leases).trim(), "[]", "{}", stderr(&leases));
    s.finish();
}

#[test]
fn a_killed_runners_published_ports_are_reclaimed_by_gc_and_by_the_next_run() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let publish = ["18081:80", "15353:53/udp"];
    let kill = |web: Runner| {
        let mut child = web.into_inner();
        child.kill().unwrap(); // SIGKILL: no teardown
        child.wait().unwrap();
    };

    let web = web_job(&s, "web", &publish, 1);
    let elements = published(&s);
    assert_eq!(elements.len(), 2, "{elements:?}");
    assert!(elements.iter().any(|e| e.starts_with("udp . 15353 : 198.19.8.") && e.ends_with(" . 53")), "{elements:?}");
    kill(web);
    assert_eq!(published(&s), elements, "a SIGKILLed runner leaves its elements");
    let gc = s.cmd().arg("gc").output().unwrap();
    assert_eq!(code(&gc), 0, "{}{}", stdout(&gc), stderr(&gc));
    assert!(stdout(&gc).contains("unpublished host port 18081/tcp of dead job web"), "{}", stdout(&gc));
    assert_eq!(published(&s), Vec::<String>::new(), "gc deleted them");

    let web = web_job(&s, "web", &publish, 1);
    kill(web);
    assert_eq!(published(&s).len(), 2);
    let out = s.sh(&[], "true");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(published(&s), Vec::<String>::new(), "the next run deleted them");

    // And the ports are free for the next job.
    let web = web_job(&s, "web2", &publish, 1);
    assert_eq!(get_from(&s.world_ns, SocketAddr::from((UPLINK, 18081))), "hello 1");
    drop(web);
    s.finish();
}

#[test]
fn bad_publish_input_is_one_line_125_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    let none = s.repeatr.state.path().join("egress-none.toml");
    std::fs::write(&none, format!("[network]\nbridge = \"{BRIDGE}\"\nsubnet = \"{SUBNET}\"\negress = \"none\"\n"))
        .unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "0:80"], "out of range"),
        (&["-p", "70000:80"], "out of range"),
        (&["-p", "8080:99999"], "out of range"),
        (&["-p", "8080"], "malformed"),
        (&["-p", "http:80"], "malformed"),
        (&["-p", "8080:80/sctp"], "malformed"),
        (&["-p", "8080:80", "--publish", "8080:81/tcp"], "both ask for host port 8080/tcp"),
        (&["--net", "none", "-p", "8080:80"], "needs --net bridge"),
        (&["-p", "8080:80", "--config", none.to_str().unwrap()], "needs network.egress = \"nat\""),
    ];
    for (args, said) in cases {
        let mut c = s.cmd();
        c.arg("run").args(*args).arg("--rootfs").arg(s.rootfs.path()).args(["--", "/bin/sh", "-c", "echo RAN"]);
        let out = c.stdin(Stdio::null()).output().unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(!stdout(&out).contains("RAN"), "{args:?}");
        assert!(!s.host_has_link(BRIDGE), "{args:?}: the bridge was made");
        assert_eq!(s.host_ruleset(), "", "{args:?}");
        assert_eq!(s.host_forwarding(), "0", "{args:?}");
        let leases = s.cmd().args(["leases", "--json"]).output().unwrap();
        assert_eq!(stdout(&leases).trim(), "[]", "{args:?}: {}", stderr(&leases));
    }
    s.finish();
}

#[test]
fn a_legacy_iptables_forward_drop_is_named_in_one_warning() {
    if !require_root() {
        return;
    }
    let s = StandIn::new("nat");
    // Loads x_tables on the host if it is not yet (a module, no rule);
    // the table and its policy are the stand-in's.
    let out = s.in_host(&["iptables-legacy", "-P", "FORWARD", "DROP"]);
    if !out.status.success() {
        eprintln!("no iptables-legacy here (apt-get install iptables): not tried ({})", stderr(&out));
        return s.finish();
    }
    let out = s.sh(&[], "true");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("repeatr:").count(), 1, "{err}");
    assert!(
        err.contains("warning: the chain FORWARD of legacy iptables' (x_tables) table filter drops")
            && err.contains(&format!("iptables-legacy -I FORWARD -i {BRIDGE} -j ACCEPT")),
        "{err}"
    );
    s.finish();
}
