//! The shared bridge all bridge-networked jobs plug into.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};

use super::address::add_address;
use super::error::NetworkError;
use super::iface::{check_ifname, check_mtu, mac_for_ip};
use super::link::{get_link, host_socket, link_info, set_up};
use super::netlink::{Netlink, NlError};
use crate::config::{check_gateway, check_subnet};

/// Creates the bridge `name` if it is missing, else makes sure it is up and
/// carries `gateway`/prefix; returns its ifindex. Safe to race with other
/// runners doing the same: whoever loses the creation sees EEXIST and goes
/// on with the bridge the winner made.
///
/// A bridge we create gets a MAC pinned from the gateway IP: without one,
/// the kernel gives the bridge the lowest MAC of its ports, so it changes
/// whenever a job comes or goes and neighbours' ARP entries for the gateway
/// go stale until they time out.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, subnet: Ipv4Net, mtu: u32) -> Result<u32, NetworkError> {
    ensure_bridge_with(&mut host_socket()?, name, gateway, subnet, mtu)
}

/// [`ensure_bridge`] on an open host socket.
pub(crate) fn ensure_bridge_with(
    nl: &mut Netlink,
    name: &str,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
    mtu: u32,
) -> Result<u32, NetworkError> {
    check_bridge(name, gateway, subnet, mtu)?;

    let lookup =
        |nl: &mut Netlink| get_link(nl, name).map_err(|e| NetworkError::netlink(format!("look up bridge {name}"), e));
    let link = match lookup(nl)? {
        Some(l) => l,
        None => {
            match create_bridge(nl, name, gateway, mtu) {
                Ok(()) => {}
                Err(e) if e.raw() == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetworkError::netlink(format!("create bridge {name}"), e)),
            }
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
    if !info.up {
        set_up(nl, info.index).map_err(|e| NetworkError::netlink(format!("bring bridge {name} up"), e))?;
    }
    add_address(nl, info.index, gateway, subnet.prefix_len())
        .map_err(|e| NetworkError::netlink(format!("add {gateway}/{} to bridge {name}", subnet.prefix_len()), e))?;
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

fn create_bridge(nl: &mut Netlink, name: &str, gateway: Ipv4Addr, mtu: u32) -> Result<(), NlError> {
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    // An address given at creation marks it NET_ADDR_SET, which tells the
    // bridge code never to replace it with a port's MAC.
    msg.attributes.push(LinkAttribute::Address(mac_for_ip(gateway).to_vec()));
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
    nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
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
