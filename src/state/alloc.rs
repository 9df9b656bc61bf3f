//! Picking an address: round-robin over the subnet's hosts, resuming after
//! the last address handed out, so that an address just released (whose
//! MAC may still sit in ARP caches) is the last to come back.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::error::StateError;

/// The next free host of `subnet` after `last`, skipping the network and
/// broadcast addresses, the gateway and every address in `taken`. A `last`
/// outside the subnet (the subnet was changed in the config) is ignored.
/// `subnet` must be canonical and at most /30.
pub(crate) fn next_ip(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    last: Option<Ipv4Addr>,
    taken: &HashSet<Ipv4Addr>,
) -> Result<Ipv4Addr, StateError> {
    let base = u32::from(subnet.network());
    // Hosts are offsets 1..=hosts from the network address.
    let hosts = (1u64 << (32 - u32::from(subnet.prefix_len()))) - 2;
    let is_host = |ip: &Ipv4Addr| subnet.contains(ip) && *ip != subnet.network() && *ip != subnet.broadcast();
    let leased = taken.iter().filter(|ip| is_host(ip) && **ip != gateway).count() as u64;
    let gateway_slot = u64::from(is_host(&gateway));
    if leased + gateway_slot >= hosts {
        return Err(StateError::Exhausted { subnet, leased: leased as usize });
    }
    // Index (0-based) of the host to try first.
    let start = match last {
        Some(ip) if is_host(&ip) => u64::from(u32::from(ip) - base), // offset-1 of the next host
        _ => 0,
    };
    // The pre-check above guarantees a free host within leased + 2 steps,
    // so this never walks a large subnet end to end.
    (0..hosts)
        .map(|k| Ipv4Addr::from(base + 1 + ((start + k) % hosts) as u32))
        .find(|ip| *ip != gateway && !taken.contains(ip))
        .ok_or(StateError::Exhausted { subnet, leased: leased as usize })
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

    #[test]
    fn first_host_after_gateway() {
        let got = next_ip(net("198.18.0.0/29"), ip("198.18.0.1"), None, &HashSet::new()).unwrap();
        assert_eq!(got, ip("198.18.0.2"));
    }

    #[test]
    fn resumes_after_last_and_wraps() {
        let n = net("198.18.0.0/29");
        let gw = ip("198.18.0.1");
        assert_eq!(next_ip(n, gw, Some(ip("198.18.0.3")), &HashSet::new()).unwrap(), ip("198.18.0.4"));
        // .6 is the last host: wrap past the network address and the gateway.
        assert_eq!(next_ip(n, gw, Some(ip("198.18.0.6")), &HashSet::new()).unwrap(), ip("198.18.0.2"));
        let taken: HashSet<_> = [ip("198.18.0.4"), ip("198.18.0.5")].into();
        assert_eq!(next_ip(n, gw, Some(ip("198.18.0.3")), &taken).unwrap(), ip("198.18.0.6"));
    }

    #[test]
    fn last_outside_subnet_is_ignored() {
        let got = next_ip(net("198.18.8.0/24"), ip("198.18.8.1"), Some(ip("198.18.0.77")), &HashSet::new());
        assert_eq!(got.unwrap(), ip("198.18.8.2"));
    }

    #[test]
    fn exhausted_message() {
        let n = net("198.18.0.0/29");
        let taken: HashSet<_> = (2..=6).map(|i| Ipv4Addr::new(198, 18, 0, i)).collect();
        let e = next_ip(n, ip("198.18.0.1"), None, &taken).unwrap_err();
        assert_eq!(e.to_string(), "no free address in 198.18.0.0/29: 5 leased");
    }

    #[test]
    fn gateway_not_first_host() {
        let n = net("198.18.0.0/30");
        let got = next_ip(n, ip("198.18.0.2"), None, &HashSet::new()).unwrap();
        assert_eq!(got, ip("198.18.0.1"));
        let taken: HashSet<_> = [ip("198.18.0.1")].into();
        assert!(next_ip(n, ip("198.18.0.2"), None, &taken).is_err());
    }
}
