//! The error every network step returns.

use std::io;

use super::netlink::NlError;
use super::owner::Foreign;

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
    /// A link set-up needs is another state dir's or not repeatr's: it
    /// is left as it is.
    #[error("{0}")]
    NotOurs(Box<Foreign>),
    /// `network.egress = "nat"` needs `nft`, and it is not installed.
    #[error(
        "network.egress = \"nat\" needs the nft program, which is not installed: apt-get install nftables (or set network.egress = \"none\" for jobs that stay on the bridge)"
    )]
    NftMissing,
    /// A firewall step (nftables, IPv4 forwarding) failed.
    #[error("{op}: {reason}")]
    Firewall { op: String, reason: String },
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

    pub(super) fn netlink(op: impl Into<String>, e: NlError) -> Self {
        NetworkError::Netlink { op: op.into(), source: e.errno, ext_ack: e.ext_ack }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_crosses_threads() {
        fn f<T: Send + Sync + 'static>() {}
        f::<NetworkError>();
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
