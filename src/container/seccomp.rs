//! The job's seccomp filter, loaded as the last step before its exec.
//!
//! By default docker's own profile (`seccomp/docker-default.json`, moby's
//! profiles/seccomp/default.json, Apache-2.0, unchanged): an allowlist
//! whose default is EPERM, so a job cannot make a user namespace (unshare,
//! clone with CLONE_NEW*, clone3 answers ENOSYS so that glibc falls back to
//! clone, whose flags a filter can see), mount, use the kernel keyrings
//! (keyctl, add_key, request_key), kexec, bpf or perf_event_open, while
//! what ordinary programs call is allowed. Like docker, the profile is
//! evaluated for the job's capabilities: a job that keeps CAP_SYS_ADMIN (a
//! formula's `sysad` policy) may also mount and unshare.
//!
//! build.rs compiles the default profile ahead of time, once per
//! capability policy, for the target architecture; the child only hands a
//! ready program to the kernel. `--security-opt seccomp=PROFILE.json`
//! compiles a profile in the same format on the host before the clone
//! (what the format means here: `profile`); `seccomp=unconfined` loads
//! none. The compiler is repeatr's own (`profile` + `bpf`): libseccomp
//! would put a C library in every runner and compile at run time, and
//! seccompiler has one match action per filter (docker's profile needs
//! ALLOW, EPERM and ENOSYS side by side) and tests syscalls one after
//! another where this one searches.

mod bpf;
pub mod error;
mod profile;
mod syscalls;

use std::io;
use std::path::Path;

pub use error::SeccompError;
use profile::{Kernel, Target};
use syscalls::Arch;

use super::spec::{Caps, Seccomp};
use crate::sys;

/// Docker's default profile compiled by build.rs for the target, one
/// program per entry of `profile::POLICIES`.
static DEFAULT_PROGRAMS: [&[libc::sock_filter]; 3] = include!(concat!(env!("OUT_DIR"), "/seccomp_default.rs"));

/// The index of `caps` in `profile::POLICIES` (and `DEFAULT_PROGRAMS`).
fn policy(caps: Caps) -> usize {
    match caps {
        Caps::DockerDefault => 0,
        Caps::None => 1,
        Caps::All => 2,
    }
}

/// The filter `--security-opt` asks for (docker's syntax; only `seccomp=`
/// is known): the default without one, none for `seccomp=unconfined`, or
/// the profile file, compiled here for a job that keeps `caps`.
pub fn from_security_opts(opts: &[String], caps: Caps) -> Result<Seccomp, SeccompError> {
    let mut choice = None;
    for opt in opts {
        let value = opt.strip_prefix("seccomp=").ok_or_else(|| SeccompError::Option(opt.clone()))?;
        if choice.is_some() {
            return Err(SeccompError::Twice);
        }
        choice = Some(match value {
            "unconfined" => Seccomp::Unconfined,
            "" => return Err(SeccompError::Option(opt.clone())),
            path => Seccomp::Custom(compile_file(Path::new(path), caps)?),
        });
    }
    Ok(choice.unwrap_or(Seccomp::Default))
}

/// A profile file compiled for this machine and a job that keeps `caps`.
fn compile_file(path: &Path, caps: Caps) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let json = std::fs::read_to_string(path).map_err(|err| SeccompError::Read { path: path.into(), err })?;
    let arch = Arch::by_target(std::env::consts::ARCH).ok_or(SeccompError::Arch(std::env::consts::ARCH))?;
    let target = Target { arch, caps: profile::POLICIES[policy(caps)], kernel: running_kernel()? };
    let compiled = profile::compile(&json, &target).map_err(|err| SeccompError::Profile { path: path.into(), err })?;
    if !compiled.skipped.is_empty() {
        log::info!(
            "seccomp profile {}: {} has no {} (skipped)",
            path.display(),
            arch.name,
            compiled.skipped.join(", ")
        );
    }
    Ok(compiled.program.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect())
}

/// The running kernel's major and minor version, for `minKernel`.
fn running_kernel() -> Result<Kernel, SeccompError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok(Kernel::Running(major, minor)),
        _ => Err(SeccompError::Kernel(release.trim().to_string())),
    }
}

/// Loads the job's filter. The last step before the exec: nothing of the
/// runner's own set-up runs under a profile that might refuse it. After
/// no_new_privs: without CAP_SYS_ADMIN the kernel takes a filter only
/// from a task that can no longer gain privileges, so that a filter cannot
/// mislead a setuid program into running half-blind (seccomp(2)).
pub fn load(seccomp: &Seccomp, caps: Caps) -> io::Result<()> {
    match seccomp {
        Seccomp::Unconfined => Ok(()),
        Seccomp::Default => sys::seccomp_set_filter(DEFAULT_PROGRAMS[policy(caps)]),
        Seccomp::Custom(program) => sys::seccomp_set_filter(program),
    }
}

#[cfg(test)]
mod tests {
    use super::bpf::{self, Insn};
    use super::*;
    use crate::container::security::KEPT_CAPS;

    fn program(caps: Caps) -> Vec<Insn> {
        DEFAULT_PROGRAMS[policy(caps)].iter().map(|i| Insn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
    }

    fn arch() -> &'static Arch {
        Arch::by_target(std::env::consts::ARCH).unwrap()
    }

    /// The default filter's verdict on `name(args)` for a job keeping `caps`.
    fn verdict(caps: Caps, name: &str, args: [u64; 6]) -> u32 {
        let nr = arch().number(name).unwrap_or_else(|| panic!("no {name}"));
        bpf::run(&program(caps), arch().audit, nr, args)
    }

    const EPERM: u32 = bpf::RET_ERRNO | 1;

    #[test]
    fn policies_name_the_capabilities_jobs_keep() {
        let kept: Vec<String> = KEPT_CAPS.iter().map(|c| c.to_string()).collect();
        assert_eq!(profile::POLICIES[policy(Caps::DockerDefault)], kept);
        assert!(profile::POLICIES[policy(Caps::None)].is_empty());
        let mut all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        let mut listed: Vec<String> = profile::POLICIES[policy(Caps::All)].iter().map(|c| c.to_string()).collect();
        all.sort();
        listed.sort();
        assert_eq!(listed, all);
    }

    /// build.rs's programs are what the runner's own compiler makes.
    #[test]
    fn the_embedded_default_is_the_compiled_profile() {
        let json = include_str!("seccomp/docker-default.json");
        for caps in [Caps::DockerDefault, Caps::None, Caps::All] {
            let t = Target { arch: arch(), caps: profile::POLICIES[policy(caps)], kernel: profile::OLDEST_KERNEL };
            assert_eq!(profile::compile(json, &t).unwrap().program, program(caps), "{caps:?}");
        }
    }

    #[test]
    fn the_default_refuses_namespaces_mounts_and_keyrings() {
        for caps in [Caps::DockerDefault, Caps::None] {
            for name in
                ["unshare", "setns", "mount", "umount2", "keyctl", "add_key", "request_key", "kexec_load", "bpf"]
            {
                assert_eq!(verdict(caps, name, [0; 6]), EPERM, "{name} {caps:?}");
            }
            assert_eq!(verdict(caps, "perf_event_open", [0; 6]), EPERM);
            assert_eq!(verdict(caps, "io_uring_setup", [0; 6]), EPERM);
            // clone3's flags live in memory a filter cannot read: ENOSYS
            // sends glibc back to clone, whose flags it can.
            assert_eq!(verdict(caps, "clone3", [0; 6]), bpf::RET_ERRNO | 38);
            let newuser = libc::CLONE_NEWUSER as u64;
            assert_eq!(verdict(caps, "clone", [newuser | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(verdict(caps, "clone", [libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0]), EPERM);
            let thread =
                (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
            assert_eq!(verdict(caps, "clone", [thread, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
            assert_eq!(verdict(caps, "socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), EPERM);
            assert_eq!(verdict(caps, "socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]), bpf::RET_ALLOW);
            assert_eq!(verdict(caps, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
            assert_eq!(verdict(caps, "personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
            for name in ["read", "openat", "execve", "wait4", "mkdirat", "rt_sigreturn", "exit_group", "ptrace"] {
                assert_eq!(verdict(caps, name, [0; 6]), bpf::RET_ALLOW, "{name} {caps:?}");
            }
        }
        // Newer than anything docker's profile names (it stops at
        // removexattrat, 466): ENOSYS, so that a program falls back.
        for name in ["open_tree_attr", "file_getattr", "listns"] {
            assert_eq!(verdict(Caps::DockerDefault, name, [0; 6]), bpf::RET_ERRNO | 38, "{name}");
        }
        // chroot follows CAP_SYS_CHROOT, as in docker.
        assert_eq!(verdict(Caps::DockerDefault, "chroot", [0; 6]), bpf::RET_ALLOW);
        assert_eq!(verdict(Caps::None, "chroot", [0; 6]), EPERM);
    }

    /// A job that keeps every capability (a formula's `sysad`) may do what
    /// CAP_SYS_ADMIN allows, as under docker; never keyrings or kexec.
    #[test]
    fn every_capability_opens_what_docker_opens_for_it() {
        for name in ["unshare", "setns", "mount", "clone3", "bpf", "perf_event_open"] {
            assert_eq!(verdict(Caps::All, name, [0; 6]), bpf::RET_ALLOW, "{name}");
        }
        assert_eq!(verdict(Caps::All, "clone", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
        for name in ["keyctl", "add_key", "request_key", "kexec_load"] {
            assert_eq!(verdict(Caps::All, name, [0; 6]), EPERM, "{name}");
        }
    }

    /// Only the native ABI: i386 (on x86_64) or arm (on aarch64) calls and
    /// x32 numbers kill the process.
    #[test]
    fn other_abis_are_killed() {
        let prog = program(Caps::DockerDefault);
        for foreign in [0x4000_0003u32, 0x4000_0028, 0] {
            assert_eq!(bpf::run(&prog, foreign, 0, [0; 6]), bpf::RET_KILL_PROCESS);
        }
        if arch().x32_bit {
            assert_eq!(bpf::run(&prog, arch().audit, syscalls::X32_SYSCALL_BIT, [0; 6]), bpf::RET_KILL_PROCESS);
        }
    }

    #[test]
    fn security_opts() {
        assert!(matches!(from_security_opts(&[], Caps::DockerDefault), Ok(Seccomp::Default)));
        let unconfined = ["seccomp=unconfined".to_string()];
        assert!(matches!(from_security_opts(&unconfined, Caps::DockerDefault), Ok(Seccomp::Unconfined)));
        let twice = ["seccomp=unconfined".to_string(), "seccomp=unconfined".to_string()];
        assert!(matches!(from_security_opts(&twice, Caps::DockerDefault), Err(SeccompError::Twice)));
        for bad in ["apparmor=unconfined", "seccomp", "seccomp="] {
            let e = from_security_opts(&[bad.to_string()], Caps::DockerDefault).unwrap_err();
            assert!(matches!(e, SeccompError::Option(_)), "{bad}: {e}");
        }
        let missing = ["seccomp=/nonexistent/profile.json".to_string()];
        let e = from_security_opts(&missing, Caps::DockerDefault).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/profile.json") && e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn the_running_kernel_has_a_version() {
        assert!(matches!(running_kernel(), Ok(Kernel::Running(major, _)) if major >= 5));
    }
}
