//! Reading the host's routes, for the "subnet overlaps a host route" check.

use std::collections::HashMap;

use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::NetworkError;
use super::link::{host_socket, link_name};
use super::netlink::Netlink;

/// The IPv4 routes of the host's main table as (destination, device name),
/// without the default route (it overlaps every subnet, so it says nothing).
/// Routes without a device (blackhole, unreachable) have an empty name; a
/// multipath route is listed with its first next hop's device.
pub fn host_ipv4_routes() -> Result<Vec<(Ipv4Net, String)>, NetworkError> {
    routes_where(&mut host_socket()?, |_| true)
}

/// The same, only the routes that overlap `subnet` (contain it or lie
/// inside it): all the config check needs, named with one GETLINK per
/// device of those few instead of every device with a route.
pub(crate) fn routes_overlapping(nl: &mut Netlink, subnet: Ipv4Net) -> Result<Vec<(Ipv4Net, String)>, NetworkError> {
    routes_where(nl, |r| r.contains(&subnet) || subnet.contains(r))
}

fn routes_where(nl: &mut Netlink, keep: impl Fn(&Ipv4Net) -> bool) -> Result<Vec<(Ipv4Net, String)>, NetworkError> {
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    let routes =
        nl.dump(RouteNetlinkMessage::GetRoute(req)).map_err(|e| NetworkError::netlink("list host IPv4 routes", e))?;

    // Names by one GETLINK per device the routes use (a handful), not by a
    // dump of every link: with many jobs starting, veths come and go all
    // the time and a link dump keeps getting interrupted (NLM_F_DUMP_INTR).
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut out = Vec::new();
    for m in routes {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        let Some((dst, oif)) = main_table_entry(&r).filter(|(dst, _)| keep(dst)) else {
            continue;
        };
        let name = match oif {
            Some(i) => names.entry(i).or_insert_with(|| link_name_by_index(nl, i)).clone(),
            None => String::new(),
        };
        out.push((dst, name));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A link's name by index; empty if it vanished meanwhile (the route then
/// goes with it, and an empty name only shows in a message).
fn link_name_by_index(nl: &mut Netlink, index: u32) -> String {
    let mut req = LinkMessage::default();
    req.header.index = index;
    match nl.get(RouteNetlinkMessage::GetLink(req)) {
        Ok(RouteNetlinkMessage::NewLink(l)) => link_name(&l).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// (destination, output ifindex) of a non-default IPv4 route in the main table.
fn main_table_entry(r: &RouteMessage) -> Option<(Ipv4Net, Option<u32>)> {
    if r.header.address_family != AddressFamily::Inet || r.header.destination_prefix_length == 0 {
        return None;
    }
    // Table ids above 255 only fit in RTA_TABLE; the header byte then says
    // RT_TABLE_COMPAT, so the attribute wins when present.
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) if oif.is_none() => oif = hops.first().map(|h| h.interface_index),
            _ => {}
        }
    }
    let net = Ipv4Net::new(dst?, r.header.destination_prefix_length).ok()?;
    Some((net.trunc(), oif))
}
