//! What a job's port on the bridge lets through: only frames the job may
//! send. A job with NET_RAW (`--cap-add NET_RAW`) can write any frame on
//! its `eth0`; without this filter it could answer ARP for another job's
//! address, send with another job's source address, teach the bridge
//! another job's MAC, or send IPv6 router advertisements to the host.
//!
//! The filter sits on the host end of the job's veth, on its ingress (the
//! frames the job sends), where nothing the job does inside its netns,
//! with any capability there, reaches it, and where frames from AF_PACKET
//! sockets pass too (netfilter's ip and arp hooks in the job's netns never
//! see those). It is a classic BPF program in `cls_bpf` direct-action mode
//! under the `ingress` qdisc: classic BPF rides inside the RTM_NEWTFILTER
//! itself (no bpf() call, no program fd), so the filter goes in the batch
//! that names the veth, and `sch_ingress` and `cls_bpf` are all of tc
//! it needs (CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF; flower and
//! gact are not required, and many kernels built without modules lack
//! them). Both die with the veth: no state shared
//! between jobs, nothing to clean up after a runner that was killed.
//!
//! Cost, measured on 6.18: the first filter under a qdisc made moments
//! before waits for an RCU grace period (`mini_qdisc_pair_swap`), and with
//! RTNL held that is an expedited one: ~0.1 ms, during which every other
//! netlink user of the host waits too. A filter on an older qdisc costs
//! ~0.05 ms. So the qdisc comes with the veth's creation, and the filter
//! with the lease, a lease's time later: by then a grace period has
//! nearly always passed (on a busy host, other jobs' expedite them).
//!
//! Allowed, from the job's MAC only (derived from its IP, see
//! [`mac_for_ip`]) and untagged: IPv4 from its leased address, and
//! Ethernet/IPv4 ARP whose sender is its MAC and address. Everything else
//! (IPv6, so router advertisements; VLAN tags; ARP probes from 0.0.0.0;
//! runts) is dropped.

use std::net::Ipv4Addr;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption, TcU32OptionFlags,
};

use super::iface::mac_for_ip;
use crate::cbpf::{
    Insn, JMP_JEQ_K as JEQ, JMP_JGE_K as JGE, LD_H_ABS as LD_H, LD_W_ABS as LD_W, LD_W_LEN as LD_LEN, RET_K as RET,
};

/// SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT: the kernel moves an outer VLAN
/// tag out of the frame before tc runs, so it is asked for separately.
const VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;

// Direct-action verdicts (linux/pkt_cls.h).
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_ARP: u32 = 0x0806;
const ETH_P_ALL: u16 = 0x0003;
/// The shortest frame accepted: Ethernet + an IPv4 header without options.
const MIN_IPV4: u32 = 14 + 20;
/// Ethernet + an Ethernet/IPv4 ARP packet.
const MIN_ARP: u32 = 14 + 28;
/// ARP's hardware type (Ethernet) and protocol (IPv4), then its address
/// lengths (6, 4): the layout the offsets below assume.
const ARP_ETHER_IPV4: u32 = 0x0001_0800;
const ARP_LENGTHS: u32 = 0x0604;

/// Where a jump goes: the next instruction, a verdict, or the ARP checks.
#[derive(Clone, Copy)]
enum To {
    Next,
    Accept,
    Drop,
    Arp,
}

/// The program for a job at `ip`. Classic BPF loads are big-endian and end
/// the program with 0 when they read past the frame, which in
/// direct-action mode is TC_ACT_OK: so every load comes after a length
/// check that covers it.
pub(super) fn program(ip: Ipv4Addr) -> Vec<Insn> {
    let mac = mac_for_ip(ip);
    let mac_hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let mac_lo = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    let ip = u32::from(ip);
    let ld = |code, k| (code, To::Next, To::Next, k);
    let is = |k| (JEQ, To::Next, To::Drop, k);
    let head = [
        ld(LD_LEN, 0),
        (JGE, To::Next, To::Drop, MIN_IPV4),
        ld(LD_W, VLAN_TAG_PRESENT),
        is(0),
        // Ethernet source.
        ld(LD_W, 6),
        is(mac_hi),
        ld(LD_H, 10),
        is(mac_lo),
        ld(LD_H, 12),
        (JEQ, To::Next, To::Arp, ETH_P_IP),
        // IPv4 source.
        ld(LD_W, 14 + 12),
        (JEQ, To::Accept, To::Drop, ip),
    ];
    let arp = [
        // The ethertype is still in A.
        (JEQ, To::Next, To::Drop, ETH_P_ARP),
        ld(LD_LEN, 0),
        (JGE, To::Next, To::Drop, MIN_ARP),
        ld(LD_W, 14),
        is(ARP_ETHER_IPV4),
        ld(LD_H, 14 + 4),
        is(ARP_LENGTHS),
        // Sender hardware address, then sender protocol address.
        ld(LD_W, 14 + 8),
        is(mac_hi),
        ld(LD_H, 14 + 12),
        is(mac_lo),
        ld(LD_W, 14 + 14),
        is(ip),
    ];
    let steps: Vec<_> = head.into_iter().chain(arp).collect();
    let accept = steps.len();
    let drop = accept + 1;
    let offset = |at: usize, to: To| {
        let target = match to {
            To::Next => at + 1,
            To::Accept => accept,
            To::Drop => drop,
            To::Arp => head.len(),
        };
        // Jumps only go forward, and the program is far shorter than 256.
        (target - at - 1) as u8
    };
    let mut insns: Vec<Insn> = steps
        .iter()
        .enumerate()
        .map(|(at, &(code, jt, jf, k))| Insn { code, jt: offset(at, jt), jf: offset(at, jf), k })
        .collect();
    insns.push(Insn { code: RET, jt: 0, jf: 0, k: TC_ACT_OK });
    insns.push(Insn { code: RET, jt: 0, jf: 0, k: TC_ACT_SHOT });
    insns
}

// cls_bpf's attributes for a classic program (linux/pkt_cls.h), which the
// crate has no variants for.
const TCA_BPF_OPS_LEN: u16 = 4;
const TCA_BPF_OPS: u16 = 5;

/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: u32 = 0xffff_0000;
/// A filter's parent for the ingress side, as `tc filter add dev X ingress`
/// gives it (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)).
const INGRESS_PARENT: u32 = 0xffff_fff2;

/// The request that gives link `index` its ingress qdisc, the filter's
/// parent, with its netlink flags. Sent when the veth is made, long before
/// the filter: see the module's notes on the cost.
pub(crate) fn qdisc_message(index: u32) -> (RouteNetlinkMessage, u16) {
    let mut qdisc = TcMessage::with_index(index as i32);
    qdisc.header.parent = TcHandle::INGRESS;
    qdisc.header.handle = TcHandle::from(INGRESS_HANDLE);
    qdisc.attributes.push(TcAttribute::Kind("ingress".into()));
    (RouteNetlinkMessage::NewQueueDiscipline(qdisc), NLM_F_CREATE | NLM_F_EXCL)
}

/// The request that puts the filter for a job at `ip` on link `index` (the
/// host end of its veth), under the qdisc of [`qdisc_message`], with its
/// netlink flags.
pub(crate) fn filter_message(index: u32, ip: Ipv4Addr) -> (RouteNetlinkMessage, u16) {
    let ifindex = index as i32;
    let mut ops = Vec::new();
    let insns = program(ip);
    for i in &insns {
        ops.extend_from_slice(&i.code.to_ne_bytes());
        ops.extend_from_slice(&[i.jt, i.jf]);
        ops.extend_from_slice(&i.k.to_ne_bytes());
    }
    let mut filter = TcMessage::with_index(ifindex);
    filter.header.parent = TcHandle::from(INGRESS_PARENT);
    filter.header.handle = TcHandle::from(1);
    // Priority 1 in the high half, the protocol (ETH_P_ALL, big-endian) in
    // the low half: every frame goes through the program.
    filter.header.info = (1 << 16) | u32::from(ETH_P_ALL.to_be());
    filter.attributes.push(TcAttribute::Kind(TcFilterBpf::KIND.into()));
    filter.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
            TCA_BPF_OPS_LEN,
            (insns.len() as u16).to_ne_bytes().to_vec(),
        ))),
        TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(TCA_BPF_OPS, ops))),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        TcOption::Bpf(TcFilterBpfOption::FlagsGeneric(TcU32OptionFlags::SkipHw)),
    ]));
    (RouteNetlinkMessage::NewTrafficFilter(filter), NLM_F_CREATE | NLM_F_EXCL)
}

/// How many instructions the port filter of link `index` runs (None: no
/// filter), as the kernel reports them.
#[cfg(test)]
pub(crate) fn installed_len(nl: &mut super::netlink::Netlink, index: u32) -> Option<usize> {
    use netlink_packet_core::Nla;
    let mut req = TcMessage::with_index(index as i32);
    req.header.parent = TcHandle::from(INGRESS_PARENT);
    let found = nl.dump(RouteNetlinkMessage::GetTrafficFilter(req)).ok()?;
    found.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewTrafficFilter(f) => f.attributes.iter().find_map(|a| match a {
            TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
                TcOption::Bpf(TcFilterBpfOption::Other(nla)) if nla.kind() == TCA_BPF_OPS_LEN => {
                    let mut len = [0u8; 2];
                    nla.emit_value(&mut len);
                    Some(usize::from(u16::from_ne_bytes(len)))
                }
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

/// Whether link `index` has the ingress qdisc, as the kernel reports it.
#[cfg(test)]
pub(crate) fn has_ingress_qdisc(nl: &mut super::netlink::Netlink, index: u32) -> bool {
    let found = nl.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default())).unwrap_or_default();
    found.iter().any(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q) => {
            q.header.index == index as i32 && q.attributes.contains(&TcAttribute::Kind("ingress".into()))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on `frame` as the kernel's classic BPF would (only the
    /// opcodes the program uses), with `vlan` as the tag-present flag.
    fn run(prog: &[Insn], frame: &[u8], vlan: bool) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let load = |k: u32, n: usize| -> Option<u32> {
                let at = k as usize;
                let bytes = frame.get(at..at + n)?;
                Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
            };
            pc += 1;
            match i.code {
                LD_LEN => a = frame.len() as u32,
                LD_W if i.k == VLAN_TAG_PRESENT => a = u32::from(vlan),
                // Past the end: the kernel ends the program with 0.
                LD_W => match load(i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H => match load(i.k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                JEQ => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGE => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                RET => return i.k,
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    const JOB: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 7);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 8);

    fn eth(src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(src: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&[198, 18, 3, 1]);
        h
    }

    fn arp(sha: [u8; 6], spa: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 2];
        p.extend_from_slice(&sha);
        p.extend_from_slice(&spa.octets());
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[198, 18, 3, 1]);
        p
    }

    #[test]
    fn only_the_jobs_own_ipv4_and_arp_pass() {
        let prog = program(JOB);
        let (me, them) = (mac_for_ip(JOB), mac_for_ip(OTHER));
        let verdict = |f: &[u8]| run(&prog, f, false);
        assert_eq!(verdict(&eth(me, 0x0800, &ipv4(JOB))), TC_ACT_OK);
        assert_eq!(verdict(&eth(me, 0x0806, &arp(me, JOB))), TC_ACT_OK);

        assert_eq!(verdict(&eth(me, 0x0800, &ipv4(OTHER))), TC_ACT_SHOT, "another job's source address");
        assert_eq!(verdict(&eth(them, 0x0800, &ipv4(JOB))), TC_ACT_SHOT, "another MAC");
        assert_eq!(verdict(&eth(me, 0x0806, &arp(me, OTHER))), TC_ACT_SHOT, "ARP for another job's address");
        assert_eq!(verdict(&eth(me, 0x0806, &arp(them, JOB))), TC_ACT_SHOT, "ARP naming another MAC");
        assert_eq!(verdict(&eth(me, 0x0806, &arp(me, Ipv4Addr::UNSPECIFIED))), TC_ACT_SHOT, "ARP probe");
        let mut odd = arp(me, JOB);
        odd[4] = 4; // a hardware address length other than 6
        assert_eq!(verdict(&eth(me, 0x0806, &odd)), TC_ACT_SHOT, "ARP of another layout");
        assert_eq!(verdict(&eth(me, 0x86dd, &[0; 40])), TC_ACT_SHOT, "IPv6");
        assert_eq!(verdict(&eth(me, 0x8100, &[0; 40])), TC_ACT_SHOT, "an inner VLAN tag");
        assert_eq!(run(&prog, &eth(me, 0x0800, &ipv4(JOB)), true), TC_ACT_SHOT, "an outer VLAN tag");
    }

    /// Short frames never reach a load past their end (which would pass).
    #[test]
    fn runts_are_dropped() {
        let prog = program(JOB);
        let me = mac_for_ip(JOB);
        let ip = eth(me, 0x0800, &ipv4(JOB));
        let arp = eth(me, 0x0806, &arp(me, JOB));
        for n in 0..ip.len() {
            assert_eq!(run(&prog, &ip[..n], false), TC_ACT_SHOT, "IPv4 cut to {n} bytes");
        }
        for n in 0..arp.len() {
            assert_eq!(run(&prog, &arp[..n], false), TC_ACT_SHOT, "ARP cut to {n} bytes");
        }
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let prog = program(JOB);
        for (at, i) in prog.iter().enumerate() {
            if i.code == JEQ || i.code == JGE {
                assert!(at + 1 + usize::from(i.jt.max(i.jf)) < prog.len(), "{at}: {i:?}");
            }
        }
        assert_eq!(prog.last().map(|i| (i.code, i.k)), Some((RET, TC_ACT_SHOT)), "the end drops");
    }
}
