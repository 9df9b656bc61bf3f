//! Just enough eBPF to write the device program: 64-bit moves, AND and
//! right shifts by a constant, 32-bit loads from the context, jumps on
//! "equal" and "not equal to a constant" and always, exit. (`crate::cbpf`
//! is classic BPF, a different machine; no crate is worth its weight for a
//! dozen opcodes: the program is built once per job, and a waiting
//! runner's RSS is its code.)

use crate::sys::BpfInsn;

// linux/bpf_common.h and linux/bpf.h.
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// A register, r0..=r10.
#[derive(Clone, Copy, Debug)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> BpfInsn {
    BpfInsn { code, regs: (src.0 << 4) | (dst.0 & 0x0f), off, imm }
}

/// `dst = *(u32 *)(src + off)`
pub fn load_u32(dst: Reg, src: Reg, off: i16) -> BpfInsn {
    insn(BPF_LDX | BPF_W | BPF_MEM, dst, src, off, 0)
}

/// `dst = src`
pub fn mov_reg(dst: Reg, src: Reg) -> BpfInsn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}

/// `dst = imm`
pub fn mov_imm(dst: Reg, imm: i32) -> BpfInsn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, R0, 0, imm)
}

/// `dst &= imm`
pub fn and_imm(dst: Reg, imm: i32) -> BpfInsn {
    insn(BPF_ALU64 | BPF_AND | BPF_K, dst, R0, 0, imm)
}

/// `dst >>= imm`
pub fn rsh_imm(dst: Reg, imm: i32) -> BpfInsn {
    insn(BPF_ALU64 | BPF_RSH | BPF_K, dst, R0, 0, imm)
}

/// `if dst != imm goto +off`
pub fn jne_imm(dst: Reg, imm: i32, off: i16) -> BpfInsn {
    insn(BPF_JMP | BPF_JNE | BPF_K, dst, R0, off, imm)
}

/// `if dst == imm goto +off`
pub fn jeq_imm(dst: Reg, imm: i32, off: i16) -> BpfInsn {
    insn(BPF_JMP | BPF_JEQ | BPF_K, dst, R0, off, imm)
}

/// `goto +off`
pub fn ja(off: i16) -> BpfInsn {
    insn(BPF_JMP | BPF_JA, R0, R0, off, 0)
}

pub fn exit() -> BpfInsn {
    insn(BPF_JMP | BPF_EXIT, R0, R0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernels() {
        // As llvm-objdump and the kernel's own samples encode them.
        assert_eq!(load_u32(Reg(2), R1, 4), BpfInsn { code: 0x61, regs: 0x12, off: 4, imm: 0 });
        assert_eq!(mov_reg(Reg(3), Reg(2)), BpfInsn { code: 0xbf, regs: 0x23, off: 0, imm: 0 });
        assert_eq!(mov_imm(R0, 1), BpfInsn { code: 0xb7, regs: 0x00, off: 0, imm: 1 });
        assert_eq!(and_imm(Reg(3), 0xffff), BpfInsn { code: 0x57, regs: 0x03, off: 0, imm: 0xffff });
        assert_eq!(rsh_imm(Reg(2), 16), BpfInsn { code: 0x77, regs: 0x02, off: 0, imm: 16 });
        assert_eq!(jne_imm(Reg(4), 136, 5), BpfInsn { code: 0x55, regs: 0x04, off: 5, imm: 136 });
        assert_eq!(jeq_imm(Reg(5), 3, 7), BpfInsn { code: 0x15, regs: 0x05, off: 7, imm: 3 });
        assert_eq!(ja(4), BpfInsn { code: 0x05, regs: 0, off: 4, imm: 0 });
        assert_eq!(exit(), BpfInsn { code: 0x95, regs: 0, off: 0, imm: 0 });
    }
}
