//! Leaf bridges: more job ports for one hub bridge's L2 domain. A Linux
//! bridge takes at most 1023 ports (BR_MAX_PORTS), so the jobs past what the
//! hub holds go on leaves, each linked to the hub by one veth pair (its
//! uplink: one port on either side). A leaf has no address, no IPv6 and a
//! MAC of its own (a copy of the hub's would make each bridge take frames to
//! the gateway for its own); its jobs reach the gateway and every job of the
//! hub and the other leaves at L2, so the host routes and forwards nothing
//! between bridges, and NAT egress (which matches the hub by name, where
//! every job's routed packet enters the host) needs nothing per leaf.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

use super::bridge::ensure_bridge_link;
use super::error::NetworkError;
use super::iface::{check_ifname, check_mtu};
use super::ipv6;
use super::link::{alias_message, get_link, link_info, master_message, up_message, veth_pair_message};
use super::netlink::Netlink;
use super::owner::{Foreign, LinkOwner, Role};

/// A leaf of a hub and the names of its uplink, as the state store names
/// them (`state::uplink_names`).
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub name: String,
    /// The leaf's number in its domain (1..): part of its MAC.
    pub number: u16,
    /// The uplink's end on the hub and its end on the leaf.
    pub uplink: (String, String),
    pub mtu: u32,
}

/// The leaf's MAC: locally administered (02), `72` for "leaf" (jobs' are
/// 02:42:…, from their IPs), the hub's ifindex and the leaf's number, so
/// that no two bridges of one host share one.
fn leaf_mac(hub: u32, number: u16) -> [u8; 6] {
    let [_, a, b, c] = hub.to_be_bytes();
    let [_, n] = number.to_be_bytes();
    [0x02, 0x72, a, b, c, n]
}

/// The leaf's ifindex if the leaf and its uplink are all in place (the
/// leaf an up bridge of `owner`'s, both uplink ends `owner`'s, up and on
/// the hub and the leaf): a job's start path on a leaf, three lookups and
/// nothing changed. `None` if anything is missing or not as set up.
pub(crate) fn leaf_ready(
    nl: &mut Netlink,
    hub: u32,
    leaf: &LeafSpec,
    owner: &LinkOwner,
) -> Result<Option<u32>, NetworkError> {
    let mut look = |name: &str| {
        get_link(nl, name)
            .map(|l| l.map(|l| link_info(&l)))
            .map_err(|e| NetworkError::netlink(format!("look up {name}"), e))
    };
    let Some(bridge) = look(&leaf.name)? else { return Ok(None) };
    let ours = |i: &super::link::LinkInfo| i.up && owner.check(i.alias.as_deref()).is_ok();
    if bridge.kind.as_deref() != Some("bridge") || !ours(&bridge) {
        return Ok(None);
    }
    let (on_hub, on_leaf) = (look(&leaf.uplink.0)?, look(&leaf.uplink.1)?);
    let attached =
        |end: &Option<super::link::LinkInfo>, to: u32| end.as_ref().is_some_and(|i| ours(i) && i.master == Some(to));
    Ok((attached(&on_hub, hub) && attached(&on_leaf, bridge.index)).then_some(bridge.index))
}

/// Makes the leaf and its uplink whatever part of them is missing, and
/// returns the leaf's ifindex. Idempotent; run it under the state lock,
/// which is what keeps two runners from making one uplink twice (the
/// bridge itself survives such a race, see `bridge::create_bridge`). A
/// link of the leaf's or an uplink end's name that is not `owner`'s is
/// refused, and left as it is.
pub(crate) fn ensure_leaf(nl: &mut Netlink, hub: u32, leaf: &LeafSpec, owner: &LinkOwner) -> Result<u32, NetworkError> {
    let (up_hub, up_leaf) = (&leaf.uplink.0, &leaf.uplink.1);
    for name in [&leaf.name, up_hub, up_leaf] {
        check_ifname(name)?;
    }
    check_mtu(&leaf.name, leaf.mtu)?;
    let index = ensure_bridge_link(nl, &leaf.name, leaf_mac(hub, leaf.number), leaf.mtu, owner)?;
    let look = |nl: &mut Netlink, name: &str| {
        get_link(nl, name)
            .map(|l| l.map(|l| link_info(&l)))
            .map_err(|e| NetworkError::netlink(format!("look up {name}"), e))
    };
    let ends = match (look(nl, up_hub)?, look(nl, up_leaf)?) {
        (Some(h), Some(l)) => (h, l),
        (None, None) => {
            create_uplink(nl, up_hub, up_leaf, leaf.mtu)?;
            match (look(nl, up_hub)?, look(nl, up_leaf)?) {
                (Some(h), Some(l)) => (h, l),
                _ => {
                    return Err(NetworkError::Unexpected {
                        op: format!("create the uplink {up_hub} of {}", leaf.name),
                        reason: "it vanished right after creation (deleted concurrently?)".into(),
                    });
                }
            }
        }
        // One end without the other is no pair we made: deleting either
        // end of a veth deletes both.
        (h, _) => {
            let name = if h.is_some() { up_hub } else { up_leaf };
            return Err(NetworkError::Unexpected {
                op: format!("link leaf {} to its hub", leaf.name),
                reason: format!("{name} exists without its peer; delete it (ip link del {name}) and retry"),
            });
        }
    };
    // A just-made pair has no marker yet (the kernel ignores IFLA_IFALIAS
    // when creating): one with another's marker is refused, ours or none
    // is (re)marked, attached and brought up.
    for (name, end) in [(up_hub, &ends.0), (up_leaf, &ends.1)] {
        if end.alias.is_some()
            && let Err(other) = owner.check(end.alias.as_deref())
        {
            return Err(NetworkError::NotOurs(Box::new(Foreign {
                name: name.clone(),
                role: Role::Veth,
                owner: other,
                ours: owner.label().to_string(),
            })));
        }
    }
    // Each step is for both ends, hub's first; IPv6 address generation off
    // (see ipv6::addr_gen_off_message) only where the link will have IPv6.
    let mut steps: Vec<(&str, [RouteNetlinkMessage; 2])> = vec![
        ("mark", [alias_message(ends.0.index, &owner.alias()), alias_message(ends.1.index, &owner.alias())]),
        ("attach", [master_message(ends.0.index, hub), master_message(ends.1.index, index)]),
    ];
    if let (Some(h), Some(l)) =
        (ipv6::addr_gen_off_message(ends.0.index, leaf.mtu), ipv6::addr_gen_off_message(ends.1.index, leaf.mtu))
    {
        steps.push(("turn IPv6 address generation off on", [h, l]));
    }
    steps.push(("bring up", [up_message(ends.0.index), up_message(ends.1.index)]));
    let what: Vec<&str> = steps.iter().map(|(w, _)| *w).collect();
    let msgs = steps.into_iter().flat_map(|(_, m)| m).map(|m| (m, 0)).collect();
    nl.request_all(msgs).map_err(|(i, e)| {
        let name = if i % 2 == 0 { up_hub } else { up_leaf };
        let what = what.get(i / 2).copied().unwrap_or("set up");
        NetworkError::netlink(format!("{what} {name}, the uplink of leaf {}", leaf.name), e)
    })?;
    Ok(index)
}

/// The uplink pair, both ends in the host netns, down and on no bridge.
fn create_uplink(nl: &mut Netlink, on_hub: &str, on_leaf: &str, mtu: u32) -> Result<(), NetworkError> {
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(on_leaf.to_string()));
    nl.request(veth_pair_message(on_hub, mtu, peer), NLM_F_CREATE | NLM_F_EXCL)
        .map_err(|e| NetworkError::netlink(format!("create the uplink {on_hub} (peer {on_leaf})"), e))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::network::bridge::ensure_bridge_with;
    use crate::network::test_netns::{ipv6_addresses, new_netns};

    fn spec(name: &str, number: u16) -> LeafSpec {
        LeafSpec { name: name.into(), number, uplink: (format!("{name}-h"), format!("{name}-l")), mtu: 1400 }
    }

    #[test]
    fn macs_differ_per_leaf_and_hub() {
        assert_ne!(leaf_mac(7, 1), leaf_mac(7, 2));
        assert_ne!(leaf_mac(7, 1), leaf_mac(8, 1));
        assert_eq!(leaf_mac(7, 1)[0] & 0x03, 0x02, "locally administered unicast");
    }

    /// In a private netns: a leaf is made with its uplink on hub and leaf,
    /// found ready, made again without change; a missing uplink is made
    /// again; a foreign link of an uplink's name is refused.
    #[test]
    fn a_leaf_is_made_once_and_repaired() {
        if !crate::test_require_root() {
            return;
        }
        let ns = new_netns();
        let mut nl = Netlink::in_netns(ns.as_fd()).unwrap();
        let (_dir, owner) = crate::network::owner::test_owner();
        let net = "198.18.253.0/24".parse().unwrap();
        let hub = ensure_bridge_with(&mut nl, "rptl", "198.18.253.1".parse().unwrap(), net, 1400, &owner).unwrap();
        let leaf = spec("rptla", 1);
        assert_eq!(leaf_ready(&mut nl, hub, &leaf, &owner).unwrap(), None);
        let index = ensure_leaf(&mut nl, hub, &leaf, &owner).unwrap();
        assert_eq!(leaf_ready(&mut nl, hub, &leaf, &owner).unwrap(), Some(index));
        assert_eq!(ensure_leaf(&mut nl, hub, &leaf, &owner).unwrap(), index, "idempotent");
        let (h, l) = (get_link(&mut nl, "rptla-h").unwrap().unwrap(), get_link(&mut nl, "rptla-l").unwrap().unwrap());
        for end in [&h, &l] {
            assert!(end.attributes.contains(&LinkAttribute::NumTxQueues(1)), "one queue: {end:?}");
        }
        let (h, l) = (link_info(&h), link_info(&l));
        assert_eq!((h.master, l.master), (Some(hub), Some(index)));
        assert!(h.up && l.up);
        let (hi, li) = (h.index, l.index);
        assert_eq!(
            (ipv6_addresses(&mut nl, hi), ipv6_addresses(&mut nl, li)),
            (vec![], vec![]) as (Vec<std::net::Ipv6Addr>, Vec<_>),
            "IPv6 on the uplink"
        );

        // The uplink deleted behind our back: not ready, made again.
        crate::network::link::delete_index(&mut nl, h.index, "rptla-h").unwrap();
        assert_eq!(leaf_ready(&mut nl, hub, &leaf, &owner).unwrap(), None);
        assert_eq!(ensure_leaf(&mut nl, hub, &leaf, &owner).unwrap(), index);
        assert!(leaf_ready(&mut nl, hub, &leaf, &owner).unwrap().is_some());

        // Another state dir's leaf of that name is refused.
        let (_other_dir, other) = crate::network::owner::test_owner();
        assert!(leaf_ready(&mut nl, hub, &leaf, &other).unwrap().is_none());
        let e = ensure_leaf(&mut nl, hub, &leaf, &other).unwrap_err();
        assert!(matches!(&e, NetworkError::NotOurs(_)), "{e}");
    }
}
