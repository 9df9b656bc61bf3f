//! Egress by NAT (`network.egress = "nat"`): one nftables table of
//! repeatr's per bridge, `table ip repeatr-<bridge>`, which masquerades
//! the bridge's subnet leaving through any other interface and accepts
//! what is forwarded from the bridge and the replies to it; plus IPv4
//! forwarding. What netavark and docker set up, without their per-
//! container chains: nothing here depends on a job, so it is done once
//! per bridge bring-up (`job::egress` decides when), never per job.
//!
//! Driven through the `nft` program (what netavark's `nftables` crate
//! does too, with JSON): one exec (~5 ms here) per bring-up replaces the
//! whole table in one transaction, so concurrent bring-ups leave one
//! table, and a runner carries no netfilter code. All of it acts in the
//! network namespace the runner runs in (`/proc/sys/net` is per netns).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::error::NetworkError;

/// IPv4 forwarding of the runner's network namespace.
pub const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

/// Where `nft` is looked for besides `PATH`: a root shell's PATH has the
/// sbin dirs, a cron job's or a CI runner's may not.
const SBIN: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// The x_tables tables of the runner's network namespace, one name a line;
/// the file exists only while the `ip_tables` module is loaded.
const XTABLES_NAMES: &str = "/proc/net/ip_tables_names";

/// The `nft` program.
#[derive(Clone, Debug)]
pub struct Nft {
    path: PathBuf,
}

/// The table of `bridge`'s NAT: the bridge's name is a valid nft
/// identifier after the prefix (`config::check_bridge`: letters, digits,
/// `_`, `.`, `-`).
pub fn table_name(bridge: &str) -> String {
    format!("repeatr-{bridge}")
}

impl Nft {
    /// Finds `nft`; missing, it says which package has it.
    pub fn find() -> Result<Nft, NetworkError> {
        find_program("nft").map(|path| Nft { path }).ok_or(NetworkError::NftMissing)
    }

    /// Runs `script` as one `nft -f -` transaction; its stdout.
    fn run(&self, op: &str, script: &str) -> Result<String, NetworkError> {
        let fail = |reason: String| NetworkError::Firewall { op: op.to_string(), reason };
        let mut child = Command::new(&self.path)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", self.path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(|e| fail(format!("writing to nft: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
            return Err(fail(format!("nft {}: {first}", out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `name` in `PATH`, then in the sbin dirs.
fn find_program(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = std::env::split_paths(&path_dirs).chain(SBIN.iter().map(PathBuf::from));
    dirs.find_map(|dir| Some(dir.join(name)).filter(|p| is_executable(p)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The map of published ports in every bridge's table (`port_map`).
pub const PUBLISHED_MAP: &str = "published";

/// The layout of the table [`nat_script`] makes, recorded with it
/// (`state::EgressMark::layout`): a record of another layout is set up
/// again, so a table made before the `published` map existed gets it.
pub const TABLE_LAYOUT: u32 = 2;

/// The whole table, replacing any table of that name in the same
/// transaction (`add` first, so that `delete` never fails on a fresh
/// host): a reader never sees it half made, and any number of bring-ups
/// leave exactly one.
///
/// Masquerade whatever of the subnet leaves by another interface than the
/// bridge (job to job stays on the bridge, unrouted). The forward chain
/// accepts from the bridge, and towards it only replies (`ct state
/// established,related`) and the connections to published ports (`ct
/// status dnat`): nothing else outside reaches a job unasked. Another
/// table's forward chain can still drop the same packets (an accept is
/// final only within its own chain): see [`forward_drops`].
///
/// Published ports (`port_map`, one element per port): whatever comes in
/// for a local address of the host (`fib daddr type local`, every address
/// of every interface) to a published port is DNATed to its job, in
/// prerouting for other hosts and in output for the host's own
/// processes, but for loopback addresses (a packet from 127.0.0.1 is not
/// routed out of `lo` unless `route_localnet` is on, which would open the
/// host's loopback services to its neighbours: CVE-2020-8558). A job that reaches another through the host's address
/// (hairpin) is masqueraded behind the gateway, or the other job would
/// answer it directly, from an address it never asked.
pub fn nat_script(bridge: &str, subnet: Ipv4Net) -> String {
    let t = table_name(bridge);
    let map = PUBLISHED_MAP;
    format!(
        "add table ip {t}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tmap {map} {{\n\
         \t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\
         \t\tflags timeout\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local dnat ip to meta l4proto . th dport map @{map}\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @{map}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t\toifname \"{bridge}\" ip saddr {subnet} ct status dnat masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ip saddr {subnet} accept\n\
         \t\toifname \"{bridge}\" ip daddr {subnet} ct state established,related accept\n\
         \t\toifname \"{bridge}\" ip daddr {subnet} ct status dnat accept\n\
         \t}}\n\
         }}\n"
    )
}

/// A base chain of another table that drops forwarded packets by default
/// (iptables' `FORWARD` policy DROP, which docker sets, or an nftables
/// firewall's): jobs' packets die there whatever repeatr's table accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppingChain {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// A chain of legacy iptables (x_tables, `iptables-legacy`), which
    /// nftables neither lists nor overrides.
    pub legacy: bool,
}

impl DroppingChain {
    /// One line: what drops, and the two rules that let the bridge through.
    pub fn warning(&self, bridge: &str) -> String {
        let DroppingChain { family, table, chain, legacy } = self;
        // Replies and connections to published ports (conntrack's DNAT
        // state) towards the bridge; anything from it.
        let fix = if *legacy || (family == "ip" && table == "filter") {
            let ipt = if *legacy { "iptables-legacy" } else { "iptables" };
            format!(
                "{ipt} -I {chain} -i {bridge} -j ACCEPT && {ipt} -I {chain} -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"
            )
        } else {
            format!(
                "nft insert rule {family} {table} {chain} iifname {bridge} accept && nft insert rule {family} {table} {chain} oifname {bridge} ct state established,related accept && nft insert rule {family} {table} {chain} oifname {bridge} ct status dnat accept"
            )
        };
        let which = if *legacy {
            format!("the chain {chain} of legacy iptables' (x_tables) table {table}")
        } else {
            format!("the forward chain {chain} of table {family} {table}")
        };
        format!(
            "warning: {which} drops forwarded packets (policy drop), so jobs on {bridge} cannot reach beyond this host; let them through: {fix} (or set network.egress = \"none\")"
        )
    }
}

/// Sets `bridge`'s NAT up (see [`nat_script`]) and lists, in the same
/// exec, the chains of other tables that would drop its traffic.
pub fn bring_up(nft: &Nft, bridge: &str, subnet: Ipv4Net) -> Result<Vec<DroppingChain>, NetworkError> {
    let script = format!("{}list chains\n", nat_script(bridge, subnet));
    let listing = nft.run(&format!("set up NAT for bridge {bridge}"), &script)?;
    let mut found = forward_drops(&listing, &table_name(bridge));
    found.extend(legacy_forward_drop());
    Ok(found)
}

/// Legacy iptables' FORWARD chain, if its policy is DROP: x_tables hooks
/// into forwarding beside nftables, and `nft list chains` does not show
/// it. Looked at only where this netns has an x_tables `filter` table
/// (`/proc/net/ip_tables_names`): `iptables-legacy` would otherwise load
/// the module and make the table, a change to the host of its own. Read
/// with `iptables-legacy -S FORWARD` (one exec, on the set-up path only);
/// without that program nothing is said.
pub fn legacy_forward_drop() -> Option<DroppingChain> {
    let names = std::fs::read_to_string(XTABLES_NAMES).ok()?;
    if !names.lines().any(|l| l.trim() == "filter") {
        return None;
    }
    let Some(ipt) = find_program("iptables-legacy") else {
        log::debug!("an x_tables filter table exists, but no iptables-legacy to read its FORWARD policy");
        return None;
    };
    let out = Command::new(&ipt).args(["-w", "-S", "FORWARD"]).stdin(Stdio::null()).output();
    match out {
        Ok(out) if out.status.success() => legacy_policy_drops(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            log::debug!("{} -S FORWARD: {}", ipt.display(), String::from_utf8_lossy(&out.stderr).trim());
            None
        }
        Err(e) => {
            log::debug!("cannot run {}: {e}", ipt.display());
            None
        }
    }
}

/// The FORWARD chain as a dropping chain if `iptables -S FORWARD` output
/// says its policy is DROP.
pub fn legacy_policy_drops(listing: &str) -> Option<DroppingChain> {
    listing.lines().any(|l| l.split_whitespace().eq(["-P", "FORWARD", "DROP"])).then(|| DroppingChain {
        family: "ip".into(),
        table: "filter".into(),
        chain: "FORWARD".into(),
        legacy: true,
    })
}

/// The forward-hook base chains with policy drop in `nft list chains`
/// output, but those of `own` table.
pub fn forward_drops(listing: &str, own: &str) -> Vec<DroppingChain> {
    let mut found = Vec::new();
    let (mut table, mut chain): (Option<(String, String)>, Option<String>) = (None, None);
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", family, name, "{"] => table = Some((family.to_string(), name.to_string())),
            ["chain", name, "{"] => chain = Some(name.to_string()),
            _ if line.contains("hook forward") && line.contains("policy drop") => {
                if let (Some((family, t)), Some(c)) = (&table, &chain)
                    && t != own
                {
                    found.push(DroppingChain {
                        family: family.clone(),
                        table: t.clone(),
                        chain: c.clone(),
                        legacy: false,
                    });
                }
            }
            _ => {}
        }
    }
    found
}

/// Deletes `bridge`'s table; whether there was one.
pub fn remove(nft: &Nft, bridge: &str) -> Result<bool, NetworkError> {
    let t = table_name(bridge);
    let tables = nft.run("list nftables tables", "list tables\n")?;
    if !tables.lines().any(|l| l.trim() == format!("table ip {t}")) {
        return Ok(false);
    }
    nft.run(&format!("delete the NAT of bridge {bridge}"), &format!("delete table ip {t}\n"))?;
    Ok(true)
}

/// The network namespace this thread is in, as its nsfs inode number
/// (`net:[N]` in `ls -l /proc/self/ns/net`): unique among live
/// namespaces. The NAT and forwarding a run sets up are this namespace's.
pub fn current_netns() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Whether IPv4 forwarding is on in the runner's network namespace.
pub fn forwarding() -> io::Result<bool> {
    Ok(std::fs::read_to_string(FORWARDING)?.trim() == "1")
}

/// Turns IPv4 forwarding of the runner's network namespace on or off.
pub fn set_forwarding(on: bool) -> Result<(), NetworkError> {
    std::fs::write(FORWARDING, if on { "1\n" } else { "0\n" }).map_err(|e| NetworkError::Firewall {
        op: format!("turn IPv4 forwarding {}", if on { "on" } else { "off" }),
        reason: format!("writing {FORWARDING}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_replaces_one_table_of_the_bridge() {
        let s = nat_script("rb0", "198.19.7.0/24".parse().unwrap());
        assert!(s.starts_with("add table ip repeatr-rb0\ndelete table ip repeatr-rb0\ntable ip repeatr-rb0 {"), "{s}");
        assert!(s.contains("ip saddr 198.19.7.0/24 oifname != \"rb0\" masquerade"), "{s}");
        assert!(s.contains("oifname \"rb0\" ip daddr 198.19.7.0/24 ct state established,related accept"), "{s}");
    }

    #[test]
    fn dropping_forward_chains_are_found_but_our_own() {
        let listing = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable inet fw {\n\tchain fwd {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\ntable ip repeatr-rb0 {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        let found = forward_drops(listing, "repeatr-rb0");
        let filter =
            DroppingChain { family: "ip".into(), table: "filter".into(), chain: "FORWARD".into(), legacy: false };
        assert_eq!(found, vec![filter]);
        let w = found[0].warning("rb0");
        assert!(!w.contains('\n') && w.contains("iptables -I FORWARD -i rb0 -j ACCEPT"), "{w}");
        let other = DroppingChain { family: "inet".into(), table: "fw".into(), chain: "fwd".into(), legacy: false };
        assert!(other.warning("rb0").contains("nft insert rule inet fw fwd iifname rb0 accept"));
    }

    #[test]
    fn a_legacy_forward_policy_drop_is_found_and_named_as_legacy() {
        assert_eq!(legacy_policy_drops("-P FORWARD ACCEPT\n-A FORWARD -j DROP\n"), None);
        let found = legacy_policy_drops("-P FORWARD DROP\n-A FORWARD -i x -j ACCEPT\n").unwrap();
        let w = found.warning("rb0");
        assert!(
            !w.contains('\n')
                && w.contains("legacy iptables")
                && w.contains("iptables-legacy -I FORWARD -i rb0 -j ACCEPT"),
            "{w}"
        );
    }
}
