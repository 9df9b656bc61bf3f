//! Plugging one job's netns into the bridge with a veth pair.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::bridge::add_address;
use super::link::{delete_link_with, get_link, host_socket, loopback_up_with, set_up};
use super::netlink::{Netlink, NlError};
use super::{NetworkError, check_ifname, mac_for_ip};

/// The job end's name inside its netns.
pub const JOB_IFNAME: &str = "eth0";

/// One job's veth: the host end `host_name` (by convention `{bridge}-{slot}`)
/// is enslaved to `bridge`; the job end is `eth0` with `ip/prefix` and a
/// default route via `gateway`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub host_name: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

pub(crate) fn check_mtu(name: &str, mtu: u32) -> Result<(), NetworkError> {
    // 68 is the IPv4 minimum (RFC 791); 65535 the largest an IPv4 packet
    // can use, and what the kernel's bridge and veth accept at most.
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(NetworkError::Unexpected {
            op: format!("configure {name}"),
            reason: format!("MTU {mtu} outside 68..=65535"),
        })
    }
}

fn check_spec(spec: &VethSpec) -> Result<(), NetworkError> {
    check_ifname(&spec.host_name)?;
    check_ifname(&spec.bridge)?;
    check_mtu(&spec.host_name, spec.mtu)?;
    if !(1..=30).contains(&spec.prefix) {
        return Err(NetworkError::Unexpected {
            op: format!("configure veth {}", spec.host_name),
            reason: format!("prefix /{} leaves no room for a gateway and a job", spec.prefix),
        });
    }
    Ok(())
}

/// Plugs the job's netns `netns` (e.g. an fd of `/proc/PID/ns/net`) into
/// the bridge: one RTM_NEWLINK creates the veth with its peer already inside
/// the netns as `eth0` (MAC from the IP, MTU) and the host end enslaved
/// and up; then, inside the netns, the address, `eth0` and `lo` up, the default
/// route. On failure, the veth is removed again (which removes both ends).
///
/// A leftover host link of the same name (a runner killed before its
/// teardown; names are per lease slot, so it cannot be a live job's) is
/// deleted and the creation retried once.
pub fn attach_job(spec: &VethSpec, netns: BorrowedFd<'_>) -> Result<(), NetworkError> {
    check_spec(spec)?;
    let mut host = host_socket()?;
    let bridge = get_link(&mut host, &spec.bridge)
        .map_err(|e| NetworkError::netlink(format!("look up bridge {}", spec.bridge), e))?
        .ok_or_else(|| NetworkError::Unexpected {
            op: format!("attach {} to bridge {}", spec.host_name, spec.bridge),
            reason: "the bridge does not exist".into(),
        })?
        .header
        .index;

    let op =
        || format!("create veth {} on bridge {} (peer {JOB_IFNAME} in the job netns)", spec.host_name, spec.bridge);
    match create_veth(&mut host, spec, bridge, netns) {
        Ok(()) => {}
        Err(e) if e.raw() == Some(libc::EEXIST) => {
            // EEXIST is either our host name (stale) or eth0 in the netns;
            // deleting the host name is right in the first case and a no-op
            // in the second, where the retry then fails with a clear error.
            log::warn!("{}: exists, deleting the stale link and retrying", spec.host_name);
            delete_link_with(&mut host, &spec.host_name)?;
            create_veth(&mut host, spec, bridge, netns).map_err(|e| NetworkError::netlink(op(), e))?;
        }
        Err(e) => return Err(NetworkError::netlink(op(), e)),
    }

    log::trace!("veth {} created", spec.host_name);
    if let Err(e) = configure_job_side(spec, netns) {
        // Deleting the host end takes the peer with it, wherever it is.
        let mut errors = vec![e];
        if let Err(d) = delete_link_with(&mut host, &spec.host_name) {
            errors.push(d);
        }
        return NetworkError::collect(errors);
    }
    Ok(())
}

fn create_veth(nl: &mut Netlink, spec: &VethSpec, bridge: u32, netns: BorrowedFd<'_>) -> Result<(), NlError> {
    // No IFF_UP here: veth_newlink configures the peer before it links the
    // two ends, and veth_open of an unlinked end fails with ENOTCONN. The
    // job side brings it up once it has its address.
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(JOB_IFNAME.to_string()));
    // Derived from the IP so a reused address keeps its MAC and neighbours'
    // ARP caches stay valid (which also makes arp_notify unnecessary).
    peer.attributes.push(LinkAttribute::Address(mac_for_ip(spec.ip).to_vec()));
    peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
    // The kernel moves the peer into the netns while creating it, so there
    // is never an `eth0` in the host netns to clash with another job's.
    peer.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));

    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::IfName(spec.host_name.clone()));
    msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
    msg.attributes.push(LinkAttribute::Controller(bridge));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}

/// Address, `lo` and default route, over a socket bound to the job netns.
fn configure_job_side(spec: &VethSpec, netns: BorrowedFd<'_>) -> Result<(), NetworkError> {
    let mut nl =
        Netlink::in_netns(netns).map_err(|source| NetworkError::Socket { place: "in the job netns".into(), source })?;
    let index = get_link(&mut nl, JOB_IFNAME)
        .map_err(|e| NetworkError::netlink(format!("look up {JOB_IFNAME} in the job netns"), e))?
        .ok_or_else(|| NetworkError::Unexpected {
            op: format!("configure {JOB_IFNAME} in the job netns"),
            reason: "the veth peer is not there".into(),
        })?
        .header
        .index;
    add_address(&mut nl, index, spec.ip, spec.prefix).map_err(|e| {
        NetworkError::netlink(format!("add {}/{} to {JOB_IFNAME} in the job netns", spec.ip, spec.prefix), e)
    })?;
    set_up(&mut nl, index).map_err(|e| NetworkError::netlink(format!("bring {JOB_IFNAME} up in the job netns"), e))?;
    loopback_up_with(&mut nl)?;
    add_default_route(&mut nl, index, spec.gateway)
        .map_err(|e| NetworkError::netlink(format!("add default route via {} in the job netns", spec.gateway), e))
}

fn add_default_route(nl: &mut Netlink, oif: u32, gateway: Ipv4Addr) -> Result<(), NlError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    // RTPROT_BOOT is what `ip route add` records for a static route.
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    msg.attributes.push(RouteAttribute::Oif(oif));
    nl.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
}
