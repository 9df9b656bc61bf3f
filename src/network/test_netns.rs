//! Test support: network namespaces the unit tests make and drop.

use std::os::fd::OwnedFd;

/// A new netns held by an fd, made on a thread that exits at once (so the
/// test's own thread stays in the host's netns); gone with the fd.
pub(crate) fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}

/// The IPv6 addresses (link-local ones too) on link `index`, as netlink
/// in `nl`'s netns reports them.
pub(crate) fn ipv6_addresses(nl: &mut super::netlink::Netlink, index: u32) -> Vec<std::net::Ipv6Addr> {
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    let mut query = AddressMessage::default();
    query.header.family = AddressFamily::Inet6;
    let replies = nl.dump(RouteNetlinkMessage::GetAddress(query)).unwrap();
    replies
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
            _ => None,
        })
        .flat_map(|a| a.attributes.iter())
        .filter_map(|attr| match attr {
            AddressAttribute::Address(std::net::IpAddr::V6(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}
