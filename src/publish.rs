//! `--publish HOSTPORT:JOBPORT[/tcp|/udp]`: what a run asks to be
//! forwarded from the host's addresses to its job. The one type the
//! command line, the state store (which job holds which host port) and
//! the netfilter code (one map element per port) share.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transport a published port forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The inverse of [`Proto::name`].
    pub fn from_name(name: &str) -> Option<Proto> {
        match name {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// One `--publish`: the host's `host_port` (on every address of the
/// host) forwarded to the job's `job_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Publish {
    pub proto: Proto,
    pub host_port: u16,
    pub job_port: u16,
}

impl Publish {
    /// `18080/tcp`: the host side, which two jobs cannot share.
    pub fn host_side(&self) -> String {
        format!("{}/{}", self.host_port, self.proto.name())
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host_port, self.job_port, self.proto.name())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("--publish {0:?} is malformed: expected HOSTPORT:JOBPORT[/tcp|/udp], e.g. --publish 8080:80")]
    Malformed(String),
    #[error("--publish {spec:?}: port {port:?} is out of range: a port is a number from 1 to 65535")]
    OutOfRange { spec: String, port: String },
    #[error(
        "--publish {first} and --publish {second} both ask for host port {}: give each its own host port",
        first.host_side()
    )]
    Duplicate { first: Publish, second: Publish },
    #[error("--publish needs --net bridge: a job with --net none has no address to forward to")]
    NoNetwork,
    #[error(
        "--publish needs network.egress = \"nat\": the forwarding lives in the NAT's table, and with egress = \"none\" repeatr changes nothing on the host"
    )]
    NoEgress,
}

impl FromStr for Publish {
    type Err = PublishError;

    fn from_str(spec: &str) -> Result<Publish, PublishError> {
        let malformed = || PublishError::Malformed(spec.to_string());
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((ports, proto)) => (ports, Proto::from_name(proto).ok_or_else(malformed)?),
            None => (spec, Proto::Tcp),
        };
        let (host, job) = ports.split_once(':').ok_or_else(malformed)?;
        let port = |text: &str| {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            match text.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                _ => Err(PublishError::OutOfRange { spec: spec.to_string(), port: text.to_string() }),
            }
        };
        Ok(Publish { proto, host_port: port(host)?, job_port: port(job)? })
    }
}

/// Every `--publish` of one command, each host port at most once.
pub fn parse_all(specs: &[String]) -> Result<Vec<Publish>, PublishError> {
    let mut out: Vec<Publish> = Vec::with_capacity(specs.len());
    for spec in specs {
        let p: Publish = spec.parse()?;
        if let Some(first) = out.iter().find(|q| (q.proto, q.host_port) == (p.proto, p.host_port)) {
            return Err(PublishError::Duplicate { first: *first, second: p });
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_tcp_by_default() {
        let p: Publish = "18080:80".parse().unwrap();
        assert_eq!(p, Publish { proto: Proto::Tcp, host_port: 18080, job_port: 80 });
        assert_eq!("53:5353/udp".parse::<Publish>().unwrap().proto, Proto::Udp);
        assert_eq!(p.to_string(), "18080:80/tcp");
        assert_eq!(p.host_side(), "18080/tcp");
    }

    #[test]
    fn bad_specs_are_refused_in_one_line() {
        for bad in ["", "80", ":80", "80:", "a:80", "80:80/sctp", "80:80/", "+80:80", "1:2:3", " 80:80"] {
            let e = bad.parse::<Publish>().unwrap_err();
            assert!(matches!(e, PublishError::Malformed(_)), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        for bad in ["0:80", "80:0", "65536:80", "80:99999999999999999999"] {
            let e = bad.parse::<Publish>().unwrap_err();
            assert!(matches!(e, PublishError::OutOfRange { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn a_host_port_twice_is_refused_but_tcp_and_udp_may_share_it() {
        let specs = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_all(&specs(&["53:53/tcp", "53:53/udp"])).unwrap().len(), 2);
        let e = parse_all(&specs(&["8080:80", "8080:81/tcp"])).unwrap_err().to_string();
        assert!(e.contains("host port 8080/tcp"), "{e}");
    }
}
