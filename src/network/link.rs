//! Link-level requests shared by the bridge and veth code: look a link up by
//! name, bring one up, delete one, list them.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::error::NetworkError;
use super::iface::check_ifname;
use super::netlink::{Netlink, NlError};

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
}

pub(crate) fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info =
        LinkInfo { index: msg.header.index, up: msg.header.flags.contains(LinkFlags::Up), kind: None, master: None };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Controller(m) => info.master = Some(*m),
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

/// Deletes a link by name; Ok(false) if it did not exist (teardown and gc
/// call it on names that may already be gone). Deleting either end of a veth
/// deletes the pair.
pub fn delete_link(name: &str) -> Result<bool, NetworkError> {
    check_ifname(name)?;
    let mut nl = host_socket()?;
    delete_link_with(&mut nl, name)
}

pub(crate) fn delete_link_with(nl: &mut Netlink, name: &str) -> Result<bool, NetworkError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match nl.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(NetworkError::netlink(format!("delete link {name}"), e)),
    }
}

/// Names of the host links whose name starts with `prefix` (gc lists
/// leftover `{bridge}-*` veths with it).
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>, NetworkError> {
    list_links(|name, _| name.starts_with(prefix))
}

/// Retired host veths (see [`HostNet::retire_link`](super::HostNet::retire_link))
/// still enslaved to `bridge`: what `repeatr gc` deletes for that bridge's
/// config.
pub fn retired_ports(bridge: &str) -> Result<Vec<String>, NetworkError> {
    let mut nl = host_socket()?;
    let Some(br) = get_link(&mut nl, bridge).map_err(|e| NetworkError::netlink(format!("look up {bridge}"), e))? else {
        return Ok(Vec::new());
    };
    list_links(|name, l| name.starts_with(RETIRED_PREFIX) && link_info(l).master == Some(br.header.index))
}

/// Names of the host links `keep` accepts, sorted.
fn list_links(keep: impl Fn(&str, &LinkMessage) -> bool) -> Result<Vec<String>, NetworkError> {
    let mut nl = host_socket()?;
    let req = LinkMessage::default();
    let links = nl.dump(RouteNetlinkMessage::GetLink(req)).map_err(|e| NetworkError::netlink("list links", e))?;
    let mut names: Vec<String> = links
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => link_name(l).filter(|n| keep(n, l)).map(str::to_string),
            _ => None,
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Brings `lo` up in the calling thread's netns. For `--net none`: the job
/// child calls it in its own fresh netns before exec (where `lo` starts down).
pub fn loopback_up() -> Result<(), NetworkError> {
    let mut nl = Netlink::new().map_err(|source| NetworkError::Socket { place: "in the job netns".into(), source })?;
    set_up(&mut nl, LOOPBACK_IFINDEX).map_err(|e| NetworkError::netlink("bring lo up in the job netns", e))
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
/// barriers, ~25 ms measured on this kind of machine against ~2 ms for
/// down and rename); the kernel destroys the pair anyway when the job's
/// netns goes, which it does once the job has exited. Ok(false) if the link is
/// gone already. `repeatr gc` deletes a retiree something keeps alive.
///
/// `index` is the link's ifindex if the caller knows it (from creating
/// it), which saves looking it up. An ifindex is not reused while the
/// kernel has others to hand out, so a known one still names this link or
/// none.
pub(crate) fn retire_link(nl: &mut Netlink, name: &str, index: Option<u32>) -> Result<bool, NetworkError> {
    check_ifname(name)?;
    let index = match index {
        Some(i) => i,
        None => match get_link(nl, name).map_err(|e| NetworkError::netlink(format!("look up {name}"), e))? {
            Some(link) => link.header.index,
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
