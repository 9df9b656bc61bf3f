//! No IPv6 on the bridge. Jobs are IPv4-only; a bridge with IPv6 on would
//! take a router advertisement that reached it as the host's (a default
//! route, SLAAC addresses). The ports' filters (see `port_filter`) drop
//! every IPv6 frame a job sends; this is the second wall. A veth (a job's
//! or a leaf's uplink) gets no IPv6 address either, for the cost of
//! having them: see [`addr_gen_off_message`].
//!
//! Netlink can set none of these (inet6_set_link_af takes only the token
//! and the address generation mode), so they are sysctl writes; a bridge
//! is made once, and the lookup `ensure_bridge` does anyway returns their
//! values (IFLA_AF_SPEC), so a run writes only when one is wrong (a bridge
//! whose settings someone changed, or one made before these were set).

use std::io::{self, Write};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, Inet6DevConf, LinkAttribute, LinkMessage};

use super::error::NetworkError;
use super::netlink::Netlink;

/// One per-interface IPv6 sysctl and the value the bridge needs.
struct Setting {
    name: &'static str,
    /// Where the kernel reports it in IFLA_INET6_CONF.
    current: fn(&Inet6DevConf) -> i32,
    wanted: i32,
}

/// In the order they are written: RAs and autoconf off while IPv6 is still
/// on, then IPv6 off, which drops any address it had.
const SETTINGS: [Setting; 3] = [
    Setting { name: "accept_ra", current: |c| c.accept_ra, wanted: 0 },
    Setting { name: "autoconf", current: |c| c.autoconf, wanted: 0 },
    Setting { name: "disable_ipv6", current: |c| c.disable_ipv6, wanted: 1 },
];

/// Every setting, for a bridge just made.
pub(crate) const ALL: [&str; 3] = [SETTINGS[0].name, SETTINGS[1].name, SETTINGS[2].name];

/// The settings `link` (as the kernel reported it) has wrong. None if the
/// host has no IPv6 at all (booted with `ipv6.disable=1`: no AF_INET6
/// part in the reply).
pub(crate) fn wrong_settings(link: &LinkMessage) -> Vec<&'static str> {
    let conf = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|s| match s {
            AfSpecUnspec::Inet6(inet6) => inet6.iter().find_map(|i| match i {
                AfSpecInet6::DevConf(c) => Some(c),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    });
    match conf {
        Some(c) => SETTINGS.iter().filter(|s| (s.current)(c) != s.wanted).map(|s| s.name).collect(),
        None => Vec::new(),
    }
}

/// Writes `settings` (names from [`SETTINGS`]) of the link `name` in the
/// netns of `nl`. A host without IPv6 (no /proc/sys/net/ipv6), or a link
/// without it, has nothing to turn off.
pub(crate) fn disable(nl: &Netlink, name: &str, settings: &[&str]) -> Result<(), NetworkError> {
    let fail = |reason| NetworkError::Unexpected { op: format!("turn IPv6 off on bridge {name}"), reason };
    let written = nl.within(|| {
        for s in SETTINGS.iter().filter(|s| settings.contains(&s.name)) {
            let (path, value) = (format!("/proc/sys/net/ipv6/conf/{name}/{}", s.name), s.wanted);
            match std::fs::OpenOptions::new().write(true).open(&path).and_then(|mut f| write!(f, "{value}")) {
                Ok(()) => {}
                // No IPv6 on the host, or none on this link (an MTU below
                // IPV6_MIN_MTU): nothing to turn off.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !link_has_ipv6(name) => return Ok(()),
                Err(e) => return Err(format!("writing {value} to {path}: {e}")),
            }
        }
        Ok(())
    });
    match written {
        Ok(r) => r.map_err(fail),
        Err(e) => Err(fail(format!("entering the bridge's netns: {e}"))),
    }
}

/// The kernel's IPV6_MIN_MTU: a link with a smaller MTU gets no IPv6
/// state at all (and refuses IPv6 settings with EAFNOSUPPORT).
const IPV6_MIN_MTU: u32 = 1280;

/// The SETLINK that turns IPv6 address generation off on link `index`
/// (`ip link set addrgenmode none`), for a veth before it goes up; None
/// where the link will have no IPv6 (a host without it, an MTU below
/// 1280). Without it, each veth brought up on the host adds a link-local
/// address and its routes to the host's IPv6 tables, and every link up or
/// down walks those tables: ~1 ms more per start next to 1000 live jobs.
/// Netlink, not the `disable_ipv6` sysctl: writing that spins on the
/// rtnl lock while other runners hold it. A job's IPv6 frames are dropped
/// by its port filter anyway; on its own end, this spares it the duplicate
/// address detection and router solicitations nobody answers.
pub(crate) fn addr_gen_off_message(index: u32, mtu: u32) -> Option<RouteNetlinkMessage> {
    if mtu < IPV6_MIN_MTU || !ipv6_present() {
        return None;
    }
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])]));
    Some(RouteNetlinkMessage::SetLink(msg))
}

/// In the caller's netns.
fn link_has_ipv6(name: &str) -> bool {
    std::path::Path::new(&format!("/proc/sys/net/ipv6/conf/{name}")).exists()
}

/// Asked once per process: a host has IPv6 or not from its boot on.
fn ipv6_present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRESENT.get_or_init(|| std::path::Path::new("/proc/sys/net/ipv6").exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_with(conf: Option<Inet6DevConf>) -> LinkMessage {
        let mut l = LinkMessage::default();
        if let Some(c) = conf {
            l.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::DevConf(c)])]));
        }
        l
    }

    #[test]
    fn wrong_settings_are_read_from_the_link() {
        let mut c = Inet6DevConf::default();
        c.accept_ra = 1;
        c.autoconf = 1;
        assert_eq!(wrong_settings(&link_with(Some(c))), ALL);
        c.accept_ra = 0;
        c.autoconf = 0;
        c.disable_ipv6 = 1;
        assert!(wrong_settings(&link_with(Some(c))).is_empty());
        assert!(wrong_settings(&link_with(None)).is_empty(), "no IPv6 on the host");
    }
}
