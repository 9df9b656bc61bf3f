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
    /// Named by its user (`--name`): listed in later jobs' `/etc/hosts`.
    /// A sidecar from before the field was listed, so it reads as named.
    #[serde(default = "named_by_default")]
    pub named: bool,
}

fn named_by_default() -> bool {
    true
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

/// A plausible record for tests that need one, with every field set.
#[cfg(test)]
pub(crate) fn example() -> LeaseRecord {
    LeaseRecord {
        job: "web".into(),
        bridge: "rpt0".into(),
        subnet: "198.18.0.0/24".parse().unwrap(),
        ip: "198.18.0.2".parse().unwrap(),
        gateway: "198.18.0.1".parse().unwrap(),
        slot: 0,
        iface: "rpt0-0".into(),
        pid: 7,
        start_time: 9,
        boot_id: "b".into(),
        command: "sleep".into(),
        started_at: "2026-12-01T00:00:00Z".into(),
        named: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sidecar written before `named` existed (what `gc --rebuild` may
    /// read) is a named job's, as every job was then listed by its id.
    #[test]
    fn a_sidecar_without_named_reads_as_named() {
        let r = LeaseRecord { named: false, ..example() };
        let mut json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(serde_json::from_value::<LeaseRecord>(json.clone()).unwrap(), r, "round trip");
        json.as_object_mut().unwrap().remove("named");
        assert!(serde_json::from_value::<LeaseRecord>(json).unwrap().named);
    }
}
