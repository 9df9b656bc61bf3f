//! Bridge networking over synchronous netlink.
//!
//! A runner does all its host-side steps through one [`HostNet`] socket:
//! the route check and `ensure_bridge`, then, after cloning the job child
//! (with `/proc/PID/ns/net`), `create_pending` while its lease is being
//! taken and `finish_pending` once it is known, and `retire_link` on the
//! host veth at teardown (the kernel destroys the pair with the job's
//! netns). The free functions ([`ensure_bridge`], [`delete_own_link`],
//! [`links_with_prefix`], [`HostLinks::dump`], [`host_ipv4_routes`]) open a
//! socket per call, for `gc` and tests.
//! `--net none` jobs call [`loopback_up`] themselves, inside their new netns.
//!
//! Every link is a state dir's ([`LinkOwner`]): the bridges and host veths
//! a runner makes carry its state dir's marker, and set-up and `gc` change
//! or delete no link that lacks it.
//!
//! A job's port lets through only what the job may send (`port_filter`:
//! IPv4 and ARP from its own MAC and address), and the bridge has no IPv6
//! (`ipv6`), so a job with NET_RAW can neither pose as another job nor
//! give the host routes.

mod address;
mod bridge;
pub mod egress;
mod error;
mod iface;
mod ipv6;
mod leaf;
mod link;
mod netlink;
mod nfnetlink;
mod owner;
mod port_filter;
pub mod port_map;
mod routes;
#[cfg(test)]
mod test_netns;
mod veth;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use bridge::ensure_bridge;
pub use error::NetworkError;
pub use iface::{IFNAMSIZ_MAX, check_ifname, mac_for_ip};
pub use leaf::LeafSpec;
pub use link::{
    Deletion, HostLinks, PENDING_PREFIX, RETIRED_PREFIX, delete_link, delete_own_link, links_with_prefix, loopback_up,
};
pub use owner::{Foreign, LinkOwner, OtherOwner, Role};
pub use routes::host_ipv4_routes;
pub use veth::{AttachedVeth, PendingVeth, VethSpec};

/// An rtnetlink socket in a job's netns, for the job side of its veth
/// (see [`HostNet::finish_pending`]).
pub struct JobSide(netlink::Netlink);

impl JobSide {
    /// Made by moving the calling thread into `netns` for good: see
    /// `Netlink::in_netns_from_here` for the one kind of thread that may.
    pub fn from_here(netns: std::os::fd::BorrowedFd<'_>) -> Result<JobSide, NetworkError> {
        netlink::Netlink::in_netns_from_here(netns)
            .map(JobSide)
            .map_err(|source| NetworkError::Socket { place: "in the job netns".into(), source })
    }
}

/// One rtnetlink socket in the host netns for all of a job's host-side
/// steps: the bridge check, the veth, its retirement, all as `owner`'s.
/// The free functions above open a socket per call; a runner on the job's
/// start path saves those and the lookups whose answers it already has.
pub struct HostNet {
    nl: netlink::Netlink,
    owner: LinkOwner,
}

impl HostNet {
    pub fn open(owner: LinkOwner) -> Result<HostNet, NetworkError> {
        Ok(HostNet { nl: link::host_socket()?, owner })
    }

    /// The host's IPv4 routes that overlap `subnet` (see [`host_ipv4_routes`]).
    pub fn routes_overlapping(&mut self, subnet: Ipv4Net) -> Result<Vec<(Ipv4Net, String)>, NetworkError> {
        routes::routes_overlapping(&mut self.nl, subnet)
    }

    /// See [`ensure_bridge`]; returns the bridge's ifindex.
    pub fn ensure_bridge(
        &mut self,
        name: &str,
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
        mtu: u32,
    ) -> Result<u32, NetworkError> {
        bridge::ensure_bridge_with(&mut self.nl, name, gateway, subnet, mtu, &self.owner)
    }

    /// See `veth::create_pending`: a veth into `netns`, before the job's
    /// lease (and so its bridge) is known.
    pub fn create_pending(
        &mut self,
        mtu: u32,
        netns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<PendingVeth, NetworkError> {
        veth::create_pending(&mut self.nl, mtu, netns)
    }

    /// See `leaf::leaf_ready`: the leaf's ifindex if it and its uplink to
    /// the hub (ifindex `hub`) are in place, with no change made.
    pub fn leaf_ready(&mut self, hub: u32, leaf: &LeafSpec) -> Result<Option<u32>, NetworkError> {
        leaf::leaf_ready(&mut self.nl, hub, leaf, &self.owner)
    }

    /// See `leaf::ensure_leaf`: makes what is missing of the leaf and its
    /// uplink; call it under the state lock.
    pub fn ensure_leaf(&mut self, hub: u32, leaf: &LeafSpec) -> Result<u32, NetworkError> {
        leaf::ensure_leaf(&mut self.nl, hub, leaf, &self.owner)
    }

    /// See `veth::finish_pending`: marks, filters, names, addresses and
    /// brings up a pending veth as `spec` says.
    pub fn finish_pending(
        &mut self,
        pending: PendingVeth,
        spec: &VethSpec,
        job: &mut JobSide,
    ) -> Result<AttachedVeth, NetworkError> {
        veth::finish_pending(&mut self.nl, pending, spec, &mut job.0, &self.owner)
    }

    /// Deletes a pending veth whose job got no lease.
    pub fn discard(&mut self, pending: PendingVeth) -> Result<(), NetworkError> {
        veth::discard(&mut self.nl, pending)
    }

    /// See [`delete_own_link`].
    pub fn delete_own_link(&mut self, name: &str) -> Result<Deletion, NetworkError> {
        link::delete_own_with(&mut self.nl, name, &self.owner, false)
    }

    /// See `link::retire_link`: frees the host veth's name at teardown
    /// (down, renamed to `rpt~<ifindex>`); `index` if known saves a lookup.
    pub fn retire_link(&mut self, name: &str, index: Option<u32>) -> Result<bool, NetworkError> {
        link::retire_link(&mut self.nl, name, index, &self.owner)
    }
}
