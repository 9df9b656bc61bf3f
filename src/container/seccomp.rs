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
//! build.rs compiles the default profile ahead of time for the target
//! architecture and the capability sets jobs usually have (the default
//! set, none, all); the child only hands a ready program to the kernel. A
//! job with another set (`--cap-add SYS_PTRACE`) gets the same profile
//! compiled on the host before the clone. `--security-opt seccomp=PROFILE.json`
//! compiles a profile in the same format on the host before the clone
//! (what the format means here: `profile`); `seccomp=unconfined` loads
//! none. The compiler is repeatr's own (`profile` + `bpf`): libseccomp
//! would put a C library in every runner and compile at run time, and
//! seccompiler has one match action per filter (docker's profile needs
//! ALLOW, EPERM and ENOSYS side by side) and tests syscalls one after
//! another where this one searches. That layout is what loading costs:
//! the kernel runs a new filter for every syscall number to cache the
//! always-allowed ones, so docker's allowlist as seccompiler lays it out
//! (1,505 instructions) takes ~1 ms to load on a 2-core VM, and as this
//! compiler does (113) ~0.09 ms, a one-instruction filter ~0.02 ms.

mod bpf;
pub mod error;
mod profile;
mod syscalls;

use std::borrow::Cow;
use std::io;
use std::path::Path;

pub use error::SeccompError;
use profile::{Kernel, Target};
use syscalls::Arch;

use super::spec::{Caps, Seccomp};
use crate::sys;

// NAMED_CAPS and PRECOMPILED: docker's default profile compiled by
// build.rs for the target, for the capability sets jobs usually have.
include!(concat!(env!("OUT_DIR"), "/seccomp_default.rs"));

/// Docker's default profile (minified by build.rs), for a job whose
/// capabilities no precompiled filter was made for.
const DOCKER_DEFAULT: &str = include_str!(concat!(env!("OUT_DIR"), "/docker-default.min.json"));

/// The filter `--security-opt` asks for (docker's syntax; only `seccomp=`
/// is known): docker's default without one, none for
/// `seccomp=unconfined`, or the profile file, compiled here for a job that
/// keeps `caps`.
pub fn from_security_opts(opts: &[String], caps: &Caps) -> Result<Seccomp, SeccompError> {
    let mut choice = None;
    for opt in opts {
        let value = opt.strip_prefix("seccomp=").ok_or_else(|| SeccompError::Option(opt.clone()))?;
        if choice.is_some() {
            return Err(SeccompError::Twice);
        }
        choice = Some(match value {
            "unconfined" => Seccomp::Unconfined,
            "" => return Err(SeccompError::Option(opt.clone())),
            path => {
                let path = Path::new(path);
                let json =
                    std::fs::read_to_string(path).map_err(|err| SeccompError::Read { path: path.into(), err })?;
                Seccomp::Filter(Cow::Owned(compile(&json, path, caps)?))
            }
        });
    }
    match choice {
        Some(c) => Ok(c),
        None => default_for(caps),
    }
}

/// Docker's default profile for a job that keeps `caps`: as build.rs
/// compiled it, unless the job holds a set of the capabilities the
/// profile looks at that build.rs did not compile for (`--cap-add
/// SYS_PTRACE`, say): then compiled now.
pub fn default_for(caps: &Caps) -> Result<Seccomp, SeccompError> {
    let names = cap_names(caps);
    let held: Vec<&str> = NAMED_CAPS.iter().copied().filter(|c| names.iter().any(|n| n == c)).collect();
    if let Some((_, program)) = PRECOMPILED.iter().find(|(h, _)| *h == held.as_slice()) {
        return Ok(Seccomp::Filter(Cow::Borrowed(program)));
    }
    compile(DOCKER_DEFAULT, Path::new("(built in) docker-default.json"), caps).map(|p| Seccomp::Filter(Cow::Owned(p)))
}

/// `CAP_CHOWN`, ...: how a profile names them.
fn cap_names(caps: &Caps) -> Vec<String> {
    caps.set().iter().map(|c| c.to_string()).collect()
}

/// `json` compiled for this machine and a job that keeps `caps`.
fn compile(json: &str, origin: &Path, caps: &Caps) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let arch = Arch::by_target(std::env::consts::ARCH).ok_or(SeccompError::Arch(std::env::consts::ARCH))?;
    let caps = cap_names(caps);
    let target = Target { arch, caps: &caps, kernel: running_kernel()? };
    let compiled = profile::compile(json, &target).map_err(|err| SeccompError::Profile { path: origin.into(), err })?;
    if !compiled.skipped.is_empty() {
        log::info!(
            "seccomp profile {}: {} has no {} (skipped)",
            origin.display(),
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
pub fn load(seccomp: &Seccomp) -> io::Result<()> {
    match seccomp {
        Seccomp::Unconfined => Ok(()),
        Seccomp::Filter(program) => sys::seccomp_set_filter(program),
    }
}

#[cfg(test)]
mod tests {
    use super::bpf::{self, Insn};
    use super::*;

    fn program(caps: &Caps) -> Vec<Insn> {
        let Ok(Seccomp::Filter(p)) = default_for(caps) else { panic!("no filter") };
        p.iter().map(|i| Insn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
    }

    fn arch() -> &'static Arch {
        Arch::by_target(std::env::consts::ARCH).unwrap()
    }

    /// The default filter's verdict on `name(args)` for a job keeping `caps`.
    fn verdict(caps: &Caps, name: &str, args: [u64; 6]) -> u32 {
        let nr = arch().number(name).unwrap_or_else(|| panic!("no {name}"));
        bpf::run(&program(caps), arch().audit, nr, args)
    }

    fn with(add: &[&str]) -> Caps {
        let add: Vec<String> = add.iter().map(|c| c.to_string()).collect();
        Caps::with_changes(&add, &[]).unwrap()
    }

    const EPERM: u32 = bpf::RET_ERRNO | 1;

    /// The usual jobs (the default set, none, every capability) get a
    /// filter build.rs compiled; another set gets the same profile compiled
    /// on the host, and for the usual sets that is what build.rs made.
    #[test]
    fn usual_capability_sets_have_a_filter_compiled_at_build_time() {
        for caps in [Caps::default_set(), Caps::none(), Caps::all(), with(&["NET_RAW"])] {
            assert!(matches!(default_for(&caps), Ok(Seccomp::Filter(Cow::Borrowed(_)))), "{caps:?}");
            let compiled = compile(DOCKER_DEFAULT, Path::new("-"), &caps).unwrap();
            let Ok(Seccomp::Filter(p)) = default_for(&caps) else { unreachable!() };
            assert_eq!(format!("{compiled:?}"), format!("{p:?}"), "{caps:?}");
        }
        let ptrace = with(&["SYS_PTRACE"]);
        assert!(matches!(default_for(&ptrace), Ok(Seccomp::Filter(Cow::Owned(_)))));
        assert_eq!(verdict(&ptrace, "kcmp", [0; 6]), bpf::RET_ALLOW);
        assert_eq!(verdict(&Caps::default_set(), "kcmp", [0; 6]), EPERM);
    }

    #[test]
    fn the_default_refuses_namespaces_mounts_and_keyrings() {
        for caps in [Caps::default_set(), Caps::none()] {
            for name in
                ["unshare", "setns", "mount", "umount2", "keyctl", "add_key", "request_key", "kexec_load", "bpf"]
            {
                assert_eq!(verdict(&caps, name, [0; 6]), EPERM, "{name} {caps:?}");
            }
            assert_eq!(verdict(&caps, "perf_event_open", [0; 6]), EPERM);
            assert_eq!(verdict(&caps, "io_uring_setup", [0; 6]), EPERM);
            // clone3's flags live in memory a filter cannot read: ENOSYS
            // sends glibc back to clone, whose flags it can.
            assert_eq!(verdict(&caps, "clone3", [0; 6]), bpf::RET_ERRNO | 38);
            let newuser = libc::CLONE_NEWUSER as u64;
            assert_eq!(verdict(&caps, "clone", [newuser | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(verdict(&caps, "clone", [libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0]), EPERM);
            let thread =
                (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
            assert_eq!(verdict(&caps, "clone", [thread, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
            assert_eq!(verdict(&caps, "socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), EPERM);
            assert_eq!(verdict(&caps, "socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]), bpf::RET_ALLOW);
            assert_eq!(verdict(&caps, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
            assert_eq!(verdict(&caps, "personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
            for name in ["read", "openat", "execve", "wait4", "mkdirat", "rt_sigreturn", "exit_group", "ptrace"] {
                assert_eq!(verdict(&caps, name, [0; 6]), bpf::RET_ALLOW, "{name} {caps:?}");
            }
        }
        // Newer than anything docker's profile names (it stops at
        // removexattrat, 466): ENOSYS, so that a program falls back.
        for name in ["open_tree_attr", "file_getattr", "listns"] {
            assert_eq!(verdict(&Caps::default_set(), name, [0; 6]), bpf::RET_ERRNO | 38, "{name}");
        }
        // chroot follows CAP_SYS_CHROOT, as in docker.
        assert_eq!(verdict(&Caps::default_set(), "chroot", [0; 6]), bpf::RET_ALLOW);
        assert_eq!(verdict(&Caps::none(), "chroot", [0; 6]), EPERM);
    }

    /// A job that keeps CAP_SYS_ADMIN (a formula's `sysad`, `--cap-add
    /// ALL`) may do what docker allows it; never keyrings or kexec.
    #[test]
    fn sys_admin_opens_what_docker_opens_for_it() {
        for caps in [Caps::all(), with(&["SYS_ADMIN"])] {
            for name in ["unshare", "setns", "mount", "clone3"] {
                assert_eq!(verdict(&caps, name, [0; 6]), bpf::RET_ALLOW, "{name}");
            }
            assert_eq!(verdict(&caps, "clone", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
            for name in ["keyctl", "add_key", "request_key", "kexec_load"] {
                assert_eq!(verdict(&caps, name, [0; 6]), EPERM, "{name}");
            }
        }
        assert_eq!(verdict(&Caps::all(), "perf_event_open", [0; 6]), bpf::RET_ALLOW);
    }

    /// Only the native ABI: i386 (on x86_64) or arm (on aarch64) calls and
    /// x32 numbers kill the process.
    #[test]
    fn other_abis_are_killed() {
        let prog = program(&Caps::default_set());
        for foreign in [0x4000_0003u32, 0x4000_0028, 0] {
            assert_eq!(bpf::run(&prog, foreign, 0, [0; 6]), bpf::RET_KILL_PROCESS);
        }
        if arch().x32_bit {
            assert_eq!(bpf::run(&prog, arch().audit, syscalls::X32_SYSCALL_BIT, [0; 6]), bpf::RET_KILL_PROCESS);
        }
    }

    #[test]
    fn security_opts() {
        let caps = Caps::default_set();
        assert!(matches!(from_security_opts(&[], &caps), Ok(Seccomp::Filter(Cow::Borrowed(_)))));
        let unconfined = ["seccomp=unconfined".to_string()];
        assert!(matches!(from_security_opts(&unconfined, &caps), Ok(Seccomp::Unconfined)));
        let twice = ["seccomp=unconfined".to_string(), "seccomp=unconfined".to_string()];
        assert!(matches!(from_security_opts(&twice, &caps), Err(SeccompError::Twice)));
        for bad in ["apparmor=unconfined", "seccomp", "seccomp="] {
            let e = from_security_opts(&[bad.to_string()], &caps).unwrap_err();
            assert!(matches!(e, SeccompError::Option(_)), "{bad}: {e}");
        }
        let missing = ["seccomp=/nonexistent/profile.json".to_string()];
        let e = from_security_opts(&missing, &caps).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/profile.json") && e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn the_running_kernel_has_a_version() {
        assert!(matches!(running_kernel(), Ok(Kernel::Running(major, _)) if major >= 5));
    }
}
