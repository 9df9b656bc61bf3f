//! Classic BPF, as both of repeatr's programs run it: the seccomp filter
//! (src/container/seccomp/) and the job port's tc filter
//! (src/network/port_filter.rs). The instruction is the kernel's
//! `struct sock_filter`; the opcodes are the few these programs use
//! (linux/bpf_common.h: class | size/operation | source). std only:
//! build.rs compiles this file too.

/// One instruction, laid out as `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// BPF_LD | BPF_W | BPF_ABS: A = 32 bits at offset k.
pub const LD_W_ABS: u16 = 0x20;
/// BPF_LD | BPF_H | BPF_ABS: A = 16 bits at offset k.
pub const LD_H_ABS: u16 = 0x28;
/// BPF_LD | BPF_W | BPF_LEN: A = the packet's length.
pub const LD_W_LEN: u16 = 0x80;
/// BPF_ALU | BPF_AND | BPF_K.
pub const ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA: the one jump with a 32-bit offset (k).
pub const JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ / BPF_JGT / BPF_JGE | BPF_K (unsigned compares).
pub const JMP_JEQ_K: u16 = 0x15;
pub const JMP_JGT_K: u16 = 0x25;
pub const JMP_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
pub const RET_K: u16 = 0x06;
