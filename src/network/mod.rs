//! Bridge networking over synchronous netlink.
//!
//! A runner does all its host-side steps through one [`HostNet`] socket:
//! the route check and `ensure_bridge`, then, after cloning the job child
//! (with `/proc/PID/ns/net`), `create_pending` while its lease is being
//! taken and `finish_pending` once it is known, and `retire_link` on the
//! host veth at teardown (the kernel destroys the pair with the job's
//! netns). The free functions ([`ensure_bridge`], [`delete_link`],
//! [`links_with_prefix`], [`retired_ports`], [`host_ipv4_routes`]) open a
//! socket per call, for `gc` and tests.
//! `--net none` jobs call [`loopback_up`] themselves, inside their new netns.

mod address;
mod bridge;
mod error;
mod iface;
mod link;
mod netlink;
mod routes;
mod veth;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use bridge::ensure_bridge;
pub use error::NetworkError;
pub use iface::{IFNAMSIZ_MAX, check_ifname, mac_for_ip};
pub use link::{RETIRED_PREFIX, delete_link, links_with_prefix, loopback_up, retired_ports};
pub use routes::host_ipv4_routes;
pub use veth::{AttachedVeth, PENDING_PREFIX, PendingVeth, VethSpec};

/// One rtnetlink socket in the host netns for all of a job's host-side
/// steps: the bridge check, the veth, its retirement. The free functions
/// above open a socket per call; a runner on the job's start path saves
/// those and the lookups whose answers it already has.
pub struct HostNet {
    nl: netlink::Netlink,
}

impl HostNet {
    pub fn open() -> Result<HostNet, NetworkError> {
        Ok(HostNet { nl: link::host_socket()? })
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
        bridge::ensure_bridge_with(&mut self.nl, name, gateway, subnet, mtu)
    }

    /// See `veth::create_pending`: a veth into `netns` on the bridge
    /// (name, ifindex), before the job's lease is known.
    pub fn create_pending(
        &mut self,
        bridge: (&str, u32),
        mtu: u32,
        netns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<PendingVeth, NetworkError> {
        veth::create_pending(&mut self.nl, bridge, mtu, netns)
    }

    /// See `veth::finish_pending`: names, addresses and brings up a
    /// pending veth as `spec` says.
    pub fn finish_pending(
        &mut self,
        pending: PendingVeth,
        spec: &VethSpec,
        netns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<AttachedVeth, NetworkError> {
        veth::finish_pending(&mut self.nl, pending, spec, netns)
    }

    /// Deletes a pending veth whose job got no lease.
    pub fn discard(&mut self, pending: PendingVeth) -> Result<(), NetworkError> {
        veth::discard(&mut self.nl, pending)
    }

    /// See [`delete_link`].
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NetworkError> {
        check_ifname(name)?;
        link::delete_link_with(&mut self.nl, name)
    }

    /// See `link::retire_link`: frees the host veth's name at teardown
    /// (down, renamed to `rpt~<ifindex>`); `index` if known saves a lookup.
    pub fn retire_link(&mut self, name: &str, index: Option<u32>) -> Result<bool, NetworkError> {
        link::retire_link(&mut self.nl, name, index)
    }
}
