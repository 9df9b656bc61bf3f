//! Published ports (`--publish`) as elements of the map `published` in a
//! bridge's NAT table (`egress::nat_script` makes it with the table):
//! `meta l4proto . th dport : ip daddr . port`, which the table's
//! prerouting and output chains DNAT through. A job adds one element per
//! port when it is plugged in and deletes them at teardown: no per-job
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

/// A NEWSETELEM (with values) or DELSETELEM (keys only) of `elements`.
fn message(bridge: &str, elements: &[Element], add: bool) -> Message {
    let mut list = Attrs::default();
    for e in elements {
        let mut elem = Attrs::default();
        let mut k = Attrs::default();
        k.bytes(NFTA_DATA_VALUE, &key(&e.port));
        elem.nested(NFTA_SET_ELEM_KEY, &k);
        if add {
            let mut v = Attrs::default();
            v.bytes(NFTA_DATA_VALUE, &value(e));
            elem.nested(NFTA_SET_ELEM_DATA, &v);
        }
        list.nested(NFTA_LIST_ELEM, &elem);
    }
    let mut attrs = Attrs::default();
    attrs.string(NFTA_SET_ELEM_LIST_TABLE, &table_name(bridge)).string(NFTA_SET_ELEM_LIST_SET, MAP);
    attrs.nested(NFTA_SET_ELEM_LIST_ELEMENTS, &list);
    let (kind, flags) = if add { (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL) } else { (NFT_MSG_DELSETELEM, 0) };
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
/// delete (it died between its lease and its element, or its reclaimer
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
    match nl.batch(&[message(bridge, elements, true)]) {
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
        match nl.batch(&[message(bridge, one, true)]) {
            Ok(()) => continue,
            Err((_, err)) if clash(&err) => {
                log::debug!("replacing a dead job's element for {} in {}", e.port.host_side(), table_name(bridge));
                nl.batch(&[message(bridge, one, false), message(bridge, one, true)])
                    .map_err(|(_, err)| NetworkError::netlink(op(), err))?;
            }
            Err((_, err)) => return Err(NetworkError::netlink(op(), err)),
        }
    }
    Ok(())
}

/// Deletes the elements of `elements`' host ports from `bridge`'s map;
/// one that is not there (or a table that is gone) is no error.
pub fn unpublish(bridge: &str, elements: &[Element]) -> Result<(), NetworkError> {
    if elements.is_empty() {
        return Ok(());
    }
    let op = || format!("unpublish ports of bridge {bridge}");
    let mut nl = socket(&op())?;
    match nl.batch(&[message(bridge, elements, false)]) {
        Ok(()) => return Ok(()),
        Err((_, e)) if e.raw() == Some(libc::ENOENT) && elements.len() > 1 => {}
        Err((_, e)) if e.raw() == Some(libc::ENOENT) => return Ok(()),
        Err((_, e)) => return Err(NetworkError::netlink(op(), e)),
    }
    // One missing undoes the whole batch: the others one by one.
    for e in elements {
        match nl.batch(&[message(bridge, std::slice::from_ref(e), false)]) {
            Ok(()) => {}
            Err((_, err)) if err.raw() == Some(libc::ENOENT) => {}
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
}
