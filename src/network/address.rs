//! IPv4 addresses on links (RTM_NEWADDR): the bridge's gateway, a job's
//! `eth0` address.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{Netlink, NlError};

/// Adds `ip/prefix` to link `index`; already there is success (the kernel
/// answers EEXIST for the same local address and mask).
pub(crate) fn add_address(nl: &mut Netlink, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NlError> {
    match nl.request(address_message(index, ip, prefix), NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if e.raw() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// The NEWADDR for `ip/prefix` on link `index`.
pub(crate) fn address_message(index: u32, ip: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    // IPv4 keeps the interface's own address in IFA_LOCAL; IFA_ADDRESS is
    // the peer on point-to-point links and must equal it elsewhere.
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    msg.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
    // Without IFA_BROADCAST the kernel sets none (unlike `ip addr add`'s
    // usual `brd +`), and subnet broadcasts would not be recognised.
    if let Ok(net) = Ipv4Net::new(ip, prefix)
        && prefix < 31
    {
        msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
    }
    RouteNetlinkMessage::NewAddress(msg)
}
