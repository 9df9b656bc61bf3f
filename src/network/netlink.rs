//! A small synchronous rtnetlink socket: send one request, read its ACK or
//! its dump, turn NLMSG_ERROR into an errno. One request is in flight at a
//! time, so replies are matched by sequence number only.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_ECHO, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlaBuffer, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The kernel sizes a dump skb by the reader's buffer, up to 32 KiB
/// (netlink_dump); twice that leaves room and never truncates.
const RECV_BUF: usize = 64 * 1024;

/// A dump that raced a change (NLM_F_DUMP_INTR) is inconsistent and must be
/// re-run; with many jobs starting at once, link churn can interrupt a link
/// dump many times in a row.
const DUMP_RETRIES: usize = 50;

/// `NLMSGERR_ATTR_MSG` in the extended ACK TLVs: the kernel's text reason.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// What the kernel refused, with its own words when it gave some.
#[derive(Debug)]
pub struct NlError {
    pub errno: io::Error,
    /// The extended ACK message (e.g. "Master device not found").
    pub ext_ack: Option<String>,
}

impl NlError {
    pub fn raw(&self) -> Option<i32> {
        self.errno.raw_os_error()
    }
}

impl From<io::Error> for NlError {
    fn from(errno: io::Error) -> Self {
        NlError { errno, ext_ack: None }
    }
}

fn invalid(msg: String) -> NlError {
    NlError::from(io::Error::new(io::ErrorKind::InvalidData, msg))
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The netns the socket lives in if not the creator's own (see
    /// [`Netlink::within`]).
    netns: Option<OwnedFd>,
}

impl Netlink {
    /// A socket in the caller's current network namespace. A netlink socket
    /// stays bound to the netns it was created in, whatever the thread does
    /// later, which is how we talk to a job's netns from the host.
    pub fn new() -> io::Result<Self> {
        Ok(Netlink { sock: open_socket(NETLINK_ROUTE)?, seq: 0, buf: Vec::with_capacity(RECV_BUF), netns: None })
    }

    /// A socket inside the network namespace `netns`, created on a
    /// short-lived thread that setns()es into it. The calling thread's own
    /// namespace never changes, so a failure cannot leave it in a job's netns.
    #[cfg(test)]
    pub fn in_netns(netns: BorrowedFd<'_>) -> io::Result<Self> {
        let mut nl = on_thread_in(netns, Netlink::new)??;
        nl.netns = Some(netns.try_clone_to_owned()?);
        Ok(nl)
    }

    /// A socket inside the network namespace `netns`, made by moving the
    /// calling thread there for good: only for a thread that ends right
    /// after and touches nothing of the host's network before it does (the
    /// lease thread, see `job::net`). It spares a job's start the thread
    /// that `Netlink::in_netns` (tests only now) makes and ends.
    pub fn in_netns_from_here(netns: BorrowedFd<'_>) -> io::Result<Self> {
        // setns of a thread (not the process) is allowed for CLONE_NEWNET.
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let mut nl = Netlink::new()?;
        nl.netns = Some(netns.try_clone_to_owned()?);
        Ok(nl)
    }

    /// Runs `f` in the network namespace this socket lives in: at once if
    /// it is the caller's, else as [`Netlink::in_netns`] made it. For what
    /// netlink cannot reach: `/proc/sys/net` shows the netns of whoever
    /// opens a file in it.
    pub fn within<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        match &self.netns {
            None => Ok(f()),
            Some(netns) => on_thread_in(netns.as_fd(), f),
        }
    }

    /// Appends one message to `out` under the next sequence number.
    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16, out: &mut Vec<u8>) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let start = out.len();
        // Messages in one datagram start on 4-byte boundaries (NLMSG_ALIGN).
        out.resize(start + ((packet.header.length as usize + 3) & !3), 0);
        packet.serialize(&mut out[start..]);
        self.seq
    }

    fn send_bytes(&mut self, out: &[u8]) -> Result<(), NlError> {
        loop {
            match self.sock.send(out, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NlError> {
        let mut out = Vec::new();
        let seq = self.encode(msg, flags, &mut out);
        self.send_bytes(&out)?;
        Ok(seq)
    }

    fn recv(&mut self) -> Result<usize, NlError> {
        let n = recv_datagram(&self.sock, &mut self.buf)?;
        if n > self.buf.len() {
            return Err(invalid(format!("netlink datagram of {n} bytes truncated")));
        }
        Ok(n)
    }

    /// Sends a request that changes something and waits for its ACK.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        let seq = self.send(msg, flags | NLM_F_REQUEST | NLM_F_ACK)?;
        self.replies(seq).map(drop)
    }

    /// A change request with NLM_F_ECHO: the kernel (6.1 and later) also
    /// sends back the object as it made it, e.g. a new link with its
    /// ifindex. Older kernels only ACK: the result is then empty.
    pub fn request_echo(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let seq = self.send(msg, flags | NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO)?;
        self.replies(seq).map(|(found, _)| found)
    }

    /// Several change requests in one datagram, for one round trip instead
    /// of one each. The kernel handles them in order and ACKs each; a failed
    /// one does not stop the others, so every ACK is read. The first
    /// failure comes back with the index of its request.
    pub fn request_all(&mut self, msgs: Vec<(RouteNetlinkMessage, u16)>) -> Result<(), (usize, NlError)> {
        let mut out = Vec::new();
        let first = self.seq.wrapping_add(1);
        let count = msgs.len();
        for (msg, flags) in msgs {
            self.encode(msg, flags | NLM_F_REQUEST | NLM_F_ACK, &mut out);
        }
        self.send_bytes(&out).map_err(|e| (0, e))?;
        let mut acked = 0;
        let mut failed: Option<(usize, NlError)> = None;
        while acked < count {
            let n = self.recv().map_err(|e| (acked, e))?;
            self.walk_any(n, |seq, reply| {
                let index = seq.wrapping_sub(first) as usize;
                if index >= count {
                    return; // a reply to an earlier, abandoned request
                }
                match reply {
                    Reply::Ack | Reply::Done => acked += 1,
                    Reply::Error(e) => {
                        acked += 1;
                        if failed.as_ref().is_none_or(|(i, _)| index < *i) {
                            failed = Some((index, e));
                        }
                    }
                    Reply::Msg(..) => {}
                }
            })
            .map_err(|e| (acked, e))?;
        }
        failed.map_or(Ok(()), Err)
    }

    /// A GET for one object (e.g. a link by name): its single reply.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<RouteNetlinkMessage, NlError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK)?;
        let (mut found, _) = self.replies(seq)?;
        found.pop().ok_or_else(|| invalid("GET answered without a message".into()))
    }

    /// Dumps every object of a kind, re-running the dump if the kernel
    /// flags it as interrupted by a concurrent change.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
            let (out, interrupted) = self.replies(seq)?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NlError::from(io::Error::from_raw_os_error(libc::EINTR)))
    }

    /// Reads the replies to request `seq` up to its ACK or DONE: the
    /// messages, and whether a dump was flagged interrupted. Reading up to
    /// the end matters: a reply left queued would be read by the next
    /// request.
    fn replies(&mut self, seq: u32) -> Result<(Vec<RouteNetlinkMessage>, bool), NlError> {
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv()?;
            let mut done = false;
            self.walk(n, seq, |m| {
                match m {
                    Reply::Error(e) => return Err(e),
                    Reply::Ack | Reply::Done => done = true,
                    Reply::Msg(m, flags) => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        out.push(m);
                    }
                }
                Ok(())
            })?;
            if done {
                return Ok((out, interrupted));
            }
        }
    }

    /// Parses the `n` bytes just received and hands every message of
    /// sequence `seq` to `f` (older replies, e.g. of an abandoned request,
    /// are skipped).
    fn walk(&self, n: usize, seq: u32, mut f: impl FnMut(Reply) -> Result<(), NlError>) -> Result<(), NlError> {
        let mut result = Ok(());
        self.walk_any(n, |s, reply| {
            if s == seq && result.is_ok() {
                result = f(reply);
            }
        })?;
        result
    }

    /// Parses the `n` bytes just received and hands every message to `f`
    /// with its sequence number.
    fn walk_any(&self, n: usize, mut f: impl FnMut(u32, Reply)) -> Result<(), NlError> {
        let mut off = 0;
        while off + 16 <= n {
            let bytes = &self.buf[off..n];
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                .map_err(|e| invalid(format!("malformed netlink reply: {e}")))?;
            let len = msg.header.length as usize;
            if len < 16 {
                return Err(invalid(format!("netlink message length {len}")));
            }
            off += (len + 3) & !3;
            let seq = msg.header.sequence_number;
            let flags = msg.header.flags;
            let reply = match msg.payload {
                NetlinkPayload::Error(e) if e.code.is_none() => Reply::Ack,
                NetlinkPayload::Error(e) => {
                    let ext_ack = if flags & NLM_F_ACK_TLVS != 0 { ext_ack_msg(&e.header) } else { None };
                    Reply::Error(NlError { errno: e.to_io(), ext_ack })
                }
                NetlinkPayload::Done(_) => Reply::Done,
                NetlinkPayload::InnerMessage(m) => Reply::Msg(m, flags),
                _ => continue,
            };
            f(seq, reply);
        }
        Ok(())
    }
}

/// Runs `f` on a short-lived thread in the network namespace `netns`.
fn on_thread_in<R: Send>(netns: BorrowedFd<'_>, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, move || {
                // setns of a thread (not the process) is allowed for
                // CLONE_NEWNET; the thread then dies with it.
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

enum Reply {
    Ack,
    Done,
    Error(NlError),
    Msg(RouteNetlinkMessage, u16),
}

/// Receives one datagram into `buf` (cleared first), whose length is then
/// what was written. It goes into the buffer's spare capacity, which is
/// never zeroed: zeroing (`vec![0; RECV_BUF]`) had every socket fault in
/// and clear 16 pages, where nearly every reply fits in one.
pub(super) fn recv_datagram(sock: &Socket, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    loop {
        match sock.recv(buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// With NETLINK_CAP_ACK the error payload is the request's 16-byte header
/// followed by the extended-ACK TLVs; we only want the text.
/// A netlink socket of `protocol`, bound and connected to the kernel, in
/// the caller's network namespace.
pub(super) fn open_socket(protocol: isize) -> io::Result<Socket> {
    let mut sock = Socket::new(protocol)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    // Best effort: older kernels lack these and we work without them.
    // Extended ACKs carry the kernel's own words for a refusal.
    let _ = sock.set_ext_ack(true);
    // Capped ACKs do not echo our request back: smaller error replies.
    let _ = sock.set_cap_ack(true);
    Ok(sock)
}

pub(super) fn ext_ack_msg(payload: &[u8]) -> Option<String> {
    let tlvs = payload.get(16..)?;
    NlasIterator::new(tlvs).filter_map(Result::ok).find_map(|nla: NlaBuffer<&[u8]>| {
        (nla.kind() == NLMSGERR_ATTR_MSG).then(|| {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn kernel_errors_carry_errno_and_ext_ack() {
        if !crate::test_require_root() {
            return;
        }
        // In a private netns, so a bug here cannot touch the host's lo.
        let result = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let mut nl = Netlink::new()?;
            let mut msg = AddressMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.prefix_len = 33;
            msg.header.index = 1;
            msg.attributes.push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
            Ok::<_, io::Error>(nl.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL))
        })
        .join()
        .expect("thread")
        .expect("netns + socket");
        let e = result.expect_err("prefix 33 must be refused");
        assert_eq!(e.raw(), Some(libc::EINVAL));
        let text = e.ext_ack.expect("the kernel explains EINVAL here");
        assert!(text.contains("prefix"), "{text}");
    }
}
