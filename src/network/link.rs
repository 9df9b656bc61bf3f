//! Link-level requests shared by the bridge and veth code: look a link up by
//! name, bring one up, mark one, delete one (ours only), list them.

use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    self as nl_link, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};

use super::error::NetworkError;
use super::iface::check_ifname;
use super::netlink::{Netlink, NlError};
use super::owner::{LinkOwner, OtherOwner};

/// Every netns gets its loopback device first, so it is always ifindex 1
/// (LOOPBACK_IFINDEX in the kernel).
pub(crate) const LOOPBACK_IFINDEX: u32 = 1;

pub(crate) fn host_socket() -> Result<Netlink, NetworkError> {
    Netlink::new().map_err(|source| NetworkError::Socket { place: "in the host netns".into(), source })
}

/// What we read back about a link.
#[derive(Debug)]
pub(crate) struct LinkInfo {
    pub index: u32,
    pub up: bool,
    pub kind: Option<String>,
    pub master: Option<u32>,
    /// IFLA_IFALIAS: repeatr's marker on the links it made (see `owner`).
    pub alias: Option<String>,
}

pub(crate) fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        master: None,
        alias: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Controller(m) => info.master = Some(*m),
            LinkAttribute::IfAlias(alias) => info.alias = Some(alias.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let netlink_packet_route::link::LinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

pub(crate) fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The link called `name`, or None if there is none (ENODEV).
pub(crate) fn get_link(nl: &mut Netlink, name: &str) -> Result<Option<LinkMessage>, NlError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match nl.get(RouteNetlinkMessage::GetLink(msg)) {
        Ok(RouteNetlinkMessage::NewLink(m)) => Ok(Some(m)),
        Ok(_) => Err(NlError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "GETLINK answered with something other than a link",
        ))),
        Err(e) if e.raw() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets IFF_UP on one link, touching no other flag (the change mask).
pub(crate) fn set_up(nl: &mut Netlink, index: u32) -> Result<(), NlError> {
    nl.request(up_message(index), 0)
}

/// The SETLINK that brings link `index` up.
pub(crate) fn up_message(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// The SETLINK that takes link `index` down (IFF_UP in the change mask,
/// cleared in the flags).
pub(crate) fn down_message(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// The SETLINK that renames link `index` to `name` (the kernel refuses it
/// with EBUSY while the link is up).
pub(crate) fn rename_message(index: u32, name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    RouteNetlinkMessage::SetLink(msg)
}

/// The SETLINK that enslaves link `index` to the bridge `master`.
pub(crate) fn master_message(index: u32, master: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Controller(master));
    RouteNetlinkMessage::SetLink(msg)
}

/// An RTM_NEWLINK that makes the veth pair `name` and `peer` (whose
/// message carries its name and, if it goes elsewhere, its netns), both
/// ends with `mtu` and one transmit and one receive queue. Unasked, the
/// kernel gives each end a queue per possible CPU, then `veth_init_queues`
/// cuts the real counts back to one; cutting transmit queues waits for an
/// RCU grace period (`synchronize_net`, expedited because RTNL is held, so
/// every other netlink user on the host waits with it), and each queue is
/// a kobject in sysfs, made and later removed. One queue is what a veth
/// runs with anyway.
pub(crate) fn veth_pair_message(name: &str, mtu: u32, mut peer: LinkMessage) -> RouteNetlinkMessage {
    let one_queue = [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)];
    peer.attributes.push(LinkAttribute::Mtu(mtu));
    peer.attributes.extend(one_queue.clone());
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    msg.attributes.extend(one_queue);
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        nl_link::LinkInfo::Kind(InfoKind::Veth),
        nl_link::LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

/// The SETLINK that gives link `index` the alias `alias` (repeatr's marker).
pub(crate) fn alias_message(index: u32, alias: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    RouteNetlinkMessage::SetLink(msg)
}

/// Deletes a link by name, whoever made it; Ok(false) if it did not exist.
/// Deleting either end of a veth deletes the pair. For tests and tools
/// that know the link is theirs: repeatr's own set-up and `gc` delete
/// with [`delete_own_link`], which leaves other state dirs' links alone.
pub fn delete_link(name: &str) -> Result<bool, NetworkError> {
    check_ifname(name)?;
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match host_socket()?.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(NetworkError::netlink(format!("delete link {name}"), e)),
    }
}

/// Deletes link `index` (`name` is for the message); Ok(false) if it is
/// gone already.
pub(crate) fn delete_index(nl: &mut Netlink, index: u32, name: &str) -> Result<bool, NetworkError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    match nl.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(NetworkError::netlink(format!("delete {name} (#{index})"), e)),
    }
}

/// What [`delete_own_link`] did (or, in a dry run, would do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// No link of that name.
    Missing,
    /// The link is not this state dir's: left as it is.
    Kept(OtherOwner),
}

/// Deletes the host link `name` if it carries `owner`'s marker; another
/// state dir's link, or one repeatr did not make, is kept (and said so).
/// `dry_run` only looks.
pub fn delete_own_link(name: &str, owner: &LinkOwner, dry_run: bool) -> Result<Deletion, NetworkError> {
    delete_own_with(&mut host_socket()?, name, owner, dry_run)
}

pub(crate) fn delete_own_with(
    nl: &mut Netlink,
    name: &str,
    owner: &LinkOwner,
    dry_run: bool,
) -> Result<Deletion, NetworkError> {
    check_ifname(name)?;
    let Some(link) = get_link(nl, name).map_err(|e| NetworkError::netlink(format!("look up {name}"), e))? else {
        return Ok(Deletion::Missing);
    };
    let info = link_info(&link);
    if let Err(other) = owner.check(info.alias.as_deref()) {
        return Ok(Deletion::Kept(other));
    }
    if dry_run {
        return Ok(Deletion::Deleted);
    }
    // By ifindex: the link deleted is the one just judged, even if it was
    // renamed meanwhile (a job's teardown renames its veth) and another
    // took its name.
    Ok(if delete_index(nl, info.index, name)? { Deletion::Deleted } else { Deletion::Missing })
}

/// Names of the host links whose name starts with `prefix` (gc lists
/// leftover `{bridge}-*` veths with it).
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>, NetworkError> {
    Ok(HostLinks::dump()?.names(|l| l.name.starts_with(prefix)))
}

/// The host's links from one dump, for the questions `gc` asks of them
/// (leftover veths, half-made bridges, retired ports): a dump per question
/// (and one per bridge of a domain) cost it ~10 ms each with 1000 jobs'
/// veths on the host.
pub struct HostLinks {
    links: Vec<HostLink>,
}

struct HostLink {
    name: String,
    info: LinkInfo,
    peer_netns_dying: bool,
}

impl HostLinks {
    pub fn dump() -> Result<HostLinks, NetworkError> {
        let mut nl = host_socket()?;
        let req = LinkMessage::default();
        let msgs = nl.dump(RouteNetlinkMessage::GetLink(req)).map_err(|e| NetworkError::netlink("list links", e))?;
        let mut links: Vec<HostLink> = msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(HostLink {
                    name: link_name(l)?.to_string(),
                    info: link_info(l),
                    peer_netns_dying: peer_netns_dying(l),
                }),
                _ => None,
            })
            .collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(HostLinks { links })
    }

    fn names(&self, keep: impl Fn(&HostLink) -> bool) -> Vec<String> {
        self.links.iter().filter(|l| keep(l)).map(|l| l.name.clone()).collect()
    }

    /// Names of the links, without those whose veth peer's network
    /// namespace the kernel is taking apart: a job that just died (its
    /// runner killed) leaves its veth for the few milliseconds until the
    /// kernel unregisters the pair with the netns, and `gc` must neither
    /// delete nor report that one as left behind. The kernel tells them
    /// apart: it forgets a dying netns's ids before it unregisters its
    /// devices, so such a veth shows IFLA_LINK_NETNSID -1
    /// (NETNSA_NSID_NOT_ASSIGNED), where a veth whose peer's netns something
    /// keeps alive shows its id.
    pub fn not_dying(&self) -> Vec<String> {
        self.names(|l| !l.peer_netns_dying)
    }

    /// Bridges a runner left half made (see `bridge::create_bridge`):
    /// named `rpt+<pid>-<n>` by a runner that no longer runs. `gc` deletes
    /// those that carry its marker. The pid is the creator's in its own pid
    /// namespace; one of another pid namespace with the same state dir
    /// looks dead from here and loses its half-made bridge, which fails its
    /// job's set-up with an error, never another job.
    pub fn stale_pending_bridges(&self) -> Vec<String> {
        self.names(|l| {
            l.info.kind.as_deref() == Some("bridge")
                && pending_pid(&l.name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
    }

    /// Retired host veths (see [`HostNet::retire_link`](super::HostNet::retire_link))
    /// still enslaved to `bridge`: what `repeatr gc` deletes for that
    /// bridge's config. One whose netns is being taken apart is on its way
    /// out, not kept.
    pub fn retired_ports(&self, bridge: &str) -> Vec<String> {
        let Some(br) = self.links.iter().find(|l| l.name == bridge) else { return Vec::new() };
        self.names(|l| {
            l.name.starts_with(RETIRED_PREFIX) && l.info.master == Some(br.info.index) && !l.peer_netns_dying
        })
    }
}

fn peer_netns_dying(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkNetNsId(id) if *id < 0))
}

/// Brings `lo` up in the calling thread's netns. For `--net none`: the job
/// child calls it in its own fresh netns before exec (where `lo` starts down).
pub fn loopback_up() -> Result<(), NetworkError> {
    let mut nl = Netlink::new().map_err(|source| NetworkError::Socket { place: "in the job netns".into(), source })?;
    set_up(&mut nl, LOOPBACK_IFINDEX).map_err(|e| NetworkError::netlink("bring lo up in the job netns", e))
}

/// Names of links made before they can have their own: `rpt+<pid>-<n>`
/// (hex), renamed once they can (a job's veth once its lease is known, a
/// bridge once it carries its marker). `+` occurs in no bridge or job veth
/// name, nor in retired ones (`rpt~`). A runner killed in between leaves
/// no veth behind (its job dies with it, and the kernel destroys the pair
/// with the job's netns), but may leave a bridge: see
/// [`stale_pending_bridges`].
pub const PENDING_PREFIX: &str = "rpt+";

/// The next pending name of this process. Another link may have it (a
/// runner of the same pid in another pid namespace): callers that meet
/// EEXIST take the next one rather than delete a link they cannot tell
/// from a live one.
pub(crate) fn pending_name() -> String {
    static MADE: AtomicU32 = AtomicU32::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("{PENDING_PREFIX}{:x}-{n:x}", std::process::id())
}

/// The pid in a pending name.
fn pending_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(PENDING_PREFIX)?.split_once('-')?;
    u16::from_str_radix(n, 16).ok()?;
    u32::from_str_radix(pid, 16).ok()
}

/// Names of retired host veths: `rpt~` and the link's ifindex in hex. An
/// ifindex is unique among the links that exist, so two retirees never
/// clash, whatever bridge or slot they came from; `~` occurs in no bridge
/// or job veth name. See [`HostNet::retire_link`](super::HostNet::retire_link).
pub const RETIRED_PREFIX: &str = "rpt~";

/// Frees the name of a job's host veth at teardown without waiting for
/// the device to be destroyed: the link is set down (a running interface
/// cannot be renamed: EBUSY) and renamed to `rpt~<ifindex>`. Deleting it
/// here would block the runner for the kernel's unregister path (RCU
/// barriers, ~25 ms against ~2 ms for down and rename on a 2-core VM); the kernel destroys the pair anyway when the job's
/// netns goes, which it does once the job has exited. Ok(false) if the link is
/// gone already. `repeatr gc` deletes a retiree something keeps alive.
///
/// `index` is the link's ifindex if the caller knows it (from creating
/// it), which saves looking it up. An ifindex is not reused while the
/// kernel has others to hand out, so a known one still names this link or
/// none. A link found by name is retired only if it carries `owner`'s
/// marker: a job that never got its veth must not take down another's.
pub(crate) fn retire_link(
    nl: &mut Netlink,
    name: &str,
    index: Option<u32>,
    owner: &LinkOwner,
) -> Result<bool, NetworkError> {
    check_ifname(name)?;
    let index = match index {
        Some(i) => i,
        None => match get_link(nl, name).map_err(|e| NetworkError::netlink(format!("look up {name}"), e))? {
            Some(link) => {
                let info = link_info(&link);
                if let Err(other) = owner.check(info.alias.as_deref()) {
                    log::debug!("{name} {other}: not retired");
                    return Ok(false);
                }
                info.index
            }
            None => return Ok(false),
        },
    };
    let retired = format!("{RETIRED_PREFIX}{index:x}");
    // Both in one round trip: the kernel handles them in order.
    match nl.request_all(vec![(down_message(index), 0), (rename_message(index, &retired), 0)]) {
        Ok(()) => Ok(true),
        Err((_, e)) if e.raw() == Some(libc::ENODEV) => Ok(false),
        Err((0, e)) => Err(NetworkError::netlink(format!("set {name} down"), e)),
        Err((_, e)) => Err(NetworkError::netlink(format!("rename {name} to {retired}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_whose_peer_netns_is_dying_is_told_apart() {
        let mut l = LinkMessage::default();
        assert!(!peer_netns_dying(&l), "no peer netns: a bridge, lo");
        l.attributes.push(LinkAttribute::LinkNetNsId(3));
        assert!(!peer_netns_dying(&l), "a peer in a live netns");
        l.attributes = vec![LinkAttribute::LinkNetNsId(-1)];
        assert!(peer_netns_dying(&l));
    }
}
