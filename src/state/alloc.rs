//! The order in which an allocation tries addresses and slots:
//! round-robin, resuming after the last one handed out, so that an address
//! just released (whose MAC may still sit in ARP caches) and a slot just
//! freed (whose veth the kernel may still be destroying with its job's
//! netns) are the last to come back. The caller walks the order and takes
//! the first candidate that is free, so a start costs a few lookups however
//! many jobs are live, as long as the subnet and the bridge have room.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

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

/// Every slot of the first `bridges` bridges of a domain (`ports` each),
/// as (bridge index, slot), starting after the position `last` and
/// wrapping, each once. Positions number the slots bridge by bridge
/// (`index * ports + slot`); one outside the span (fewer bridges or ports
/// than when it was saved, or damage) restarts the walk at the hub's 0.
pub(crate) fn slots_after(last: Option<u32>, bridges: u16, ports: u16) -> impl Iterator<Item = (u16, u16)> {
    let ports = u32::from(ports.max(1));
    let total = u32::from(bridges.max(1)) * ports;
    let start = last.filter(|s| *s < total).map_or(0, |s| (s + 1) % total);
    (0..total).map(move |k| {
        let g = (start + k) % total;
        // Both below 2^16: g < bridges * ports.
        ((g / ports) as u16, (g % ports) as u16)
    })
}

/// The position of (bridge index, slot) in `slots_after`'s numbering.
pub(crate) fn position(bridge: u16, slot: u16, ports: u16) -> u32 {
    u32::from(bridge) * u32::from(ports.max(1)) + u32::from(slot)
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
        let walk = |last, bridges, ports| slots_after(last, bridges, ports).collect::<Vec<_>>();
        assert_eq!(walk(None, 1, 1000)[..2], [(0, 0), (0, 1)]);
        assert_eq!(slots_after(Some(5), 1, 1000).next(), Some((0, 6)));
        let all = walk(Some(999), 1, 1000);
        assert_eq!(all.len(), 1000);
        assert_eq!((all[0], all[999]), ((0, 0), (0, 999)));
        assert_eq!(slots_after(Some(1000), 1, 1000).next(), Some((0, 0)), "a damaged position restarts at 0");
    }

    #[test]
    fn slots_span_the_bridges_of_the_domain() {
        // 3 bridges of 4 ports: after the hub's last comes leaf 1's first.
        let all: Vec<_> = slots_after(Some(position(0, 3, 4)), 3, 4).collect();
        assert_eq!(all.len(), 12);
        assert_eq!(all[..5], [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0)]);
        assert_eq!(all[11], (0, 3));
        assert_eq!(position(2, 1, 4), 9);
        assert_eq!(slots_after(Some(position(2, 1, 4)), 3, 4).next(), Some((2, 2)));
        // A position past the span (the domain shrank) restarts at the hub.
        assert_eq!(slots_after(Some(position(2, 1, 4)), 2, 4).next(), Some((0, 0)));
        // Each (bridge, slot) once.
        let mut seen = all.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 12);
    }
}
