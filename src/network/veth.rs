//! Plugging one job's netns into the bridge with a veth pair.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::bridge::address_message;
use super::link::{LOOPBACK_IFINDEX, delete_link_with, get_link, host_socket, link_name, up_message};
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

/// What attaching made: the host end's ifindex, for teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedVeth {
    pub host_index: u32,
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
pub fn attach_job(spec: &VethSpec, netns: BorrowedFd<'_>) -> Result<AttachedVeth, NetworkError> {
    let mut host = host_socket()?;
    let bridge = get_link(&mut host, &spec.bridge)
        .map_err(|e| NetworkError::netlink(format!("look up bridge {}", spec.bridge), e))?
        .ok_or_else(|| NetworkError::Unexpected {
            op: format!("attach {} to bridge {}", spec.host_name, spec.bridge),
            reason: "the bridge does not exist".into(),
        })?
        .header
        .index;
    attach_job_with(&mut host, spec, bridge, netns)
}

/// [`attach_job`] on an open host socket, with the bridge's ifindex known
/// (from `ensure_bridge`): two netlink round trips on the job's start path,
/// one per netns.
pub(crate) fn attach_job_with(
    host: &mut Netlink,
    spec: &VethSpec,
    bridge: u32,
    netns: BorrowedFd<'_>,
) -> Result<AttachedVeth, NetworkError> {
    check_spec(spec)?;
    let op =
        || format!("create veth {} on bridge {} (peer {JOB_IFNAME} in the job netns)", spec.host_name, spec.bridge);
    let echoed = match create_veth(host, spec, bridge, netns) {
        Ok(echoed) => echoed,
        Err(e) if e.raw() == Some(libc::EEXIST) => {
            // EEXIST is either our host name (stale) or eth0 in the netns;
            // deleting the host name is right in the first case and a no-op
            // in the second, where the retry then fails with a clear error.
            log::warn!("{}: exists, deleting the stale link and retrying", spec.host_name);
            delete_link_with(host, &spec.host_name)?;
            create_veth(host, spec, bridge, netns).map_err(|e| NetworkError::netlink(op(), e))?
        }
        Err(e) => return Err(NetworkError::netlink(op(), e)),
    };
    log::trace!("veth {} created", spec.host_name);
    finish_attach(host, spec, echoed, netns)
}

/// The job side of a veth just created, and the host end's ifindex; on
/// failure the veth is deleted again.
fn finish_attach(
    host: &mut Netlink,
    spec: &VethSpec,
    echoed: Option<Made>,
    netns: BorrowedFd<'_>,
) -> Result<AttachedVeth, NetworkError> {
    let result = match echoed {
        Some(made) => configure_job_side(spec, Some(made.peer_index), netns).map(|()| made.host_index),
        // A kernel without NLM_F_ECHO for new links (before 6.1): look both up.
        None => configure_job_side(spec, None, netns).and_then(|()| {
            get_link(host, &spec.host_name)
                .map_err(|e| NetworkError::netlink(format!("look up {}", spec.host_name), e))?
                .map(|l| l.header.index)
                .ok_or_else(|| NetworkError::Unexpected {
                    op: format!("look up {}", spec.host_name),
                    reason: "the veth vanished right after creation".into(),
                })
        }),
    };
    match result {
        Ok(host_index) => Ok(AttachedVeth { host_index }),
        // Deleting the host end takes the peer with it, wherever it is.
        Err(e) => Err(match delete_link_with(host, &spec.host_name) {
            Ok(_) => e,
            Err(d) => NetworkError::Multiple(vec![e, d]),
        }),
    }
}

/// The ifindexes of a veth just made, from the kernel's echo of it.
struct Made {
    host_index: u32,
    /// In the job netns's own index space (IFLA_LINK of the host end).
    peer_index: u32,
}

/// Creates the pair; `Some` with both ifindexes if the kernel echoed the
/// new link back (6.1 and later), `None` if it only ACKed.
fn create_veth(nl: &mut Netlink, spec: &VethSpec, bridge: u32, netns: BorrowedFd<'_>) -> Result<Option<Made>, NlError> {
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
    let echoed = nl.request_echo(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
    Ok(echoed.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) if link_name(l) == Some(spec.host_name.as_str()) => {
            let peer_index = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(i) => Some(*i),
                _ => None,
            })?;
            Some(Made { host_index: l.header.index, peer_index })
        }
        _ => None,
    }))
}

/// Address, `eth0` and `lo` up, default route: one batch over a socket in
/// the job netns. `eth0` is the peer's ifindex if known, else looked up.
fn configure_job_side(spec: &VethSpec, eth0: Option<u32>, netns: BorrowedFd<'_>) -> Result<(), NetworkError> {
    let mut nl =
        Netlink::in_netns(netns).map_err(|source| NetworkError::Socket { place: "in the job netns".into(), source })?;
    let index = match eth0 {
        Some(i) => i,
        None => {
            get_link(&mut nl, JOB_IFNAME)
                .map_err(|e| NetworkError::netlink(format!("look up {JOB_IFNAME} in the job netns"), e))?
                .ok_or_else(|| NetworkError::Unexpected {
                    op: format!("configure {JOB_IFNAME} in the job netns"),
                    reason: "the veth peer is not there".into(),
                })?
                .header
                .index
        }
    };
    // In this order: the route's gateway must be reachable through an
    // address on an up link when the kernel checks it.
    let steps = [
        format!("add {}/{} to {JOB_IFNAME} in the job netns", spec.ip, spec.prefix),
        format!("bring {JOB_IFNAME} up in the job netns"),
        "bring lo up in the job netns".to_string(),
        format!("add default route via {} in the job netns", spec.gateway),
    ];
    nl.request_all(vec![
        (address_message(index, spec.ip, spec.prefix), NLM_F_CREATE | NLM_F_EXCL),
        (up_message(index), 0),
        (up_message(LOOPBACK_IFINDEX), 0),
        (default_route_message(index, spec.gateway), NLM_F_CREATE | NLM_F_EXCL),
    ])
    .map_err(|(i, e)| NetworkError::netlink(steps.get(i).cloned().unwrap_or_default(), e))
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
    use std::os::fd::{AsFd, OwnedFd};

    /// A new netns held by an fd, made on a thread that exits at once.
    fn new_netns() -> OwnedFd {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
        })
        .join()
        .unwrap()
    }

    /// The path for kernels that do not echo new links (before 6.1): both
    /// ifindexes are looked up, and the job side comes out the same. Runs
    /// in two private netns (a "host" and a "job"), touching nothing real.
    #[test]
    fn attach_without_echo_looks_the_indexes_up() {
        if !crate::test_require_root() {
            return;
        }
        let (host_ns, job_ns) = (new_netns(), new_netns());
        let spec = VethSpec {
            host_name: "rptu-0".into(),
            bridge: "rptu".into(),
            ip: Ipv4Addr::new(198, 18, 250, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(198, 18, 250, 1),
            mtu: 1400,
        };
        let mut host = Netlink::in_netns(host_ns.as_fd()).unwrap();
        let net = "198.18.250.0/24".parse().unwrap();
        let bridge = super::super::bridge::ensure_bridge_with(&mut host, "rptu", spec.gateway, net, 1400).unwrap();
        let echoed = create_veth(&mut host, &spec, bridge, job_ns.as_fd()).unwrap();
        let made = echoed.expect("this kernel echoes new links");
        let attached = finish_attach(&mut host, &spec, None, job_ns.as_fd()).unwrap();
        assert_eq!(attached.host_index, made.host_index);

        let mut job = Netlink::in_netns(job_ns.as_fd()).unwrap();
        let eth0 = get_link(&mut job, JOB_IFNAME).unwrap().expect("eth0 in the job netns");
        assert_eq!(eth0.header.index, made.peer_index);
        assert!(eth0.header.flags.contains(LinkFlags::Up));
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
