//! Bridge networking over synchronous netlink.
//!
//! A runner does all its host-side steps through one [`HostNet`] socket:
//! the route check and `ensure_bridge`, then, after cloning the job child
//! (with `/proc/PID/ns/net`), `create_pending` while its lease is being
//! taken and `finish_pending` once it is known, and `retire_link` on the
//! host veth at teardown (the kernel destroys the pair with the job's
//! netns). The free functions ([`ensure_bridge`], [`attach_job`],
//! [`retire_link`], ...) open a socket per call, for `gc` and tests.
//! `--net none` jobs call [`loopback_up`] themselves, inside their new netns.

mod bridge;
mod link;
mod netlink;
mod routes;
mod veth;

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use bridge::ensure_bridge;
pub use link::{RETIRED_PREFIX, delete_link, links_with_prefix, loopback_up, retire_link, retired_ports};
pub use routes::host_ipv4_routes;
pub use veth::{AttachedVeth, PENDING_PREFIX, PendingVeth, VethSpec, attach_job};

use netlink::NlError;

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

    /// See [`retire_link`]; `index` if known saves a lookup.
    pub fn retire_link(&mut self, name: &str, index: Option<u32>) -> Result<bool, NetworkError> {
        link::retire_link_with(&mut self.nl, name, index)
    }
}

/// Linux interface names are at most IFNAMSIZ - 1 bytes.
pub const IFNAMSIZ_MAX: usize = 15;

/// A network setup or teardown step that failed: which step, on which
/// interface / netns, and the kernel's errno (plus its extended-ACK text).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{op}: {source}{}", ext_ack_suffix(.ext_ack))]
    Netlink { op: String, source: io::Error, ext_ack: Option<String> },
    #[error("open netlink socket {place}: {source}")]
    Socket { place: String, source: io::Error },
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{op}: {reason}")]
    Unexpected { op: String, reason: String },
    /// Every error of a step that goes on after failures (teardown).
    #[error("{}", join_errors(.0))]
    Multiple(Vec<NetworkError>),
}

impl NetworkError {
    /// The errno behind this error, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetworkError::Netlink { source, .. } | NetworkError::Socket { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn netlink(op: impl Into<String>, e: NlError) -> Self {
        NetworkError::Netlink { op: op.into(), source: e.errno, ext_ack: e.ext_ack }
    }

    /// Folds the errors a multi-step operation collected: none is success.
    pub fn collect(mut errors: Vec<NetworkError>) -> Result<(), NetworkError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(NetworkError::Multiple(errors)),
        }
    }
}

fn ext_ack_suffix(ext: &Option<String>) -> String {
    match ext {
        Some(m) if !m.is_empty() => format!(" ({m})"),
        _ => String::new(),
    }
}

fn join_errors(errors: &[NetworkError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{} errors: {}", errors.len(), parts.join("; "))
}

/// Refuses names the kernel would reject (dev_valid_name), with our words.
pub fn check_ifname(name: &str) -> Result<(), NetworkError> {
    let bad = |reason| Err(NetworkError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > IFNAMSIZ_MAX {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic()) {
        return bad("only printable ASCII without '/', ':' or spaces");
    }
    Ok(())
}

/// A stable, locally administered unicast MAC for an IPv4 address
/// (02:42:a:b:c:d, as Docker does): the same IP always gets the same MAC, so
/// neighbours' ARP caches stay right when an address is reused.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_crosses_threads() {
        fn f<T: Send + Sync + 'static>() {}
        f::<NetworkError>();
    }

    #[test]
    fn names() {
        assert!(check_ifname("rt1-1023").is_ok());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("abcdefghijklmnop").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }

    #[test]
    fn mac_is_local_unicast() {
        let m = mac_for_ip(Ipv4Addr::new(198, 18, 3, 7));
        assert_eq!(m, [0x02, 0x42, 198, 18, 3, 7]);
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn display_is_one_line_with_errno() {
        let e = NetworkError::Netlink {
            op: "create veth rt1-3 on bridge rt1".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
            ext_ack: Some("File exists".into()),
        };
        let s = e.to_string();
        assert!(s.contains("rt1-3") && s.contains("os error 17"), "{s}");
        assert!(!s.contains('\n'));
        let m = NetworkError::Multiple(vec![e, NetworkError::Unexpected { op: "x".into(), reason: "y".into() }]);
        assert!(m.to_string().starts_with("2 errors: "));
        assert_eq!(m.errno(), None);
    }
}
