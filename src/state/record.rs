//! The lease record: one lease as its database row and its sidecar hold it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// One lease as stored: a row of `leases` and the content of its sidecar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub job: String,
    pub bridge: String,
    #[serde(with = "cidr")]
    pub subnet: Ipv4Net,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub slot: u16,
    /// Host-side veth: `{bridge}-{slot}`.
    pub iface: String,
    pub pid: u32,
    /// Field 22 of /proc/PID/stat (clock ticks since boot).
    pub start_time: u64,
    pub boot_id: String,
    pub command: String,
    /// RFC 3339, UTC.
    pub started_at: String,
}

/// Ipv4Net as its CIDR text (ipnet's serde support is an optional feature).
pub(crate) mod cidr {
    use ipnet::Ipv4Net;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
