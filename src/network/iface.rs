//! What the kernel accepts for a link's own attributes, and the MAC we
//! give one: its name (IFLA_IFNAME), its MTU, its address (IFLA_ADDRESS).

use std::net::Ipv4Addr;

use super::error::NetworkError;
use crate::config::MTU_RANGE;

/// Linux interface names are at most IFNAMSIZ - 1 bytes.
pub const IFNAMSIZ_MAX: usize = 15;

/// Refuses names the kernel would reject (dev_valid_name), with our words.
pub fn check_ifname(name: &str) -> Result<(), NetworkError> {
    let bad = |reason| Err(NetworkError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > IFNAMSIZ_MAX {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic()) {
        return bad("only printable ASCII without '/', ':' or spaces");
    }
    Ok(())
}

/// Refuses an MTU outside config's [`MTU_RANGE`].
pub(crate) fn check_mtu(name: &str, mtu: u32) -> Result<(), NetworkError> {
    if MTU_RANGE.contains(&mtu) {
        Ok(())
    } else {
        Err(NetworkError::Unexpected {
            op: format!("configure {name}"),
            reason: format!("MTU {mtu} outside {MTU_RANGE:?}"),
        })
    }
}

/// A stable, locally administered unicast MAC for an IPv4 address
/// (02:42:a:b:c:d, as Docker does): the same IP always gets the same MAC, so
/// neighbours' ARP caches stay right when an address is reused.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_ifname("rt1-1023").is_ok());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("abcdefghijklmnop").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }

    #[test]
    fn mtu_within_config_range() {
        assert!(check_mtu("b", 68).is_ok() && check_mtu("b", 65535).is_ok());
        let e = check_mtu("b", 67).unwrap_err().to_string();
        assert_eq!(e, "configure b: MTU 67 outside 68..=65535");
        assert!(check_mtu("b", 65536).is_err());
    }

    #[test]
    fn mac_is_local_unicast() {
        let m = mac_for_ip(Ipv4Addr::new(198, 18, 3, 7));
        assert_eq!(m, [0x02, 0x42, 198, 18, 3, 7]);
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
    }
}
