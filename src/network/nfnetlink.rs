//! nf_tables over netlink (NETLINK_NETFILTER), for what a job changes in
//! its bridge's table: one batch (NFNL_MSG_BATCH_BEGIN, the messages,
//! NFNL_MSG_BATCH_END), which the kernel applies as one transaction, all
//! or nothing. An exec of `nft` costs ~5.5 ms here, this a round trip.
//!
//! Encodings are the kernel's uapi (`linux/netfilter/nfnetlink.h`,
//! `nf_tables.h`): every message starts with a `struct nfgenmsg`, and
//! attributes are netlink TLVs padded to 4 bytes.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::netlink::{NlError, ext_ack_msg, open_socket, recv_datagram};

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `_END` (`NLMSG_MIN_TYPE`, `+ 1`).
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `enum nf_tables_msg_types`.
pub const NFT_MSG_NEWSETELEM: u8 = 12;
pub const NFT_MSG_DELSETELEM: u8 = 14;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;
/// `NFPROTO_IPV4`: the family of an `ip` table.
pub const NFPROTO_IPV4: u8 = 2;
/// `NLA_F_NESTED`: nf_tables parses nested attributes strictly.
const NLA_F_NESTED: u16 = 0x8000;

const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

const RECV_BUF: usize = 16 * 1024;

/// Netlink attributes being written: TLVs, each padded to 4 bytes.
#[derive(Default)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        // A netlink attribute's length is a u16; ours are a few bytes.
        self.0.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// A NUL-terminated string (NLA_STRING: table and set names).
    pub fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v)
    }

    pub fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }
}

/// One nf_tables message of a batch: its type within the subsystem
/// (`NFT_MSG_*`), the family of its table, flags beyond REQUEST and ACK.
pub struct Message {
    pub kind: u8,
    pub family: u8,
    pub flags: u16,
    pub attrs: Attrs,
}

/// A NETLINK_NETFILTER socket in the caller's network namespace.
pub struct NfNetlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NfNetlink {
    pub fn new() -> io::Result<NfNetlink> {
        Ok(NfNetlink { sock: open_socket(NETLINK_NETFILTER)?, seq: 0, buf: Vec::with_capacity(RECV_BUF) })
    }

    /// Sends `msgs` as one batch and waits for the ACK of each. The kernel
    /// applies all or none of them; the first refused comes back with its
    /// index.
    pub fn batch(&mut self, msgs: &[Message]) -> Result<(), (usize, NlError)> {
        let mut out = Vec::new();
        // A batch message's res_id names the subsystem the batch is for.
        let none = Attrs::default();
        let begin = self.push(&mut out, (NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES), &none);
        for m in msgs {
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(m.kind);
            self.push(&mut out, (kind, m.family, m.flags | NLM_F_ACK, 0), &m.attrs);
        }
        self.push(&mut out, (NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES), &none);
        loop {
            match self.sock.send(&out, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((0, e.into())),
            }
        }
        // One ACK (or error) per message; an error on the batch itself
        // (BEGIN's sequence number) ends it, and the others never come.
        let mut acked = 0;
        let mut failed: Option<(usize, NlError)> = None;
        while acked < msgs.len() {
            let n = recv_datagram(&self.sock, &mut self.buf).map_err(|e| (acked, e.into()))?.min(self.buf.len());
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let h = &self.buf[off..n];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len < NLMSG_HDRLEN || len > h.len() {
                    return Err((acked, invalid(format!("netlink message length {len}"))));
                }
                let kind = u16::from_ne_bytes([h[4], h[5]]);
                let flags = u16::from_ne_bytes([h[6], h[7]]);
                let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                off += len.next_multiple_of(4);
                if kind != NLMSG_ERROR || len < NLMSG_HDRLEN + 4 {
                    continue;
                }
                let code = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                let err = (code != 0).then(|| NlError {
                    errno: io::Error::from_raw_os_error(-code),
                    ext_ack: if flags & NLM_F_ACK_TLVS != 0 { ext_ack_msg(&h[20..len]) } else { None },
                });
                if seq == begin {
                    return Err((0, err.unwrap_or_else(|| invalid("batch refused".into()))));
                }
                let Some(index) = seq.checked_sub(begin + 1).map(|i| i as usize).filter(|&i| i < msgs.len()) else {
                    continue; // an earlier batch's
                };
                acked += 1;
                if let Some(e) = err
                    && failed.as_ref().is_none_or(|(i, _)| index < *i)
                {
                    failed = Some((index, e));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Appends one message (type, nfgenmsg family, flags, nfgenmsg res_id)
    /// under the next sequence number; that number.
    fn push(&mut self, out: &mut Vec<u8>, (kind, family, flags, res_id): (u16, u8, u16, u16), attrs: &Attrs) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + 4 + attrs.0.len();
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version, res_id (big-endian).
        out.extend_from_slice(&[family, NFNETLINK_V0]);
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(&attrs.0);
        self.seq
    }
}

fn invalid(msg: String) -> NlError {
    NlError::from(io::Error::new(io::ErrorKind::InvalidData, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn attributes_are_padded_and_nested_ones_flagged() {
        let mut inner = Attrs::default();
        inner.bytes(1, &[0xaa, 0xbb, 0xcc]);
        assert_eq!(inner.0, [7, 0, 1, 0, 0xaa, 0xbb, 0xcc, 0]);
        let mut outer = Attrs::default();
        outer.string(2, "ab").nested(3, &inner);
        assert_eq!(&outer.0[..8], &[7, 0, 2, 0, b'a', b'b', 0, 0]);
        assert_eq!(&outer.0[8..12], &[12, 0, 3, 0x80]);
    }
}
