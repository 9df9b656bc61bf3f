//! Classic BPF as seccomp runs it: the few instructions a filter needs,
//! an emitter that lays a program out back to front (so every jump's
//! distance is known when it is written, and one too far for a
//! conditional jump's 8-bit offset goes through an unconditional one), and,
//! for the tests, an interpreter that runs a program on a syscall.
//!
//! Built into the runner and into build.rs (which compiles the default
//! profile ahead of time): std only.

pub use crate::cbpf::{ALU_AND_K, Insn, JMP_JA, JMP_JEQ_K, JMP_JGE_K, JMP_JGT_K, LD_W_ABS, RET_K};

// Return values (linux/seccomp.h): the action in the high 16 bits, its
// data (an errno) in the low ones.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// `struct seccomp_data`: the syscall number, the audit architecture, then
/// (after the instruction pointer) six 64-bit arguments.
pub const OFFSET_NR: u32 = 0;
pub const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// The offset of the low (`high == false`) or high 32 bits of argument
/// `index`, on a little-endian machine (both of repeatr's targets).
pub fn arg_offset(index: u8, high: bool) -> u32 {
    OFFSET_ARGS + 8 * u32::from(index) + if high { 4 } else { 0 }
}

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

/// A place in a program being emitted: the index of an instruction counted
/// from the program's end, which stays valid while more code is put in
/// front of it.
pub type Label = usize;

/// A program written from its last instruction to its first.
#[derive(Default)]
pub struct Emitter {
    /// The program, reversed.
    rev: Vec<Insn>,
    /// Return instructions already written, by value: a jump to one within
    /// reach reuses it.
    rets: Vec<(u32, Label)>,
}

impl Emitter {
    /// The distance a jump written next (at index `rev.len()`) would have
    /// to `target`.
    fn distance(&self, target: Label) -> usize {
        self.rev.len() - 1 - target
    }

    fn push(&mut self, insn: Insn) -> Label {
        self.rev.push(insn);
        self.rev.len() - 1
    }

    /// `RET value`, shared with an earlier one in reach of a conditional
    /// jump from here (one short of it: a jump may need a trampoline).
    pub fn ret(&mut self, value: u32) -> Label {
        let near = self.rets.iter().rev().find(|(v, l)| *v == value && self.distance(*l) < 255);
        if let Some((_, label)) = near {
            return *label;
        }
        let label = self.push(Insn { code: RET_K, jt: 0, jf: 0, k: value });
        self.rets.push((value, label));
        label
    }

    /// A statement without jumps (a load, an AND).
    pub fn stmt(&mut self, code: u16, k: u32) -> Label {
        self.push(Insn { code, jt: 0, jf: 0, k })
    }

    /// A conditional jump: to `jt` if `A op k`, else to `jf`. A target out
    /// of an 8-bit offset's reach gets an unconditional jump right after
    /// this one to carry it on.
    pub fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        // jf first, with one to spare: a trampoline for jt moves us one on.
        let jf = if self.distance(jf) > 254 { self.goto(jf) } else { jf };
        let jt = if self.distance(jt) > 255 { self.goto(jt) } else { jt };
        let (t, f) = (self.distance(jt), self.distance(jf));
        // Both fit now: each target is at most 255 away, by the checks above.
        self.push(Insn { code, jt: t as u8, jf: f as u8, k })
    }

    /// Makes the next instruction written fall through to `target`: a jump
    /// to it unless it is the last one written.
    pub fn fall_through_to(&mut self, target: Label) {
        if self.rev.len().checked_sub(1) != Some(target) {
            self.goto(target);
        }
    }

    /// An unconditional jump (32-bit offset) to `target`.
    fn goto(&mut self, target: Label) -> Label {
        let k = self.distance(target) as u32;
        self.push(Insn { code: JMP_JA, jt: 0, jf: 0, k })
    }

    pub fn len(&self) -> usize {
        self.rev.len()
    }

    /// The program, first instruction first. Its entry is the last label
    /// emitted.
    pub fn finish(mut self) -> Vec<Insn> {
        self.rev.reverse();
        self.rev
    }
}

/// Runs `prog` on a syscall as the kernel would, for the tests: returns
/// the filter's verdict. Panics on what the kernel's checker refuses (a
/// jump or load out of bounds, running off the end).
#[cfg(test)]
pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let o = i.k as usize;
                assert!(o.is_multiple_of(4) && o + 4 <= data.len(), "load at {o}");
                acc = u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
            }
            ALU_AND_K => acc &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                let taken = match i.code {
                    JMP_JEQ_K => acc == i.k,
                    JMP_JGT_K => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET_K => return i.k,
            other => panic!("opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far targets go through trampolines; near returns are shared.
    #[test]
    fn jumps_reach_far_targets() {
        let mut e = Emitter::default();
        let allow = e.ret(RET_ALLOW);
        let deny = e.ret(RET_ERRNO | 1);
        for _ in 0..300 {
            e.stmt(LD_W_ABS, OFFSET_NR);
        }
        let far = e.ret(RET_KILL_PROCESS);
        for _ in 0..300 {
            e.stmt(LD_W_ABS, OFFSET_NR);
        }
        e.stmt(LD_W_ABS, OFFSET_NR);
        // nr == 7 -> allow (far), nr > 7 -> deny (far), else far kill.
        let gt = e.jump(JMP_JGT_K, 7, deny, far);
        e.jump(JMP_JEQ_K, 7, allow, gt);
        e.stmt(LD_W_ABS, OFFSET_NR);
        let prog = e.finish();
        assert!(prog.len() < MAX_INSNS);
        assert_eq!(run(&prog, 0, 7, [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, 0, 8, [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&prog, 0, 6, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn near_returns_are_shared() {
        let mut e = Emitter::default();
        let a = e.ret(RET_ALLOW);
        e.stmt(LD_W_ABS, OFFSET_NR);
        assert_eq!(e.ret(RET_ALLOW), a);
        for _ in 0..300 {
            e.stmt(LD_W_ABS, OFFSET_NR);
        }
        assert_ne!(e.ret(RET_ALLOW), a);
    }
}
