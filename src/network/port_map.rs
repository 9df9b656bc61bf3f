//! Published ports (`--publish`) as elements of the map `published` in a
//! bridge's NAT table (`egress::nat_script` makes it with the table):
//! `meta l4proto . th dport : ip daddr . port`, which the table's
//! prerouting and output chains DNAT through. A job adds one element per
//! port when it is plugged in and expires them at teardown: no per-job
//! chain or rule, and no `nft` exec (~5.5 ms), but one nf_tables netlink
//! batch each way.
//!
//! How the kernel takes a concatenated key or value (nf_tables.h, and
//! what `nft --debug=netlink add element` sends): each field in its own
//! 4-byte register, padded with zeros after it; ports and addresses in
//! network byte order. So the key `tcp . 18080` is `06 00 00 00 46 a0 00
//! 00`, the value `198.19.8.2 . 80` is `c6 13 08 02 00 50 00 00`.

use std::net::Ipv4Addr;

use super::egress::{PUBLISHED_MAP as MAP, table_name};
use super::error::NetworkError;
use super::nfnetlink::{
    Attrs, Message, NFPROTO_IPV4, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM, NLM_F_CREATE, NLM_F_EXCL, NfNetlink,
};
use crate::publish::Publish;

// enum nft_set_elem_list_attributes, nft_list_attributes,
// nft_set_elem_attributes, nft_data_attributes.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// One port of a job: where `port.host_port` leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub port: Publish,
    pub ip: Ipv4Addr,
}

/// `meta l4proto . th dport`: two registers.
pub fn key(p: &Publish) -> [u8; 8] {
    let [hi, lo] = p.host_port.to_be_bytes();
    [p.proto.number(), 0, 0, 0, hi, lo, 0, 0]
}

/// `ip daddr . port` (`ipv4_addr . inet_service`): two registers.
pub fn value(e: &Element) -> [u8; 8] {
    let [a, b, c, d] = e.ip.octets();
    let [hi, lo] = e.port.job_port.to_be_bytes();
    [a, b, c, d, hi, lo, 0, 0]
}

/// How long an element lives unless it is expired sooner: about 95 years,
/// i.e. for the job's life. The map has timeouts for the way out, below.
const LIFETIME_MS: u64 = 3_000_000_000_000;

/// What a message does to its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// NEWSETELEM, create only, with values and [`LIFETIME_MS`].
    Add,
    /// NEWSETELEM of the same element, expiring in 1 ms (an update,
    /// Linux 6.10's element timeout update support).
    Expire,
    /// DELSETELEM, by key.
    Delete,
}

/// Why the way out of a port is an expiry and not a delete: nf_tables
/// frees a deleted element after an RCU grace period, in a work item, and
/// the release of the netlink socket that deleted it waits for that work
/// (`nft_rcv_nl_event` flushes it): ~11 ms here at every teardown, for a
/// runner's close or exit. An expired element is not matched any more
/// and is freed by the set's own garbage collection, and the update's
/// transaction is freed at once: the close costs nothing. Kernels before
/// 6.10 take such an update for a no-op: there, delete.
fn expiry_updates() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease");
        release.is_ok_and(|r| kernel_at_least(r.trim(), (6, 10)))
    })
}

/// Whether a kernel release string (`6.18.44-fc-v857`) is at least `want`.
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// One message doing `op` to `elements` in `bridge`'s map.
fn message(bridge: &str, elements: &[Element], op: Op) -> Message {
    let mut list = Attrs::default();
    for e in elements {
        let mut elem = Attrs::default();
        let mut k = Attrs::default();
        k.bytes(NFTA_DATA_VALUE, &key(&e.port));
        elem.nested(NFTA_SET_ELEM_KEY, &k);
        if op != Op::Delete {
            let mut v = Attrs::default();
            v.bytes(NFTA_DATA_VALUE, &value(e));
            elem.nested(NFTA_SET_ELEM_DATA, &v);
            elem.bytes(NFTA_SET_ELEM_TIMEOUT, &LIFETIME_MS.to_be_bytes());
        }
        if op == Op::Expire {
            elem.bytes(NFTA_SET_ELEM_EXPIRATION, &1u64.to_be_bytes());
        }
        list.nested(NFTA_LIST_ELEM, &elem);
    }
    let mut attrs = Attrs::default();
    attrs.string(NFTA_SET_ELEM_LIST_TABLE, &table_name(bridge)).string(NFTA_SET_ELEM_LIST_SET, MAP);
    attrs.nested(NFTA_SET_ELEM_LIST_ELEMENTS, &list);
    let (kind, flags) = match op {
        Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL),
        // Without EXCL an existing element with the same value is updated.
        Op::Expire => (NFT_MSG_NEWSETELEM, 0),
        Op::Delete => (NFT_MSG_DELSETELEM, 0),
    };
    Message { kind, family: NFPROTO_IPV4, flags, attrs }
}

fn socket(op: &str) -> Result<NfNetlink, NetworkError> {
    NfNetlink::new().map_err(|source| NetworkError::Socket { place: format!("NETLINK_NETFILTER to {op}"), source })
}

fn clash(e: &super::netlink::NlError) -> bool {
    matches!(e.raw(), Some(libc::EEXIST | libc::EBUSY))
}

/// Adds the elements of a job's ports to `bridge`'s map, in one batch.
///
/// The state store gave these host ports to this job, so an element found
/// under one of them is no live job's: a dead runner's that nobody could
/// take out (it died between its lease and its element, or its reclaimer
/// failed). It is replaced, delete and add in one batch.
pub fn publish(bridge: &str, elements: &[Element]) -> Result<(), NetworkError> {
    if elements.is_empty() {
        return Ok(());
    }
    let op = || {
        let ports: Vec<String> = elements.iter().map(|e| e.port.to_string()).collect();
        format!("publish {} on bridge {bridge}'s table", ports.join(", "))
    };
    let mut nl = socket(&op())?;
    match nl.batch(&[message(bridge, elements, Op::Add)]) {
        Ok(()) => return Ok(()),
        Err((_, e)) if clash(&e) => {}
        // The record says the table is up, but it is not (flushed by hand
        // or by a firewall reload): what `nft` would say, and the remedy.
        Err((_, e)) if e.raw() == Some(libc::ENOENT) => {
            return Err(NetworkError::Firewall {
                op: op(),
                reason: format!(
                    "there is no table ip {} with a map {MAP} (the ruleset was flushed since it was set up?): run repeatr gc --all with no job running, and the next run sets it up again",
                    table_name(bridge)
                ),
            });
        }
        Err((_, e)) => return Err(NetworkError::netlink(op(), e)),
    }
    for e in elements {
        let one = std::slice::from_ref(e);
        match nl.batch(&[message(bridge, one, Op::Add)]) {
            Ok(()) => continue,
            Err((_, err)) if clash(&err) => {
                log::debug!("replacing a dead job's element for {} in {}", e.port.host_side(), table_name(bridge));
                nl.batch(&[message(bridge, one, Op::Delete), message(bridge, one, Op::Add)])
                    .map_err(|(_, err)| NetworkError::netlink(op(), err))?;
            }
            Err((_, err)) => return Err(NetworkError::netlink(op(), err)),
        }
    }
    Ok(())
}

/// Takes the elements of `elements`' host ports out of `bridge`'s map
/// (expired, or deleted on kernels before 6.10: see [`expiry_updates`]).
/// One that is not there, or a table that is gone, is no error; an element
/// under one of those keys that leads elsewhere is no job's of these
/// elements and is left alone.
pub fn unpublish(bridge: &str, elements: &[Element]) -> Result<(), NetworkError> {
    if elements.is_empty() {
        return Ok(());
    }
    let op = || format!("unpublish ports of bridge {bridge}");
    let how = if expiry_updates() { Op::Expire } else { Op::Delete };
    // ENOENT: no table (expiring creates no table) or, deleting, no element;
    // EBUSY: expiring, an element of that key with another value.
    let gone = |e: &super::netlink::NlError| matches!(e.raw(), Some(libc::ENOENT | libc::EBUSY));
    let mut nl = socket(&op())?;
    match nl.batch(&[message(bridge, elements, how)]) {
        Ok(()) => return Ok(()),
        Err((_, e)) if gone(&e) && elements.len() > 1 => {}
        Err((_, e)) if gone(&e) => return Ok(()),
        Err((_, e)) => return Err(NetworkError::netlink(op(), e)),
    }
    // One such element undoes the whole batch: the others one by one.
    for e in elements {
        match nl.batch(&[message(bridge, std::slice::from_ref(e), how)]) {
            Ok(()) => {}
            Err((_, err)) if gone(&err) => {}
            Err((_, err)) => return Err(NetworkError::netlink(op(), err)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Proto;

    #[test]
    fn keys_and_values_are_registers_in_network_order() {
        let e = Element {
            port: Publish { proto: Proto::Tcp, host_port: 18080, job_port: 80 },
            ip: Ipv4Addr::new(198, 19, 8, 2),
        };
        assert_eq!(key(&e.port), [6, 0, 0, 0, 0x46, 0xa0, 0, 0]);
        assert_eq!(value(&e), [198, 19, 8, 2, 0, 80, 0, 0]);
        let udp = Publish { proto: Proto::Udp, host_port: 18081, job_port: 53 };
        // What `nft --debug=netlink add element ... { udp . 18081 : 198.19.8.3 . 53 }` prints.
        assert_eq!(key(&udp), [0x11, 0, 0, 0, 0x46, 0xa1, 0, 0]);
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v857", (6, 10)));
        assert!(kernel_at_least("6.10.0", (6, 10)));
        assert!(!kernel_at_least("6.9.12-amd64", (6, 10)));
        assert!(!kernel_at_least("5.15.0-91-generic", (6, 10)));
        assert!(!kernel_at_least("garbage", (6, 10)));
    }
}
