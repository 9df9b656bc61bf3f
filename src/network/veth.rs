//! Plugging one job's netns into the bridge with a veth pair.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::address::address_message;
use super::error::NetworkError;
use super::iface::{check_ifname, check_mtu, mac_for_ip};
use super::ipv6;
use super::link::{
    Deletion, LOOPBACK_IFINDEX, alias_message, delete_index, delete_own_with, down_message, get_link, link_name,
    master_message, pending_name, rename_message, up_message, veth_pair_message,
};
use super::netlink::{Netlink, NlError};
use super::owner::{Foreign, LinkOwner, Role};
use super::port_filter;

/// The job end's name inside its netns.
pub const JOB_IFNAME: &str = "eth0";

/// One job's veth: the host end `host_name` (by convention `{bridge}-{slot}`)
/// is enslaved to `bridge` (the hub or a leaf of it, ifindex `bridge_index`);
/// the job end is `eth0` with `ip/prefix` and a
/// default route via `gateway`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub host_name: String,
    pub bridge: String,
    pub bridge_index: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
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

/// What attaching made: the host end's ifindex, for teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedVeth {
    pub host_index: u32,
}

/// A veth made before its job's lease was known (see `create_pending`).
#[derive(Debug)]
pub struct PendingVeth {
    name: String,
    host_index: u32,
    /// In the job netns's own index space; `None` if the kernel did not say.
    peer_index: Option<u32>,
}

/// Creates a job's veth before its address and slot are known, so that
/// the kernel's work on it (the costliest step of plugging a job in, about
/// a millisecond) can overlap with taking the lease: one RTM_NEWLINK makes
/// the host end (a [`PENDING_PREFIX`](super::link::PENDING_PREFIX) name, down,
/// on no bridge yet: which bridge of the domain is the lease's to say, and a
/// pending veth on the hub would hold one of its ports while many jobs start)
/// and its peer `eth0` already inside `netns` (so
/// there is never an `eth0` in the host netns to clash with another
/// job's), both with the MTU; a second request gives the host end its
/// port filter's qdisc. The kernel ignores IFLA_IFALIAS in a creating
/// RTM_NEWLINK, so the marker comes with the rename.
pub(crate) fn create_pending(host: &mut Netlink, mtu: u32, netns: BorrowedFd<'_>) -> Result<PendingVeth, NetworkError> {
    let mut name = pending_name();
    check_ifname(&name)?;
    check_mtu(&name, mtu)?;
    let echoed = match create_veth(host, &name, mtu, netns) {
        // EEXIST is either a link of our name (a runner of the same pid in
        // another pid namespace, or a recycled pid's whose netns something
        // keeps) or eth0 in the netns. Neither is ours to delete: the next
        // name settles the first case, and fails again with a clear error
        // in the second.
        Err(e) if e.raw() == Some(libc::EEXIST) => {
            name = pending_name();
            log::debug!("pending veth name taken, trying {name}");
            create_veth(host, &name, mtu, netns)
        }
        r => r,
    };
    let op = || format!("create veth {name} (peer {JOB_IFNAME} in the job netns)");
    let echoed = echoed.map_err(|e| NetworkError::netlink(op(), e))?;
    let (host_index, peer_index) = match echoed {
        Some((h, p)) => (h, Some(p)),
        // A kernel without NLM_F_ECHO for new links (before 6.1).
        None => {
            let found = get_link(host, &name).map_err(|e| NetworkError::netlink(format!("look up {name}"), e))?;
            let index = found.map(|l| l.header.index).ok_or_else(|| NetworkError::Unexpected {
                op: op(),
                reason: "the veth vanished right after creation".into(),
            })?;
            (index, None)
        }
    };
    log::trace!("veth {name} created");
    // The port filter's qdisc now, its filter with the lease (see
    // `port_filter` on why not both at once).
    if let Err((_, e)) = host.request_all(vec![port_filter::qdisc_message(host_index)]) {
        let failed = NetworkError::netlink(
            format!("add an ingress qdisc to {name} (its port filter's; needs the kernel's sch_ingress)"),
            e,
        );
        return Err(discarded(host, host_index, failed));
    }
    Ok(PendingVeth { name, host_index, peer_index })
}

/// Gives a pending veth its job's lease: the host end `owner`'s marker,
/// the filter that lets the job send only from its own MAC and IPv4
/// address, its name `spec.host_name`, its bridge and up; the job end its MAC (from
/// the IP), address, up, `lo` up and the default route, through `job`, a
/// socket in its netns. On failure the veth is deleted again (which
/// removes both ends).
///
/// A leftover host link of the final name that carries `owner`'s marker
/// (a runner of this state dir killed before its teardown; names are per
/// lease slot, so it cannot be a live job's) is deleted and the rename
/// retried once. Any other link of that name is left alone and the job
/// refused.
pub(crate) fn finish_pending(
    host: &mut Netlink,
    pending: PendingVeth,
    spec: &VethSpec,
    job: &mut Netlink,
    owner: &LinkOwner,
) -> Result<AttachedVeth, NetworkError> {
    let result = check_spec(spec)
        .and_then(|()| name_and_up(host, &pending, spec, owner))
        .and_then(|()| configure_job_side(spec, pending.peer_index, job));
    match result {
        Ok(()) => Ok(AttachedVeth { host_index: pending.host_index }),
        Err(e) => Err(discarded(host, pending.host_index, e)),
    }
}

/// The host end: marked, given its port filter, renamed (it is down, as a
/// rename needs) and brought up, in one round trip. The marker goes first,
/// so a link of our name always carries it. The filter (see
/// `port_filter`) comes before the up, so the port never passes a frame
/// without it, and before the rename: the kernel goes on after a failed
/// request, and the first failure is the one reported, so a failed filter
/// is never mistaken for a rename that met a leftover. Should the filter
/// fail, the up still runs, but `finish_pending` then deletes the
/// veth before the job is let go: it never runs behind an open port.
fn name_and_up(
    host: &mut Netlink,
    pending: &PendingVeth,
    spec: &VethSpec,
    owner: &LinkOwner,
) -> Result<(), NetworkError> {
    let index = pending.host_index;
    let no_ipv6 = ipv6::addr_gen_off_message(index, spec.mtu);
    let with_ipv6_step = no_ipv6.is_some();
    let rename = || (rename_message(index, &spec.host_name), 0);
    let filter = port_filter::filter_message(index, spec.ip);
    const RENAME: usize = 2;
    let op = |i: usize| match i {
        0 => format!("mark {} as {}'s", pending.name, owner.label()),
        1 => format!("add the port filter of {} for {} (needs the kernel's cls_bpf)", pending.name, spec.ip),
        RENAME => format!("rename {} to {}", pending.name, spec.host_name),
        3 => format!("attach {} to bridge {}", spec.host_name, spec.bridge),
        4 if with_ipv6_step => format!("turn IPv6 address generation off on {}", spec.host_name),
        _ => format!("bring {} up", spec.host_name),
    };
    let master = (master_message(index, spec.bridge_index), 0);
    let mut steps = vec![(alias_message(index, &owner.alias()), 0), filter, rename(), master];
    steps.extend(no_ipv6.map(|m| (m, 0)));
    steps.push((up_message(index), 0));
    match host.request_all(steps) {
        Err((RENAME, e)) if e.raw() == Some(libc::EEXIST) => {
            match delete_own_with(host, &spec.host_name, owner, false)? {
                Deletion::Deleted => log::warn!("{}: a stale veth of this state dir, deleted", spec.host_name),
                Deletion::Missing => {}
                Deletion::Kept(other) => {
                    let (name, ours) = (spec.host_name.clone(), owner.label().to_string());
                    return Err(NetworkError::NotOurs(Box::new(Foreign {
                        name,
                        role: Role::Veth,
                        owner: other,
                        ours,
                    })));
                }
            }
            // The up above ran even though the rename failed; a running
            // link cannot be renamed (EBUSY): down first. The filter is
            // on it already.
            host.request_all(vec![(down_message(index), 0), rename(), (up_message(index), 0)]).map_err(|(i, e)| {
                let what = match i {
                    0 => format!("set {} down", pending.name),
                    1 => op(RENAME),
                    _ => op(RENAME + 2),
                };
                NetworkError::netlink(what, e)
            })
        }
        r => r.map_err(|(i, e)| NetworkError::netlink(op(i), e)),
    }
}

/// Deletes a pending veth (both ends).
pub(crate) fn discard(host: &mut Netlink, pending: PendingVeth) -> Result<(), NetworkError> {
    discard_index(host, pending.host_index)
}

fn discard_index(host: &mut Netlink, index: u32) -> Result<(), NetworkError> {
    delete_index(host, index, "veth").map(drop)
}

/// `failed`, after deleting the veth `index` that the failed step leaves
/// (with the deletion's own error too, if it failed).
fn discarded(host: &mut Netlink, index: u32, failed: NetworkError) -> NetworkError {
    match discard_index(host, index) {
        Ok(()) => failed,
        Err(d) => NetworkError::Multiple(vec![failed, d]),
    }
}

/// Creates the pair; `Some((host, peer))` ifindexes if the kernel echoed
/// the new link back (6.1 and later), `None` if it only ACKed.
fn create_veth(nl: &mut Netlink, name: &str, mtu: u32, netns: BorrowedFd<'_>) -> Result<Option<(u32, u32)>, NlError> {
    // Both ends down: the host end must be renamed later, which a running
    // link refuses, and the job end gets its MAC before it goes up.
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(JOB_IFNAME.to_string()));
    peer.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    let echoed = nl.request_echo(veth_pair_message(name, mtu, peer), NLM_F_CREATE | NLM_F_EXCL)?;
    Ok(echoed.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) if link_name(l) == Some(name) => {
            let peer = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(i) => Some(*i),
                _ => None,
            })?;
            Some((l.header.index, peer))
        }
        _ => None,
    }))
}

/// Address, `eth0` and `lo` up, default route: one batch over `nl`, a
/// socket in the job netns. `eth0` is the peer's ifindex if known, else
/// looked up.
fn configure_job_side(spec: &VethSpec, eth0: Option<u32>, nl: &mut Netlink) -> Result<(), NetworkError> {
    let index = match eth0 {
        Some(i) => i,
        None => {
            get_link(nl, JOB_IFNAME)
                .map_err(|e| NetworkError::netlink(format!("look up {JOB_IFNAME} in the job netns"), e))?
                .ok_or_else(|| NetworkError::Unexpected {
                    op: format!("configure {JOB_IFNAME} in the job netns"),
                    reason: "the veth peer is not there".into(),
                })?
                .header
                .index
        }
    };
    // In this order: the MAC while eth0 is down; the route's gateway must
    // be reachable through an address on an up link when the kernel
    // checks it. The MAC is derived from the IP so a reused address keeps
    // its MAC and neighbours' ARP caches stay valid.
    let mut mac = LinkMessage::default();
    mac.header.index = index;
    mac.attributes.push(LinkAttribute::Address(mac_for_ip(spec.ip).to_vec()));
    // Named only when one fails: no formatting on the job's start path.
    let no_ipv6 = ipv6::addr_gen_off_message(index, spec.mtu);
    // Step 2 is there only with IPv6: without it, later steps are one down.
    let skip = usize::from(no_ipv6.is_none());
    let step = |i: usize| match if i >= 2 { i + skip } else { i } {
        0 => format!("set the MAC of {JOB_IFNAME} in the job netns"),
        1 => format!("add {}/{} to {JOB_IFNAME} in the job netns", spec.ip, spec.prefix),
        2 => format!("turn IPv6 address generation off on {JOB_IFNAME} in the job netns"),
        3 => format!("bring {JOB_IFNAME} up in the job netns"),
        4 => "bring lo up in the job netns".to_string(),
        _ => format!("add default route via {} in the job netns", spec.gateway),
    };
    let mut steps = vec![
        (RouteNetlinkMessage::SetLink(mac), 0),
        (address_message(index, spec.ip, spec.prefix), NLM_F_CREATE | NLM_F_EXCL),
    ];
    steps.extend(no_ipv6.map(|m| (m, 0)));
    steps.extend([
        (up_message(index), 0),
        (up_message(LOOPBACK_IFINDEX), 0),
        (default_route_message(index, spec.gateway), NLM_F_CREATE | NLM_F_EXCL),
    ]);
    nl.request_all(steps).map_err(|(i, e)| NetworkError::netlink(step(i), e))
}

fn default_route_message(oif: u32, gateway: Ipv4Addr) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    // RTPROT_BOOT is what `ip route add` records for a static route.
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::test_netns::{ipv6_addresses, new_netns};
    use netlink_packet_route::link::LinkFlags;
    use std::os::fd::AsFd;

    use crate::network::owner::test_owner;

    /// A socket in the job netns, as the lease thread makes it for a run.
    fn job_side(netns: BorrowedFd<'_>) -> Netlink {
        Netlink::in_netns(netns).unwrap()
    }

    /// A veth made before its lease, then finished: the host end renamed
    /// and up, eth0 with the IP's MAC, address, default route, lo up. The
    /// peer's index is dropped first, to take the path of kernels that do
    /// not echo new links (before 6.1), where eth0 is looked up by name.
    /// Runs in two private netns (a "host" and a "job"), touching nothing real.
    #[test]
    fn a_pending_veth_is_finished_with_its_lease() {
        if !crate::test_require_root() {
            return;
        }
        let (host_ns, job_ns) = (new_netns(), new_netns());
        let mut spec = VethSpec {
            host_name: "rptu-0".into(),
            bridge: "rptu".into(),
            bridge_index: 0,
            ip: Ipv4Addr::new(198, 18, 250, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(198, 18, 250, 1),
            mtu: 1400,
        };
        let mut host = Netlink::in_netns(host_ns.as_fd()).unwrap();
        let net = "198.18.250.0/24".parse().unwrap();
        let (_dir, owner) = test_owner();
        let bridge =
            super::super::bridge::ensure_bridge_with(&mut host, "rptu", spec.gateway, net, 1400, &owner).unwrap();
        spec.bridge_index = bridge;
        let mut pending = create_pending(&mut host, spec.mtu, job_ns.as_fd()).unwrap();
        assert!(pending.name.starts_with(super::super::link::PENDING_PREFIX), "{}", pending.name);
        let peer = pending.peer_index.take().expect("this kernel echoes new links");
        assert!(
            port_filter::has_ingress_qdisc(&mut host, pending.host_index),
            "the filter's qdisc comes with the veth"
        );
        let attached = finish_pending(&mut host, pending, &spec, &mut job_side(job_ns.as_fd()), &owner).unwrap();
        let filter = port_filter::installed_len(&mut host, attached.host_index);
        assert_eq!(filter, Some(port_filter::program(spec.ip).len()), "the port filter, as made for the job");

        let h = get_link(&mut host, "rptu-0").unwrap().expect("the host end under its lease's name");
        assert_eq!(h.header.index, attached.host_index);
        assert!(h.header.flags.contains(LinkFlags::Up));
        assert!(h.attributes.contains(&LinkAttribute::Controller(bridge)), "on the lease's bridge: {h:?}");
        assert!(h.attributes.contains(&LinkAttribute::IfAlias(owner.alias())), "marked: {h:?}");
        let mut job = Netlink::in_netns(job_ns.as_fd()).unwrap();
        let eth0 = get_link(&mut job, JOB_IFNAME).unwrap().expect("eth0 in the job netns");
        assert_eq!(eth0.header.index, peer);
        assert!(eth0.header.flags.contains(LinkFlags::Up));
        assert!(eth0.attributes.contains(&LinkAttribute::Address(mac_for_ip(spec.ip).to_vec())));
        assert!(eth0.attributes.contains(&LinkAttribute::Mtu(1400)));
        // One queue each way on both ends (see `veth_pair_message`).
        for end in [&h, &eth0] {
            for queues in [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)] {
                assert!(end.attributes.contains(&queues), "{queues:?}: {end:?}");
            }
        }
        let lo = get_link(&mut job, "lo").unwrap().unwrap();
        assert!(lo.header.flags.contains(LinkFlags::Up));
        let routes = job.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default())).unwrap();
        let default_via_gateway = routes.iter().any(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => {
                r.header.destination_prefix_length == 0
                    && r.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet(spec.gateway)))
            }
            _ => false,
        });
        assert!(default_via_gateway, "{routes:?}");
        // No IPv6 on either end: the host's IPv6 tables do not grow with
        // its jobs (see ipv6::addr_gen_off_message).
        assert_eq!(
            ipv6_addresses(&mut host, attached.host_index),
            Vec::<std::net::Ipv6Addr>::new(),
            "IPv6 on the host end"
        );
        assert_eq!(ipv6_addresses(&mut job, peer), Vec::<std::net::Ipv6Addr>::new(), "IPv6 on eth0");
    }

    /// A leftover link of the final name is replaced; a failed finish
    /// deletes the pending veth.
    #[test]
    fn finishing_replaces_a_leftover_and_cleans_up_on_failure() {
        if !crate::test_require_root() {
            return;
        }
        let (host_ns, job_ns) = (new_netns(), new_netns());
        let mut host = Netlink::in_netns(host_ns.as_fd()).unwrap();
        let gw = Ipv4Addr::new(198, 18, 251, 1);
        let (_dir, owner) = test_owner();
        let net = "198.18.251.0/24".parse().unwrap();
        let bridge = super::super::bridge::ensure_bridge_with(&mut host, "rptv", gw, net, 1500, &owner).unwrap();
        // The leftover: another pending veth, renamed to the slot name.
        let other_ns = new_netns();
        let spec = |ip| VethSpec {
            host_name: "rptv-3".into(),
            bridge: "rptv".into(),
            bridge_index: bridge,
            ip,
            prefix: 24,
            gateway: gw,
            mtu: 1500,
        };
        let leftover = create_pending(&mut host, 1500, other_ns.as_fd()).unwrap();
        finish_pending(
            &mut host,
            leftover,
            &spec(Ipv4Addr::new(198, 18, 251, 3)),
            &mut job_side(other_ns.as_fd()),
            &owner,
        )
        .unwrap();
        let p = create_pending(&mut host, 1500, job_ns.as_fd()).unwrap();
        let attached =
            finish_pending(&mut host, p, &spec(Ipv4Addr::new(198, 18, 251, 4)), &mut job_side(job_ns.as_fd()), &owner)
                .unwrap();
        let h = get_link(&mut host, "rptv-3").unwrap().unwrap();
        assert_eq!(h.header.index, attached.host_index, "the new veth took the name");
        assert!(h.header.flags.contains(LinkFlags::Up));

        // A job that got no lease: its pending veth goes while the job's
        // netns still lives (which would otherwise keep it).
        let p = create_pending(&mut host, 1500, job_ns.as_fd());
        let unleased = new_netns();
        let p2 = create_pending(&mut host, 1500, unleased.as_fd()).unwrap();
        let name = p2.name.clone();
        discard(&mut host, p2).unwrap();
        assert!(get_link(&mut host, &name).unwrap().is_none(), "{name} left after discard");
        assert!(p.is_err(), "eth0 is taken in that netns already");

        // A gateway outside the subnet: the route fails, the veth goes.
        let third_ns = new_netns();
        let p = create_pending(&mut host, 1500, third_ns.as_fd()).unwrap();
        let (name, index) = (p.name.clone(), p.host_index);
        let bad = VethSpec {
            host_name: "rptv-4".into(),
            gateway: Ipv4Addr::new(198, 18, 99, 1),
            ..spec(Ipv4Addr::new(198, 18, 251, 5))
        };
        let e = finish_pending(&mut host, p, &bad, &mut job_side(third_ns.as_fd()), &owner).unwrap_err();
        assert!(e.to_string().contains("default route"), "{e}");
        assert!(
            get_link(&mut host, "rptv-4").unwrap().is_none() && get_link(&mut host, &name).unwrap().is_none(),
            "veth #{index} left"
        );
    }

    /// A link of the final name that is not this state dir's (another state
    /// dir's veth, or one made by hand) is left up and named as it was, and
    /// the job's pending veth goes.
    #[test]
    fn finishing_keeps_a_link_that_is_not_ours() {
        if !crate::test_require_root() {
            return;
        }
        let host_ns = new_netns();
        let mut host = Netlink::in_netns(host_ns.as_fd()).unwrap();
        let gw = Ipv4Addr::new(198, 18, 252, 1);
        let ((_a, ours), (_b, theirs)) = (test_owner(), test_owner());
        let net = "198.18.252.0/24".parse().unwrap();
        let bridge = super::super::bridge::ensure_bridge_with(&mut host, "rptw", gw, net, 1500, &ours).unwrap();
        let spec = |slot: u8| VethSpec {
            host_name: format!("rptw-{slot}"),
            bridge: "rptw".into(),
            bridge_index: bridge,
            ip: Ipv4Addr::new(198, 18, 252, 2 + slot),
            prefix: 24,
            gateway: gw,
            mtu: 1500,
        };
        let (their_ns, job_ns) = (new_netns(), new_netns());
        let theirs_pending = create_pending(&mut host, 1500, their_ns.as_fd()).unwrap();
        let kept =
            finish_pending(&mut host, theirs_pending, &spec(0), &mut job_side(their_ns.as_fd()), &theirs).unwrap();
        let p = create_pending(&mut host, 1500, job_ns.as_fd()).unwrap();
        let pending_name = p.name.clone();
        let e = finish_pending(&mut host, p, &spec(0), &mut job_side(job_ns.as_fd()), &ours).unwrap_err();
        assert!(matches!(&e, NetworkError::NotOurs(f) if f.role == Role::Veth), "{e}");
        assert!(e.to_string().contains(theirs.label()), "{e}");
        let h = get_link(&mut host, "rptw-0").unwrap().expect("their veth is still there");
        assert_eq!(h.header.index, kept.host_index);
        assert!(h.header.flags.contains(LinkFlags::Up), "and still up");
        assert!(get_link(&mut host, &pending_name).unwrap().is_none(), "our pending veth is gone");
    }

    /// A batch whose middle request fails reports that request's index, and
    /// the kernel still carries out the ones after it.
    #[test]
    fn a_failed_request_in_a_batch_is_named_by_its_index() {
        if !crate::test_require_root() {
            return;
        }
        let ns = new_netns();
        let mut nl = Netlink::in_netns(ns.as_fd()).unwrap();
        let bad = address_message(LOOPBACK_IFINDEX, Ipv4Addr::new(198, 18, 250, 9), 33);
        let r = nl.request_all(vec![
            (address_message(LOOPBACK_IFINDEX, Ipv4Addr::new(198, 18, 250, 8), 32), NLM_F_CREATE | NLM_F_EXCL),
            (bad, NLM_F_CREATE | NLM_F_EXCL),
            (up_message(LOOPBACK_IFINDEX), 0),
        ]);
        let (index, e) = r.expect_err("prefix 33 is refused");
        assert_eq!((index, e.raw()), (1, Some(libc::EINVAL)));
        let lo = get_link(&mut nl, "lo").unwrap().unwrap();
        assert!(lo.header.flags.contains(LinkFlags::Up), "the request after the failure ran");
        // The socket is in step again: a plain request works.
        nl.request(up_message(LOOPBACK_IFINDEX), 0).unwrap();
    }
}
