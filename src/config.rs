//! Configuration: `/etc/repeatr/config.toml`.
//!
//! Loading turns the file into concrete values (defaults filled in) and runs
//! every check that needs nothing but the file itself, so a `Config` in hand
//! is well-formed. The one check that needs the host (does the subnet collide
//! with a route?) is [`NetworkConfig::validate`], which the caller runs with
//! the routes it read over netlink.
//!
//! The same checks serve the state store, which refuses a malformed lease
//! request with them rather than with a second copy of the rules.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::limits::{LimitStrings, LimitsError};

/// Where the configuration lives unless `--config` names another file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/repeatr/config.toml";
/// Where the default nameservers come from (`network.host_resolv_conf`).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the servers its stub (127.0.0.53) asks: what
/// a job is given when the host's resolv.conf names only the stub, which
/// would be the job's own loopback (podman reads the same file).
pub const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

pub const DEFAULT_BRIDGE: &str = "repeatr0";
pub const DEFAULT_SUBNET: &str = "10.209.0.0/22";
pub const DEFAULT_MTU: u32 = 1500;
/// Host veths are `{bridge}-{slot}` with slot up to 4 digits: 10 + 1 + 4 = 15
/// bytes, the kernel's limit for an interface name (IFNAMSIZ - 1).
pub const MAX_BRIDGE_NAME: usize = 10;
/// 68 is the IPv4 minimum (RFC 791); 65535 the largest an IPv4 packet can
/// use, and what the kernel's bridge and veth accept at most.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Every way the configuration can be wrong. Each message is one line: what
/// is wrong, where, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}; create it or pass another --config", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}{}: {message}; fix or remove that key", path.display(), Line(*line))]
    Syntax { path: PathBuf, line: Option<usize>, message: String },
    #[error("{key} = {value:?} in {}: {problem}", path.display())]
    Value { key: &'static str, value: String, problem: String, path: PathBuf },
    #[error(
        "network.subnet {subnet} overlaps the host route {route} on {dev}; pick a free range and set network.subnet in {}",
        path.display()
    )]
    RouteOverlap { subnet: Ipv4Net, route: Ipv4Net, dev: String, path: PathBuf },
    #[error("{err} in {}", path.display())]
    Limits { err: LimitsError, path: PathBuf },
}

/// Renders `:LINE` after a file name when the parser told us the line.
struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, ":{n}"),
            None => Ok(()),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub network: NetworkConfig,
    /// `[limits]`: every job's defaults, which flags and formulas override.
    pub limits: LimitStrings,
}

/// `[network]`, with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// IPv4 only: jobs get an IPv4 address and nothing else, so an IPv6
    /// nameserver would be unreachable from inside. `network.dns`, else
    /// (with egress) the host's non-loopback nameservers; empty without
    /// either.
    pub dns: Vec<Ipv4Addr>,
    /// Whether jobs reach beyond the host (`network.egress`).
    pub egress: Egress,
    /// The file the values came from (or would have), named in messages so
    /// the user knows which file to edit.
    pub source: PathBuf,
}

/// The file as written: everything optional, strings parsed by us so that a
/// bad value gets a message naming the key and saying what to do.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    limits: LimitStrings,
    #[serde(default)]
    warehouse: crate::remote::WarehouseConfig,
    #[serde(default)]
    cache: RawCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<String>,
    subnet: Option<String>,
    gateway: Option<String>,
    mtu: Option<i64>,
    dns: Option<Vec<String>>,
    egress: Option<String>,
    host_resolv_conf: Option<String>,
}

/// `network.egress`: what a job on the bridge reaches beyond the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Masqueraded behind the host's own addresses, as podman and docker
    /// do by default: the bridge's first run sets up an nftables table of
    /// repeatr's and IPv4 forwarding (`network::egress`).
    Nat,
    /// The bridge and the host only; nothing on the host is changed.
    None,
}

impl Egress {
    pub fn as_str(self) -> &'static str {
        match self {
            Egress::Nat => "nat",
            Egress::None => "none",
        }
    }
}

impl Config {
    /// Loads `explicit`, or the default file. A missing default file means
    /// "all defaults"; a missing file the user named is an error.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (text, path) = read(explicit)?;
        // resolv.conf is only a source of defaults: unreadable means none.
        Config::parse_with(&text, path, &|p| std::fs::read_to_string(p).unwrap_or_default())
    }

    /// `[limits]` alone, checked: what every job needs from the file, so a
    /// job without network reads nothing else (and a `[network]` only a
    /// bridge needs cannot fail it). A missing file, even one the user
    /// named, means no limits from it: a job without network has never
    /// needed the file, and one with network is told when it loads it.
    pub fn load_limits(explicit: Option<&Path>) -> Result<LimitStrings, ConfigError> {
        let (text, path) = match read(explicit) {
            Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LimitStrings::default());
            }
            other => other?,
        };
        let raw = parse_raw(&text, path)?;
        check_limits(&raw.limits, path)?;
        Ok(raw.limits)
    }

    /// `[warehouse]` alone: where wares are looked for and saved when no
    /// flag says, and how S3 is reached. A missing file means none, as for
    /// `load_limits`.
    pub fn load_warehouse(explicit: Option<&Path>) -> Result<crate::remote::WarehouseConfig, ConfigError> {
        let (text, path) = match read(explicit) {
            Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Default::default());
            }
            other => other?,
        };
        Ok(parse_raw(&text, path)?.warehouse)
    }

    /// `[cache]` alone, defaults filled in (a missing file means all
    /// defaults, as for [`load_limits`](Config::load_limits)).
    pub fn load_cache(explicit: Option<&Path>) -> Result<CacheConfig, ConfigError> {
        let (text, path) = match read(explicit) {
            Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CacheConfig::default());
            }
            other => other?,
        };
        CacheConfig::from_raw(parse_raw(&text, path)?.cache, path)
    }

    /// Parses configuration text; `source` is the file named in messages and
    /// `resolv_conf` the text every resolv.conf read gives (the host's and
    /// systemd-resolved's alike).
    pub fn parse(text: &str, source: &Path, resolv_conf: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, source, &|_| resolv_conf.to_string())
    }

    /// [`Config::parse`], with `read` giving the text of the resolv.conf
    /// files the default nameservers come from (read only when
    /// `network.dns` is not set and egress is on).
    pub fn parse_with(text: &str, source: &Path, read: &dyn Fn(&Path) -> String) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, source)?;
        check_limits(&raw.limits, source)?;
        let network = NetworkConfig::from_raw(raw.network, source, read)?;
        Ok(Config { network, limits: raw.limits })
    }
}

/// The file's text (empty for a missing default file: "all defaults"; a
/// missing file the user named is an error) and its path.
fn read(explicit: Option<&Path>) -> Result<(String, &Path), ConfigError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((text, path)),
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => Ok((String::new(), path)),
        Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
    }
}

fn parse_raw(text: &str, source: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: source.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().to_string(),
    })
}

fn check_limits(limits: &LimitStrings, source: &Path) -> Result<(), ConfigError> {
    limits.parse(false).map(drop).map_err(|err| ConfigError::Limits { err, path: source.to_path_buf() })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

impl NetworkConfig {
    fn from_raw(raw: RawNetwork, source: &Path, read: &dyn Fn(&Path) -> String) -> Result<NetworkConfig, ConfigError> {
        let bad = |key, value: &str, problem: String| ConfigError::Value {
            key,
            value: value.to_string(),
            problem,
            path: source.to_path_buf(),
        };
        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        let subnet_text = raw.subnet.as_deref().unwrap_or(DEFAULT_SUBNET);
        let subnet = parse_subnet(subnet_text).map_err(|p| bad("network.subnet", subnet_text, p))?;
        let gateway = match raw.gateway.as_deref() {
            Some(g) => parse_ipv4(g).map_err(|p| bad("network.gateway", g, p))?,
            // A /31 or /32 has no first host; check_subnet reports that below.
            None => first_host(subnet).unwrap_or(subnet.network()),
        };
        let mtu = match raw.mtu {
            Some(m) => u32::try_from(m).map_err(|_| bad("network.mtu", &m.to_string(), mtu_problem()))?,
            None => DEFAULT_MTU,
        };
        let egress = match raw.egress.as_deref() {
            None | Some("nat") => Egress::Nat,
            Some("none") => Egress::None,
            Some(other) => {
                return Err(bad(
                    "network.egress",
                    other,
                    "must be \"nat\" (jobs reach beyond the host, masqueraded) or \"none\" (the bridge and the host only)"
                        .into(),
                ));
            }
        };
        if let Some(p) = raw.host_resolv_conf.as_deref()
            && !Path::new(p).is_absolute()
        {
            return Err(bad("network.host_resolv_conf", p, "must be an absolute path, like /etc/resolv.conf".into()));
        }
        let dns = match raw.dns {
            Some(list) if list.len() > MAX_NAMESERVERS => {
                return Err(bad(
                    "network.dns",
                    &format!("{} entries", list.len()),
                    format!("a job's resolver reads at most {MAX_NAMESERVERS} nameservers; list at most that many"),
                ));
            }
            Some(list) => {
                list.iter().map(|d| parse_ipv4(d).map_err(|p| bad("network.dns", d, p))).collect::<Result<_, _>>()?
            }
            None if egress == Egress::None => Vec::new(),
            None => {
                let host = raw.host_resolv_conf.as_deref().map_or(Path::new(RESOLV_CONF), Path::new);
                host_nameservers(&read(host), || read(Path::new(RESOLVED_UPSTREAMS)))
            }
        };
        let net = NetworkConfig { bridge, subnet, gateway, mtu, dns, egress, source: source.to_path_buf() };
        net.check_local()?;
        Ok(net)
    }

    /// Every check: the file-only ones again (the struct may have been built
    /// by hand) and the subnet against the host's routes, given as
    /// `(destination, device)`.
    pub fn validate(&self, host_routes: &[(Ipv4Net, String)]) -> Result<(), ConfigError> {
        self.check_local()?;
        for (route, dev) in host_routes {
            // The bridge's own connected route is ours, and a default route
            // (prefix 0) "overlaps" everything without being a conflict:
            // more specific routes win over it.
            if *dev == self.bridge || route.prefix_len() == 0 {
                continue;
            }
            if route.contains(&self.subnet) || self.subnet.contains(route) {
                return Err(ConfigError::RouteOverlap {
                    subnet: self.subnet,
                    route: *route,
                    // Blackhole and unreachable routes have no device.
                    dev: if dev.is_empty() { "no device (blackhole or unreachable)".into() } else { dev.clone() },
                    path: self.source.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_local(&self) -> Result<(), ConfigError> {
        let bad =
            |key, value: String, problem: String| ConfigError::Value { key, value, problem, path: self.source.clone() };
        check_bridge(&self.bridge).map_err(|p| bad("network.bridge", self.bridge.clone(), p))?;
        check_subnet(self.subnet).map_err(|p| bad("network.subnet", self.subnet.to_string(), p))?;
        check_gateway(self.subnet, self.gateway).map_err(|p| bad("network.gateway", self.gateway.to_string(), p))?;
        if !MTU_RANGE.contains(&self.mtu) {
            return Err(bad("network.mtu", self.mtu.to_string(), mtu_problem()));
        }
        Ok(())
    }
}

fn mtu_problem() -> String {
    format!("must be {}..={}; 1500 suits most networks", MTU_RANGE.start(), MTU_RANGE.end())
}

/// A bridge name that leaves room for `-{slot}` in an interface name and is
/// safe as a path component (the state dir keeps `slots/{bridge}/`).
/// Returns the problem, phrased to follow "key = value in file: ".
pub fn check_bridge(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_BRIDGE_NAME {
        return Err(format!(
            "must be 1..={MAX_BRIDGE_NAME} bytes, so that host veths named {{bridge}}-{{slot}} fit the kernel's 15-byte limit"
        ));
    }
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok_chars || name == "." || name == ".." {
        return Err("use only letters, digits, '_', '.' and '-' (and not \".\" or \"..\")".to_string());
    }
    Ok(())
}

/// An IPv4 subnet we can lease from: canonical, with at least two hosts.
pub fn check_subnet(subnet: Ipv4Net) -> Result<(), String> {
    if subnet.trunc() != subnet {
        return Err(format!("has host bits set; write it as {}", subnet.trunc()));
    }
    if subnet.prefix_len() > 30 {
        return Err(format!(
            "/{} leaves no room for a gateway and a job; use /30 or larger (e.g. /24)",
            subnet.prefix_len()
        ));
    }
    Ok(())
}

/// The gateway must be a host address of the subnet.
pub fn check_gateway(subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<(), String> {
    if !subnet.contains(&gateway) {
        return Err(format!("is outside {subnet}; use a host address of the subnet or leave it out"));
    }
    if let Some(what) = reserved_role(subnet, gateway) {
        return Err(format!("is the {what} of {subnet}; use a host address or leave it out"));
    }
    Ok(())
}

/// Names the role of an address that can never be a host's.
pub fn reserved_role(subnet: Ipv4Net, ip: Ipv4Addr) -> Option<&'static str> {
    if ip == subnet.network() {
        Some("network address")
    } else if ip == subnet.broadcast() {
        Some("broadcast address")
    } else {
        None
    }
}

fn first_host(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.network()).checked_add(1).map(Ipv4Addr::from)?;
    (subnet.prefix_len() <= 30).then_some(first)
}

fn parse_subnet(text: &str) -> Result<Ipv4Net, String> {
    match text.trim().parse::<IpNet>() {
        Ok(IpNet::V4(net)) => Ok(net),
        Ok(IpNet::V6(_)) => Err("is IPv6; jobs get IPv4 addresses, give an IPv4 subnet like 10.209.0.0/22".into()),
        Err(_) => Err("is not a subnet; write it as ADDRESS/PREFIX, like 10.209.0.0/22".into()),
    }
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    match text.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => Err("is IPv6; jobs get IPv4 only, give an IPv4 address".into()),
        Err(_) => Err("is not an IPv4 address; write it like 10.209.0.1".into()),
    }
}

/// glibc's and musl's resolvers read the first three `nameserver` lines
/// (MAXNS) and ignore the rest: more is never useful, and a long list only
/// makes the job's resolv.conf (sent to the child on the go pipe) large.
pub const MAX_NAMESERVERS: usize = 3;

/// The host's usable nameservers, the first [`MAX_NAMESERVERS`]: a loopback
/// one (systemd-resolved's 127.0.0.53, a local dnsmasq) would point at the
/// job's own loopback.
pub fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|w| w.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .take(MAX_NAMESERVERS)
        .collect()
}

/// The nameservers a job with egress is given by default: the host's
/// non-loopback ones; where the host lists only loopback ones (systemd-
/// resolved's stub 127.0.0.53), the upstream servers that stub asks, from
/// `resolved()` (the text of [`RESOLVED_UPSTREAMS`]), as podman does.
pub fn host_nameservers(host_resolv_conf: &str, resolved: impl FnOnce() -> String) -> Vec<Ipv4Addr> {
    let own = nameservers(host_resolv_conf);
    let lists_loopback = host_resolv_conf.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("nameserver")
            && w.next().and_then(|a| a.parse::<IpAddr>().ok()).is_some_and(|a| a.is_loopback())
    });
    if own.is_empty() && lists_loopback { nameservers(&resolved()) } else { own }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLV: &str = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver 2001:db8::1\nsearch x\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/repeatr/config.toml"), RESOLV)
    }

    fn err(text: &str) -> String {
        let e = parse(text).expect_err("config should be refused").to_string();
        assert!(!e.contains('\n'), "error is not one line: {e}");
        e
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.network.bridge, "repeatr0");
        assert_eq!(c.network.subnet, "10.209.0.0/22".parse::<Ipv4Net>().unwrap());
        assert_eq!(c.network.gateway, Ipv4Addr::new(10, 209, 0, 1));
        assert_eq!(c.network.mtu, 1500);
        assert_eq!(c.network.dns, vec![Ipv4Addr::new(192, 0, 2, 53)]);
    }

    #[test]
    fn explicit_values() {
        let c = parse(
            "[network]\nbridge = \"rp_1.a-b\"\nsubnet = \"198.18.4.0/24\"\ngateway = \"198.18.4.254\"\nmtu = 9000\ndns = [\"198.18.0.53\"]\n",
        )
        .unwrap();
        assert_eq!(c.network.bridge, "rp_1.a-b");
        assert_eq!(c.network.gateway, Ipv4Addr::new(198, 18, 4, 254));
        assert_eq!(c.network.mtu, 9000);
        assert_eq!(c.network.dns, vec![Ipv4Addr::new(198, 18, 0, 53)]);
    }

    #[test]
    fn missing_default_file_is_defaults_but_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = Config::load(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.toml") && e.contains("cannot read"), "{e}");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[network]\nmtu = 1400\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().network.mtu, 1400);
    }

    #[test]
    fn non_canonical_subnet() {
        let e = err("[network]\nsubnet = \"198.18.0.5/24\"\n");
        assert!(e.contains("network.subnet") && e.contains("198.18.0.0/24"), "{e}");
    }

    #[test]
    fn ipv6_subnet() {
        let e = err("[network]\nsubnet = \"fd00::/64\"\n");
        assert!(e.contains("network.subnet") && e.contains("IPv6"), "{e}");
    }

    #[test]
    fn slash_31_and_32() {
        for p in ["198.18.0.0/31", "198.18.0.1/32"] {
            let e = err(&format!("[network]\nsubnet = \"{p}\"\n"));
            assert!(e.contains("network.subnet") && e.contains("/30 or larger"), "{e}");
        }
    }

    #[test]
    fn garbage_subnet() {
        let e = err("[network]\nsubnet = \"ten.0/8\"\n");
        assert!(e.contains("ADDRESS/PREFIX"), "{e}");
    }

    #[test]
    fn bad_gateway() {
        for (gw, what) in [
            ("198.18.1.1", "outside"),
            ("198.18.0.0", "network address"),
            ("198.18.0.255", "broadcast address"),
            ("fd00::1", "IPv6"),
        ] {
            let e = err(&format!("[network]\nsubnet = \"198.18.0.0/24\"\ngateway = \"{gw}\"\n"));
            assert!(e.contains("network.gateway") && e.contains(what), "{e}");
        }
    }

    #[test]
    fn bad_bridge_name() {
        for name in ["", "waytoolongname", "br/0", "br 0", "..", "brü"] {
            let e = err(&format!("[network]\nbridge = \"{name}\"\n"));
            assert!(e.contains("network.bridge"), "{e}");
        }
    }

    #[test]
    fn mtu_out_of_range() {
        for mtu in ["67", "65536", "-1"] {
            let e = err(&format!("[network]\nmtu = {mtu}\n"));
            assert!(e.contains("network.mtu") && e.contains("68..=65535"), "{e}");
        }
        parse("[network]\nmtu = 68\n").unwrap();
        parse("[network]\nmtu = 65535\n").unwrap();
    }

    #[test]
    fn unknown_key() {
        let e = err("[network]\nbrige = \"x\"\n");
        assert!(e.contains("brige") && e.contains("config.toml:2"), "{e}");
        let e = err("[netwrk]\n");
        assert!(e.contains("netwrk"), "{e}");
    }

    #[test]
    fn limits_section() {
        let c = parse("[limits]\nmemory = \"2g\"\ncpus = 1.5\npids-limit = 100\n").unwrap();
        assert_eq!(c.limits.memory.as_deref(), Some("2g"));
        assert_eq!(c.limits.cpus.as_deref(), Some("1.5"));
        assert_eq!(c.limits.pids_limit.as_deref(), Some("100"));
        let e = err("[limits]\ncpus = \"many\"\n");
        assert!(e.contains("limits.cpus") && e.contains("config.toml"), "{e}");
        let e = err("[limits]\nswap = \"1g\"\n");
        assert!(e.contains("swap"), "{e}");
    }

    #[test]
    fn route_overlap() {
        let c = parse("[network]\nsubnet = \"192.0.2.0/25\"\n").unwrap();
        let routes = vec![
            ("0.0.0.0/0".parse().unwrap(), "eth0".to_string()),
            ("192.0.2.0/24".parse().unwrap(), "eth0".to_string()),
        ];
        let e = c.network.validate(&routes).unwrap_err().to_string();
        assert!(!e.contains('\n'));
        assert!(
            e.contains("192.0.2.0/24")
                && e.contains("eth0")
                && e.contains("network.subnet in /etc/repeatr/config.toml"),
            "{e}"
        );
    }

    #[test]
    fn own_bridge_route_and_default_route_are_fine() {
        let c = parse("[network]\nsubnet = \"198.18.0.0/24\"\n").unwrap();
        let routes = vec![
            ("0.0.0.0/0".parse().unwrap(), "eth0".to_string()),
            ("198.18.0.0/24".parse().unwrap(), "repeatr0".to_string()),
            ("192.0.2.0/24".parse().unwrap(), "eth0".to_string()),
        ];
        c.network.validate(&routes).unwrap();
    }

    #[test]
    fn validate_rechecks_hand_built_config() {
        let mut c = parse("").unwrap().network;
        c.mtu = 10;
        assert!(c.validate(&[]).unwrap_err().to_string().contains("network.mtu"));
    }

    #[test]
    fn dns_lists_are_bounded() {
        let list: Vec<String> = (0..100_000).map(|i| format!("\"198.18.{}.{}\"", i / 256 % 256, i % 256)).collect();
        let e = err(&format!("[network]\ndns = [{}]\n", list.join(",")));
        assert!(e.contains("network.dns") && e.contains("at most 3"), "{e}");
        let many: String = (1..=5).map(|i| format!("nameserver 192.0.2.{i}\n")).collect();
        let c = Config::parse("", Path::new("/etc/repeatr/config.toml"), &many).unwrap();
        assert_eq!(c.network.dns.len(), 3);
    }

    #[test]
    fn egress_is_nat_by_default_none_on_request_and_nothing_else() {
        assert_eq!(parse("").unwrap().network.egress, Egress::Nat);
        assert_eq!(parse("[network]\negress = \"nat\"\n").unwrap().network.egress, Egress::Nat);
        let none = parse("[network]\negress = \"none\"\n").unwrap().network;
        assert_eq!(none.egress, Egress::None);
        assert!(none.dns.is_empty(), "no host nameserver without egress: {:?}", none.dns);
        let with_dns = parse("[network]\negress = \"none\"\ndns = [\"198.18.0.1\"]\n").unwrap().network;
        assert_eq!(with_dns.dns, vec![Ipv4Addr::new(198, 18, 0, 1)]);
        for bad in ["\"NAT\"", "\"masquerade\"", "\"\""] {
            let e = err(&format!("[network]\negress = {bad}\n"));
            assert!(e.contains("network.egress"), "{bad}: {e}");
        }
        for bad in ["1", "true"] {
            let e = err(&format!("[network]\negress = {bad}\n"));
            assert!(e.contains("config.toml:2") && e.contains("expected a string"), "{bad}: {e}");
        }
        let e = err("[network]\negress = \"open\"\n");
        assert!(e.contains("network.egress = \"open\"") && e.contains("\"nat\"") && e.contains("\"none\""), "{e}");
    }

    #[test]
    fn a_loopback_stub_means_systemd_resolveds_upstream_servers() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstream = "nameserver 192.0.2.1\nnameserver 192.0.2.2\n";
        let read = |p: &Path| match p.to_str() {
            Some(RESOLV_CONF) => stub.to_string(),
            Some(RESOLVED_UPSTREAMS) => upstream.to_string(),
            _ => String::new(),
        };
        let c = Config::parse_with("", Path::new("c.toml"), &read).unwrap().network;
        assert_eq!(c.dns, vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]);
        // A host listing a real server besides the stub: that one alone.
        assert_eq!(host_nameservers(RESOLV, || upstream.into()), vec![Ipv4Addr::new(192, 0, 2, 53)]);
        // No nameserver line at all: nothing, and systemd's file unread.
        assert!(host_nameservers("# empty\n", || panic!("read systemd's file")).is_empty());
    }

    #[test]
    fn the_hosts_resolv_conf_can_be_another_file() {
        let read = |p: &Path| match p.to_str() {
            Some("/srv/resolv.conf") => "nameserver 198.18.9.53\n".to_string(),
            _ => "nameserver 192.0.2.9\n".to_string(),
        };
        let c = Config::parse_with("[network]\nhost_resolv_conf = \"/srv/resolv.conf\"\n", Path::new("c.toml"), &read);
        assert_eq!(c.unwrap().network.dns, vec![Ipv4Addr::new(198, 18, 9, 53)]);
        let e = err("[network]\nhost_resolv_conf = \"resolv.conf\"\n");
        assert!(e.contains("network.host_resolv_conf") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn dns_ipv6_refused() {
        let e = err("[network]\ndns = [\"2001:db8::1\"]\n");
        assert!(e.contains("network.dns"), "{e}");
    }
}

/// `[cache]`: where unpacked wares and rootfs tars are kept
/// (`crate::ware_cache`), and how big `repeatr gc` lets it grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_size: u64,
}

/// Where the ware cache is unless `[cache] dir` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/repeatr/wares";
/// `[cache] max_size` unless set: what `repeatr gc` trims the cache to.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 20 << 30;

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig { dir: PathBuf::from(DEFAULT_CACHE_DIR), max_size: DEFAULT_CACHE_MAX_SIZE }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<String>,
    max_size: Option<String>,
}

impl CacheConfig {
    fn from_raw(raw: RawCache, path: &Path) -> Result<CacheConfig, ConfigError> {
        let mut c = CacheConfig::default();
        if let Some(dir) = raw.dir {
            if !Path::new(&dir).is_absolute() {
                return Err(ConfigError::Value {
                    key: "cache.dir",
                    value: dir,
                    problem: "must be an absolute path".into(),
                    path: path.to_path_buf(),
                });
            }
            c.dir = PathBuf::from(dir);
        }
        if let Some(size) = raw.max_size {
            c.max_size = crate::limits::parse_size("cache.max_size", &size)
                .map_err(|err| ConfigError::Limits { err, path: path.to_path_buf() })?;
        }
        Ok(c)
    }
}
