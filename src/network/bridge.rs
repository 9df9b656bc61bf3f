//! The shared bridge all bridge-networked jobs plug into.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoBridge, InfoData, InfoKind, LinkAttribute, LinkInfo, LinkMessage};

use super::address::add_address;
use super::error::NetworkError;
use super::iface::{check_ifname, check_mtu, mac_for_ip};
use super::ipv6;
use super::link::{
    alias_message, delete_index, get_link, host_socket, link_info, link_name, pending_name, rename_message, set_up,
    up_message,
};
use super::netlink::{Netlink, NlError};
use super::owner::{Foreign, LinkOwner, Role};
use crate::config::{check_gateway, check_subnet};

/// Creates the bridge `name` if it is missing, else makes sure it is up and
/// carries `gateway`/prefix; returns its ifindex. Safe to race with other
/// runners doing the same: whoever loses the creation goes on with the
/// bridge the winner made.
///
/// The bridge is `owner`'s: one we create carries its marker, and an
/// existing one that does not (another state dir's, or not repeatr's) is
/// refused before anything about it is changed. Runners of two state dirs
/// on one bridge would hand out the same addresses and delete each other's
/// veths. The marker comes back with the lookup done anyway, so checking it
/// costs no round trip.
///
/// A bridge we create gets a MAC pinned from the gateway IP: without one,
/// the kernel gives the bridge the lowest MAC of its ports, so it changes
/// whenever a job comes or goes and neighbours' ARP entries for the gateway
/// go stale until they time out.
///
/// The bridge has no IPv6 (see `ipv6`): set while a new one is still
/// pending, and on an existing one if the lookup shows it on.
pub fn ensure_bridge(
    name: &str,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
    mtu: u32,
    owner: &LinkOwner,
) -> Result<u32, NetworkError> {
    ensure_bridge_with(&mut host_socket()?, name, gateway, subnet, mtu, owner)
}

/// [`ensure_bridge`] on an open host socket.
pub(crate) fn ensure_bridge_with(
    nl: &mut Netlink,
    name: &str,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
    mtu: u32,
    owner: &LinkOwner,
) -> Result<u32, NetworkError> {
    check_bridge(name, gateway, subnet, mtu)?;
    let index = ensure_bridge_link(nl, name, mac_for_ip(gateway), mtu, owner)?;
    add_address(nl, index, gateway, subnet.prefix_len())
        .map_err(|e| NetworkError::netlink(format!("add {gateway}/{} to bridge {name}", subnet.prefix_len()), e))?;
    Ok(index)
}

/// The bridge `name`, made (with `mac`) if missing, refused unless it is a
/// bridge carrying `owner`'s marker, without IPv6 and up: its ifindex.
/// What a hub and a leaf have in common (a leaf has no address).
pub(crate) fn ensure_bridge_link(
    nl: &mut Netlink,
    name: &str,
    mac: [u8; 6],
    mtu: u32,
    owner: &LinkOwner,
) -> Result<u32, NetworkError> {
    let lookup =
        |nl: &mut Netlink| get_link(nl, name).map_err(|e| NetworkError::netlink(format!("look up bridge {name}"), e));
    let link = match lookup(nl)? {
        Some(l) => l,
        None => {
            create_bridge(nl, name, mac, mtu, owner)?;
            lookup(nl)?.ok_or_else(|| NetworkError::Unexpected {
                op: format!("create bridge {name}"),
                reason: "it vanished right after creation (deleted concurrently?)".into(),
            })?
        }
    };
    let info = link_info(&link);
    if info.kind.as_deref() != Some("bridge") {
        return Err(NetworkError::Unexpected {
            op: format!("use bridge {name}"),
            reason: format!(
                "a link of that name exists but is a {}",
                info.kind.as_deref().unwrap_or("device of unknown kind")
            ),
        });
    }
    if let Err(other) = owner.check(info.alias.as_deref()) {
        let ours = owner.label().to_string();
        return Err(NetworkError::NotOurs(Box::new(Foreign {
            name: name.to_string(),
            role: Role::Bridge,
            owner: other,
            ours,
        })));
    }
    let wrong = ipv6::wrong_settings(&link);
    if !wrong.is_empty() {
        log::debug!("bridge {name}: setting {wrong:?}");
        ipv6::disable(nl, name, &wrong)?;
    }
    if snooping_on(&link) {
        log::debug!("bridge {name}: turning multicast snooping off");
        nl.request(settings_message(info.index), 0)
            .map_err(|e| NetworkError::netlink(format!("turn multicast snooping off on bridge {name}"), e))?;
    }
    if !info.up {
        set_up(nl, info.index).map_err(|e| NetworkError::netlink(format!("bring bridge {name} up"), e))?;
    }
    Ok(info.index)
}

/// What the bridge is to be: refused before anything is made, with
/// config's rules for the subnet and gateway.
fn check_bridge(name: &str, gateway: Ipv4Addr, subnet: Ipv4Net, mtu: u32) -> Result<(), NetworkError> {
    check_ifname(name)?;
    let refuse = |what: String, problem| NetworkError::Unexpected {
        op: format!("configure bridge {name}"),
        reason: format!("{what} {problem}"),
    };
    check_subnet(subnet).map_err(|p| refuse(format!("subnet {subnet}"), p))?;
    check_gateway(subnet, gateway).map_err(|p| refuse(format!("gateway {gateway}"), p))?;
    check_mtu(name, mtu)
}

/// Makes the bridge `name`, marked as `owner`'s, without IPv6, and up.
/// The kernel ignores IFLA_IFALIAS in a creating RTM_NEWLINK (measured on
/// 6.18: the alias is set by RTM_SETLINK only), and a bridge that had its
/// name before its marker could be refused by a runner of this very state
/// dir looking at that moment. So it is made down under a pending name,
/// its IPv6 turned off, marked, and only then renamed and brought up,
/// which a rename needs in that order (the kernel refuses to rename a
/// running link). If another runner's bridge took the name first
/// (EEXIST), ours is deleted and the caller goes on with, and checks,
/// theirs.
fn create_bridge(nl: &mut Netlink, name: &str, mac: [u8; 6], mtu: u32, owner: &LinkOwner) -> Result<(), NetworkError> {
    let (pending, index) =
        create_pending_bridge(nl, mac, mtu).map_err(|e| NetworkError::netlink(format!("create bridge {name}"), e))?;
    // Ours is deleted again on any failure.
    let undo = |nl: &mut Netlink, failed: NetworkError| match delete_index(nl, index, &pending) {
        Ok(_) => failed,
        Err(d) => NetworkError::Multiple(vec![failed, d]),
    };
    // While it is down: it never has an IPv6 address or route.
    if let Err(e) = ipv6::disable(nl, &pending, &ipv6::ALL) {
        return Err(undo(nl, e));
    }
    let op = |i: usize| match i {
        0 => format!("mark bridge {pending} as {}'s", owner.label()),
        1 => format!("rename bridge {pending} to {name}"),
        _ => format!("bring bridge {name} up"),
    };
    let steps =
        vec![(alias_message(index, &owner.alias()), 0), (rename_message(index, name), 0), (up_message(index), 0)];
    match nl.request_all(steps) {
        Ok(()) => Ok(()),
        Err((1, e)) if e.raw() == Some(libc::EEXIST) => delete_index(nl, index, &pending).map(drop),
        Err((i, e)) => Err(undo(nl, NetworkError::netlink(op(i), e))),
    }
}

/// A new bridge, down, under a pending name: (name, ifindex). A pending
/// name some other link has is not ours to delete: the next one is tried.
fn create_pending_bridge(nl: &mut Netlink, mac: [u8; 6], mtu: u32) -> Result<(String, u32), NlError> {
    let mut name = pending_name();
    let echoed = match nl.request_echo(new_bridge_message(&name, mac, mtu), NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if e.raw() == Some(libc::EEXIST) => {
            name = pending_name();
            nl.request_echo(new_bridge_message(&name, mac, mtu), NLM_F_CREATE | NLM_F_EXCL)
        }
        r => r,
    }?;
    let index = echoed.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) if link_name(l) == Some(name.as_str()) => Some(l.header.index),
        _ => None,
    });
    // A kernel without NLM_F_ECHO for new links (before 6.1) only ACKs.
    let index = match index {
        Some(i) => i,
        None => get_link(nl, &name)?.map(|l| l.header.index).ok_or_else(|| {
            NlError::from(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the new bridge vanished (deleted concurrently?)",
            ))
        })?,
    };
    Ok((name, index))
}

fn new_bridge_message(name: &str, mac: [u8; 6], mtu: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    // An address given at creation marks it NET_ADDR_SET, which tells the
    // bridge code never to replace it with a port's MAC.
    msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    msg.attributes.push(LinkAttribute::LinkInfo(bridge_settings()));
    RouteNetlinkMessage::NewLink(msg)
}

/// Multicast snooping off. With it on, each port's up and carrier change
/// makes the kernel re-enable multicast on every port of the bridge
/// (`br_port_state_selection`): timer work that grows with the jobs live,
/// ~0.25 ms of each start next to 1000. Off, multicast is flooded to every
/// port as broadcast is, which is what a job bridge without an IGMP
/// querier does anyway.
fn bridge_settings() -> Vec<LinkInfo> {
    vec![LinkInfo::Kind(InfoKind::Bridge), LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)]))]
}

/// Whether the kernel reports multicast snooping on for `link`; a bridge
/// made before repeatr turned it off, or changed since.
fn snooping_on(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::Data(InfoData::Bridge(opts)) => opts.contains(&InfoBridge::MulticastSnooping(true)),
            _ => false,
        }),
        _ => false,
    })
}

/// The message that puts [`bridge_settings`] right on bridge `index`: a
/// NEWLINK without NLM_F_CREATE, since the kernel applies a link kind's
/// settings (`changelink`) there only, not in a SETLINK.
fn settings_message(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::LinkInfo(bridge_settings()));
    RouteNetlinkMessage::NewLink(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_checks() {
        let check =
            |gateway: &str, subnet: &str| check_bridge("b", gateway.parse().unwrap(), subnet.parse().unwrap(), 1500);
        assert!(check("198.18.4.1", "198.18.4.0/24").is_ok());
        assert!(check("198.18.4.0", "198.18.4.0/24").is_err());
        assert!(check("198.18.4.255", "198.18.4.0/24").is_err());
        assert!(check("198.18.5.1", "198.18.4.0/24").is_err());
        assert!(check("198.18.4.1", "198.18.4.0/31").is_err());
        let e = check("198.18.4.1", "198.18.4.7/24").unwrap_err().to_string();
        assert!(e.contains("bridge b") && e.contains("198.18.4.0/24"), "{e}");
    }
}
