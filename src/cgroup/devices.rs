//! The device allowlist: a job may open only the devices its /dev has
//! (`container::mounts::mount_dev`: null, zero, full, random, urandom, tty,
//! and ptmx with its pts) and make none but those six nodes, which its own
//! set-up makes on a scratch tmpfs before binding them into /dev (a node
//! of a device it may open anyway gives it nothing). runc's default list
//! is the same set plus `mknod` of anything and /dev/console; here no
//! mknod of anything else, so `--cap-add MKNOD` reaches no host block
//! device even on a mount without `nodev`.
//!
//! Two encodings of one list: cgroup v1 `devices.allow` lines, and a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program for cgroup v2, which has no
//! devices controller (runc's and crun's way, libcontainer/cgroups/devices).

use super::ebpf::{self, R0, R1, Reg};
use crate::sys::BpfInsn;

/// One char device (every allowed device is one), with `minor: None` for
/// every minor.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub major: u32,
    pub minor: Option<u32>,
    pub mknod: bool,
}

const fn node(major: u32, minor: u32) -> Rule {
    Rule { major, minor: Some(minor), mknod: true }
}

/// UNIX98_PTY_SLAVE_MAJOR: a devpts instance's ptys.
const PTS_MAJOR: u32 = 136;

pub const ALLOWED: [Rule; 8] = [
    node(1, 3),                                           // null
    node(1, 5),                                           // zero
    node(1, 7),                                           // full
    node(1, 8),                                           // random
    node(1, 9),                                           // urandom
    node(5, 0),                                           // tty
    Rule { major: 5, minor: Some(2), mknod: false },      // ptmx (devpts' own node)
    Rule { major: PTS_MAJOR, minor: None, mknod: false }, // pts/N
];

/// The lines for `devices.allow`, after `a` to `devices.deny`.
pub fn v1_lines() -> Vec<String> {
    ALLOWED
        .iter()
        .map(|r| {
            let minor = r.minor.map_or_else(|| "*".to_string(), |m| m.to_string());
            format!("c {}:{minor} rw{}", r.major, if r.mknod { "m" } else { "" })
        })
        .collect()
}

// linux/bpf.h: `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
// u32 minor; }`, access_type = access << 16 | type.
const DEV_CHAR: i32 = 2;
#[cfg(test)] // the program grants mknod by not testing for it
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// Where a jump to one of the v2 program's shared tails goes.
#[derive(Clone, Copy)]
enum Tail {
    /// Read and write, and mknod too if `true`.
    Allow(bool),
    Deny,
}

/// The v2 program: 1 (allow) for an access a rule covers, 0 (EPERM)
/// otherwise.
///
/// Laid out for the verifier, which walks every path of a program at each
/// job's start: the device type is tested once, the rules are grouped by
/// major (one test each), and a group's minors jump straight to one of
/// two shared access checks. With a block of tests per rule, as runc lays
/// it out, loading took ~180 us against ~70 us for this on a 2-core VM (of
/// ~13 ms of host CPU per networked job).
pub fn program() -> Vec<BpfInsn> {
    let (access, kind, major, minor) = (Reg(2), Reg(3), Reg(4), Reg(5));
    let mut p = vec![
        ebpf::load_u32(access, R1, 0),
        ebpf::mov_reg(kind, access),
        ebpf::and_imm(kind, 0xffff),
        ebpf::rsh_imm(access, 16),
        ebpf::load_u32(major, R1, 4),
        ebpf::load_u32(minor, R1, 8),
        // Every exit below that does not set r0 denies.
        ebpf::mov_imm(R0, 0),
    ];
    // Jumps to the tails, whose offsets are known once the rules are laid out.
    let mut to_tail = vec![(p.len(), Tail::Deny)];
    p.push(ebpf::jne_imm(kind, DEV_CHAR, 0));
    let mut majors: Vec<u32> = Vec::new();
    for r in ALLOWED {
        if !majors.contains(&r.major) {
            majors.push(r.major);
        }
    }
    for m in majors {
        let group = || ALLOWED.iter().filter(move |r| r.major == m);
        // The rules of a major are a union: a wildcard rule's rights go to
        // every minor, a fixed minor's rules are one test.
        let wildcard = group().filter(|r| r.minor.is_none()).map(|r| r.mknod).reduce(|a, b| a | b);
        let mut minors: Vec<(u32, bool)> = Vec::new();
        for r in group() {
            if let Some(n) = r.minor {
                match minors.iter_mut().find(|(x, _)| *x == n) {
                    Some((_, mknod)) => *mknod |= r.mknod,
                    None => minors.push((n, r.mknod)),
                }
            }
        }
        // A fixed minor that grants no more than the wildcard is the wildcard's.
        minors.retain(|&(_, mknod)| wildcard.is_none_or(|w| mknod && !w));
        let skip = p.len();
        p.push(ebpf::jne_imm(major, m as i32, 0));
        for (n, mknod) in minors {
            to_tail.push((p.len(), Tail::Allow(mknod)));
            p.push(ebpf::jeq_imm(minor, n as i32, 0));
        }
        match wildcard {
            Some(mknod) => {
                to_tail.push((p.len(), Tail::Allow(mknod)));
                p.push(ebpf::ja(0));
            }
            None => p.push(ebpf::exit()),
        }
        p[skip].off = offset(skip, p.len());
    }
    p.push(ebpf::exit());
    let allow_rw = p.len();
    // Any access beyond read and write (mknod): denied.
    p.extend([ebpf::mov_reg(R0, access), ebpf::and_imm(R0, !(ACC_READ | ACC_WRITE)), ebpf::jne_imm(R0, 0, 2)]);
    let allow_rwm = p.len();
    p.extend([ebpf::mov_imm(R0, 1), ebpf::exit()]);
    let deny = p.len();
    p.extend([ebpf::mov_imm(R0, 0), ebpf::exit()]);
    for (at, tail) in to_tail {
        let to = match tail {
            Tail::Allow(false) => allow_rw,
            Tail::Allow(true) => allow_rwm,
            Tail::Deny => deny,
        };
        p[at].off = offset(at, to);
    }
    p
}

/// The offset of a jump at `at` to `to`: from the instruction after it.
/// The program is a few dozen instructions, far inside i16.
fn offset(at: usize, to: usize) -> i16 {
    (to - at - 1) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines_are_the_list() {
        let l = v1_lines();
        assert_eq!(l[0], "c 1:3 rwm");
        assert!(l.contains(&"c 5:2 rw".to_string()));
        assert_eq!(l.last().unwrap(), "c 136:* rw");
        assert!(!l.iter().any(|l| l.starts_with('b')));
    }

    /// Runs the program the way the kernel would, for one access: a tiny
    /// interpreter of the opcodes `ebpf` emits.
    fn run(p: &[BpfInsn], access: i32, kind: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                0x61 => r[dst] = ctx[i.off as usize / 4] as u64,
                0xbf => r[dst] = r[src],
                0xb7 => r[dst] = i.imm as i64 as u64,
                0x57 => r[dst] &= i.imm as i64 as u64,
                0x77 => r[dst] >>= i.imm,
                0x55 => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i.off as i64) as usize;
                    }
                }
                0x15 => {
                    if r[dst] == i.imm as i64 as u64 {
                        pc = (pc as i64 + i.off as i64) as usize;
                    }
                }
                0x05 => pc = (pc as i64 + i.off as i64) as usize,
                0x95 => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_the_list_and_nothing_else() {
        let p = program();
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, rw, DEV_CHAR, 1, 3), 1);
        assert_eq!(run(&p, ACC_MKNOD, DEV_CHAR, 1, 3), 1);
        assert_eq!(run(&p, ACC_READ, DEV_CHAR, 136, 7), 1);
        assert_eq!(run(&p, rw, DEV_CHAR, 5, 2), 1);
        assert_eq!(run(&p, ACC_MKNOD, DEV_CHAR, 5, 2), 0);
        assert_eq!(run(&p, ACC_MKNOD, DEV_CHAR, 136, 1), 0);
        // A loop device, as block and as char; /dev/mem; /dev/kmsg.
        assert_eq!(run(&p, ACC_MKNOD, 1, 7, 0), 0);
        assert_eq!(run(&p, rw, 1, 7, 0), 0);
        assert_eq!(run(&p, ACC_READ, 1, 1, 3), 0);
        assert_eq!(run(&p, rw, DEV_CHAR, 1, 1), 0);
        assert_eq!(run(&p, ACC_READ, DEV_CHAR, 1, 11), 0);
    }

    /// What the list allows, by its definition: the program must agree.
    fn allowed(access: i32, kind: i32, major: u32, minor: u32) -> bool {
        kind == DEV_CHAR
            && ALLOWED.iter().any(|r| {
                let rights = ACC_READ | ACC_WRITE | if r.mknod { ACC_MKNOD } else { 0 };
                r.major == major && r.minor.is_none_or(|m| m == minor) && access & !rights == 0
            })
    }

    #[test]
    fn the_program_is_the_list_for_every_access() {
        let p = program();
        let mut majors: Vec<u32> = ALLOWED.iter().flat_map(|r| [r.major, r.major + 1]).collect();
        majors.extend([0, 2, 4, 7, 10, 135, 137, 254]);
        for access in 0..8 {
            for kind in [1, DEV_CHAR, 3] {
                for &major in &majors {
                    for minor in (0..12).chain([127, 128, 255, 1 << 19]) {
                        assert_eq!(
                            run(&p, access, kind, major, minor) == 1,
                            allowed(access, kind, major, minor),
                            "access {access} type {kind} {major}:{minor}"
                        );
                    }
                }
            }
        }
    }

    /// The v2 program on the real kernel: this machine's cgroup2 (a
    /// hybrid's empty one has the BPF hook too) with the program attached,
    /// and a host shell moved into it first thing.
    #[test]
    fn the_v2_program_denies_on_the_real_kernel() {
        if !nix::unistd::geteuid().is_root() {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "this test needs root (CI=true)");
            eprintln!("skipped: needs root");
            return;
        }
        let h = crate::cgroup::discover().unwrap();
        let own = h.v2.expect("a cgroup2 mount");
        let dir = own.join(format!("repeatr-test-devices.{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        let fd = std::fs::File::open(&dir).unwrap();
        crate::sys::attach_device_program(std::os::fd::AsFd::as_fd(&fd), &program()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs || exit 9; cd {} || exit 8; \
             mknod loop b 7 0 2>/dev/null && echo loop-made; \
             mknod mem c 1 1 2>/dev/null && echo mem-made; \
             mknod null c 1 3 && echo x > null && echo null-ok; \
             head -c1 /dev/zero >/dev/null && echo zero-ok; \
             head -c1 /dev/kmsg >/dev/null 2>&1 || echo kmsg-denied",
            dir.display(),
            tmp.path().display()
        );
        let o = std::process::Command::new("/bin/sh").args(["-c", &script]).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(out, "null-ok\nzero-ok\nkmsg-denied\n");
    }
}
