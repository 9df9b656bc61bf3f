//! The order in which an allocation tries addresses and slots:
//! round-robin, resuming after the last one handed out, so that an address
//! just released (whose MAC may still sit in ARP caches) and a slot just
//! freed (whose veth the kernel may still be destroying with its job's
//! netns) are the last to come back. The caller walks the order and takes
//! the first candidate that is free, so a start costs a few lookups however
//! many jobs are live, as long as the subnet and the bridge have room.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::slot::MAX_SLOTS;

/// Every host of `subnet` but the gateway, starting with the first one after
/// `last` and wrapping, each once. A `last` outside the subnet (the subnet
/// was changed in the config) is ignored: the walk starts at the first host.
/// `subnet` must be canonical and at most /30.
pub(crate) fn hosts_after(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    last: Option<Ipv4Addr>,
) -> impl Iterator<Item = Ipv4Addr> {
    let base = u32::from(subnet.network());
    // Hosts are offsets 1..=hosts from the network address.
    let hosts = (1u64 << (32 - u32::from(subnet.prefix_len()))) - 2;
    let is_host = |ip: &Ipv4Addr| subnet.contains(ip) && *ip != subnet.network() && *ip != subnet.broadcast();
    // Index (0-based) of the host to try first.
    let start = match last {
        Some(ip) if is_host(&ip) => u64::from(u32::from(ip) - base), // offset-1 of the next host
        _ => 0,
    };
    (0..hosts).map(move |k| Ipv4Addr::from(base + 1 + ((start + k) % hosts) as u32)).filter(move |ip| *ip != gateway)
}

/// Whether `ip` is a host of `subnet` other than the gateway: what an
/// exhausted subnet counts as leased.
pub(crate) fn is_leasable(subnet: Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast() && ip != gateway
}

/// Every slot of a bridge, starting after `last` and wrapping, each once.
pub(crate) fn slots_after(last: Option<u16>) -> impl Iterator<Item = u16> {
    let start = last.filter(|s| *s < MAX_SLOTS).map_or(0, |s| s + 1);
    (0..MAX_SLOTS).map(move |k| (start + k) % MAX_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn first(n: Ipv4Net, gw: &str, last: Option<&str>, k: usize) -> Vec<Ipv4Addr> {
        hosts_after(n, ip(gw), last.map(ip)).take(k).collect()
    }

    #[test]
    fn first_host_after_gateway() {
        assert_eq!(first(net("198.18.0.0/29"), "198.18.0.1", None, 1), [ip("198.18.0.2")]);
    }

    #[test]
    fn resumes_after_last_and_wraps() {
        let n = net("198.18.0.0/29");
        assert_eq!(first(n, "198.18.0.1", Some("198.18.0.3"), 1), [ip("198.18.0.4")]);
        // .6 is the last host: wrap past the network address and the gateway.
        assert_eq!(first(n, "198.18.0.1", Some("198.18.0.6"), 2), [ip("198.18.0.2"), ip("198.18.0.3")]);
        // Each host once, the gateway never.
        let all: Vec<_> = hosts_after(n, ip("198.18.0.1"), Some(ip("198.18.0.3"))).collect();
        assert_eq!(all, ["198.18.0.4", "198.18.0.5", "198.18.0.6", "198.18.0.2", "198.18.0.3"].map(ip));
    }

    #[test]
    fn last_outside_subnet_is_ignored() {
        assert_eq!(first(net("198.18.8.0/24"), "198.18.8.1", Some("198.18.0.77"), 1), [ip("198.18.8.2")]);
    }

    #[test]
    fn gateway_not_first_host() {
        let all: Vec<_> = hosts_after(net("198.18.0.0/30"), ip("198.18.0.2"), None).collect();
        assert_eq!(all, [ip("198.18.0.1")]);
        assert!(!is_leasable(net("198.18.0.0/30"), ip("198.18.0.2"), ip("198.18.0.2")));
        assert!(is_leasable(net("198.18.0.0/30"), ip("198.18.0.2"), ip("198.18.0.1")));
    }

    #[test]
    fn slots_resume_after_the_last_and_wrap() {
        assert_eq!(slots_after(None).take(2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(slots_after(Some(5)).next(), Some(6));
        let all: Vec<_> = slots_after(Some(MAX_SLOTS - 1)).collect();
        assert_eq!(all.len(), usize::from(MAX_SLOTS));
        assert_eq!((all[0], all[all.len() - 1]), (0, MAX_SLOTS - 1));
        assert_eq!(slots_after(Some(MAX_SLOTS)).next(), Some(0), "a damaged position restarts at 0");
    }
}
