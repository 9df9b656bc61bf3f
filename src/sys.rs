//! The narrow syscall boundary: thin wrappers over the Linux calls that
//! neither std nor nix wraps (openat2, clone3, the new mount API, pidfds,
//! close_range) and over those that nix leaves unsafe or that take raw
//! pointers (waitid, prctl, sigaction, execve). `unsafe` lives here; the
//! one wrapper that is itself unsafe, [`clone3`], carries a contract its
//! callers (`container::spawn`, and `job::launch` above it) must keep.
//! Everything above this module works with `OwnedFd`, `io::Result` and
//! plain Rust types, so the launch logic can be read (and unit-tested)
//! without thinking about raw pointers.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Converts a path to a C string; a path with an interior NUL cannot name a file.
pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("path {path:?} contains a NUL byte")))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// How `openat2` may resolve a path (see openat2(2)).
#[derive(Clone, Copy, Debug)]
pub enum Resolve {
    /// As if `dirfd` were `/`: absolute symlinks and `..` are clamped to it.
    /// This is how a path inside an image must be read (CVE-2021-30465).
    InRoot,
    /// The path must stay below `dirfd`: any escape (absolute symlink, `..`
    /// past the top) fails with EXDEV instead of being clamped.
    Beneath,
}

/// `openat2(dirfd, path, flags, mode)` with magic links (/proc/*/fd/*)
/// refused in every case: they are how a hostile image jumps out of a root.
pub fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: Resolve,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: a plain C struct of integers, for which all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 { mode as u64 } else { 0 };
    how.resolve = libc::RESOLVE_NO_MAGICLINKS
        | match resolve {
            Resolve::InRoot => libc::RESOLVE_IN_ROOT,
            Resolve::Beneath => libc::RESOLVE_BENEATH,
        };
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a fully
        // initialised open_how whose size we pass; the kernel copies both.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match check(ret) {
            // SAFETY: a non-negative return of openat2 is a new fd we own.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            // openat2 returns EAGAIN when a concurrent rename races a
            // RESOLVE_IN_ROOT / BENEATH walk; the kernel asks us to retry.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `fsetxattr(fd, name, value, 0)`: the attribute lands on the object the fd
/// refers to, never on whatever a path happens to name by the time we get there.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `value` a valid slice whose length
    // we pass; the kernel only reads both during the call.
    let ret = unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check(ret as libc::c_long).map(drop)
}

/// The `/proc/self/fd/N` path of an fd: how mount(2), which only takes
/// paths, is pointed at an object we resolved safely ourselves.
pub fn fd_path(fd: BorrowedFd<'_>) -> CString {
    // A decimal number never contains a NUL byte.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// A child created by [`clone3`], as seen from the parent.
pub struct Child {
    pub pid: libc::pid_t,
    /// A pidfd: signals sent through it can never reach a recycled PID.
    pub pidfd: OwnedFd,
}

/// fork(2) with namespace flags: `clone3` with no stack, so the child goes on
/// from this same point, as after fork. Returns `None` in the child.
///
/// # Safety
///
/// The process must be single-threaded at the call: the child runs ordinary
/// Rust code (allocation included) before it execs, and it has only the
/// calling thread, so a lock another thread held at the moment of the clone
/// (malloc's, stdio's) would stay locked in the child for ever.
///
/// With `cgroup` (an fd of a cgroup2 directory) the child is born in that
/// cgroup (`CLONE_INTO_CGROUP`, Linux 5.7): no instruction of it ever runs
/// anywhere else.
pub unsafe fn clone3(namespaces: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Option<Child>> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a plain C struct of integers, for which all-zero is valid.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = (namespaces | libc::CLONE_PIDFD) as u64;
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone_args is fully initialised (zeroed, then set) and its
    // size passed; without CLONE_VM/stack the child gets a copy of our
    // memory, exactly as with fork(2). Our caller is single-threaded (the
    // contract above), so no lock in that copy is held by a missing thread.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone3, &mut args as *mut libc::clone_args, std::mem::size_of::<libc::clone_args>())
    };
    let pid = check(ret)? as libc::pid_t;
    if pid == 0 {
        return Ok(None);
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new fd we own in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Some(Child { pid, pidfd }))
}

/// `CLONE_INTO_CGROUP` from linux/sched.h: above 32 bits, so clone3 only
/// (libc declares it as a C int, which cannot hold it).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `BPF_PROG_TYPE_CGROUP_DEVICE` and `BPF_CGROUP_DEVICE` from linux/bpf.h.
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
/// Programs of the cgroups above run too, and each must allow the access.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction, as linux/bpf.h's `struct bpf_insn`: the opcode,
/// then the destination register in the low nibble and the source in the
/// high one, a jump offset and an immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to
/// `expected_attach_type`; the kernel takes a shorter attr as zero-filled.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// BPF_PROG_LOAD of a device program, with the verifier's log in `log`.
fn load_device_program(insns: &[BpfInsn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "device program too long"))?;
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..7].copy_from_slice(b"repeatr");
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, u32::try_from(buf.len()).unwrap_or(u32::MAX), buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    // SAFETY: `load` is a fully initialised bpf_attr head whose size we
    // pass; the instructions, the license and the log buffer (if any) it
    // points at outlive the call, and the kernel writes at most `log_size`
    // bytes into the log.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &load as *const ProgLoadAttr, std::mem::size_of::<ProgLoadAttr>())
    };
    // SAFETY: a non-negative return of BPF_PROG_LOAD is a new fd we own.
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads `insns` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program and attaches it
/// to the cgroup2 directory `cgroup` (BPF_F_ALLOW_MULTI, as runc does). The
/// program stays with the cgroup until the cgroup is removed; the kernel's
/// verifier log comes back in the error when it refuses the program (asked
/// for only then: logging makes the verifier several times slower).
pub fn attach_device_program(cgroup: BorrowedFd<'_>, insns: &[BpfInsn]) -> io::Result<()> {
    let prog = match load_device_program(insns, None) {
        Ok(prog) => prog,
        Err(e) => {
            let mut log = vec![0u8; 4096];
            let again = load_device_program(insns, Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).replace('\n', " ");
            return match again {
                Ok(_) => Err(e),
                Err(e) => Err(io::Error::new(e.kind(), format!("{e}; verifier: {}", text.trim()))),
            };
        }
    };
    let attach = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attach` is a fully initialised bpf_attr for PROG_ATTACH
    // whose size we pass; both fds are open for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    check(ret).map(drop)
}

/// `pidfd_open(pid, 0)`: a pidfd of the process that has `pid` now. The
/// pid may have been reused since the caller learnt it: check the process's
/// start time ([`process_start_time`]) *after* this call, and only then
/// trust the fd; from there on it names that one process whatever happens
/// to the number.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain integers; no flags.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a new fd we own (pidfds are O_CLOEXEC).
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process behind `pidfd`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integers; a null siginfo means "as kill(2) would".
    let ret = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    check(ret).map(drop)
}

/// User and system CPU time, in microseconds, of every child this process
/// has reaped (and of theirs): `getrusage(RUSAGE_CHILDREN)`.
pub fn children_cpu_us() -> (u64, u64) {
    // SAFETY: a plain C struct of integers, for which all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    (us(usage.ru_utime), us(usage.ru_stime))
}

/// What [`waitid_pidfd`] says of a reaped child.
#[derive(Clone, Copy, Debug)]
pub struct Reaped {
    /// `si_code`: `CLD_EXITED`, `CLD_KILLED`, ...
    pub code: libc::c_int,
    /// `si_status`: the exit code, or the signal.
    pub status: libc::c_int,
    /// CPU time of the child and of every descendant it reaped.
    pub user: std::time::Duration,
    pub system: std::time::Duration,
}

/// `waitid(P_PIDFD, pidfd, WEXITED)` with the kernel's rusage (the raw
/// syscall's fifth argument, which glibc's waitid does not pass): reaps
/// the child behind `pidfd`.
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Reaped> {
    // SAFETY: plain C structs of integers, for which all-zero is valid.
    let (mut info, mut usage): (libc::siginfo_t, libc::rusage) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: `info` and `usage` are valid, writable structs; P_PIDFD takes
    // the fd as the id. WEXITED reaps the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            libc::P_PIDFD,
            pidfd.as_raw_fd(),
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED,
            &mut usage as *mut libc::rusage,
        )
    };
    check(ret)?;
    // SAFETY: waitid filled a CLD_* record, for which si_status is valid.
    let status = unsafe { info.si_status() };
    let time = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(Reaped { code: info.si_code, status, user: time(usage.ru_utime), system: time(usage.ru_stime) })
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: no exec from here on can raise privileges.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret as libc::c_long).map(drop)
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: the kernel sends `sig` when the parent dies.
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
    check(ret as libc::c_long).map(drop)
}

/// Every signal's disposition back to SIG_DFL (SIGKILL and SIGSTOP have
/// none to reset), the real-time ones included.
pub fn default_signal_dispositions() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in a handler.
        unsafe { sigaction(sig, &dfl) }.map_err(io::Error::from)?;
    }
    // Real-time signals are not in nix's Signal enum; reset them by number.
    for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: as above; failures for glibc-reserved numbers are harmless.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    Ok(())
}

/// `mallopt(M_ARENA_MAX, n)` where the C library is glibc (elsewhere there
/// is no such knob, and nothing to do). It only shapes arenas made after it.
pub fn malloc_arena_max(n: libc::c_int) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers; glibc serialises it internally.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = n;
}

/// `malloc_trim(0)` where the C library is glibc (elsewhere, nothing to
/// do): gives the heap's free pages back to the kernel.
pub fn malloc_trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes an integer; glibc locks its arenas itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One `getdents64` call on the open directory `dir`, into `buf`: how many
/// bytes of `linux_dirent64` records it wrote (0 at the directory's end).
/// Read them with [`dirents`].
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // outlives the call; `dir` is an open fd for the call.
    let ret = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    check(ret).map(|n| n as usize)
}

/// The `(d_type, name)` of each `linux_dirent64` record in `buf`, as
/// [`getdents64`] filled it. A record that does not parse ends the list.
pub fn dirents(buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        // d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1), the name
        // and its NUL, padded to 8.
        let rec = buf.get(off..)?;
        let reclen = usize::from(u16::from_ne_bytes([*rec.get(16)?, *rec.get(17)?]));
        let body = rec.get(19..reclen)?;
        let name = &body[..body.iter().position(|&b| b == 0)?];
        off += reclen;
        Some((rec[18], name))
    })
}

/// Moves the read position of the open directory `dir` to `pos`, a value
/// of the filesystem's own: see `cgroup::gc` for what kernfs makes of it.
pub fn seek_dir(dir: BorrowedFd<'_>, pos: i64) -> io::Result<()> {
    // SAFETY: plain integers; `dir` is an open fd for the call.
    let ret = unsafe { libc::lseek(dir.as_raw_fd(), pos, libc::SEEK_SET) };
    check(ret as libc::c_long).map(drop)
}

/// Marks every fd from `first` up close-on-exec, so that nothing the runner
/// inherited or opened reaches the job (runc CVE-2024-21626).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: plain integers.
    let ret = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    check(ret as libc::c_long).map(drop)
}

/// Closes every fd from 3 up except those in `keep`: in the job's child,
/// so that an fd the runner's caller left open (marked close-on-exec, but
/// open until the exec) cannot be reached through `/proc/self/fd/N` by
/// anything the child does with paths from the image.
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&fd| u32::try_from(fd).ok()).filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > first {
            let last = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: plain integers; every fd in the range is one this
            // process does not need (the caller lists those it does).
            let ret = unsafe { libc::close_range(first, last, 0) };
            check(ret as libc::c_long)?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// Joins a new, anonymous session keyring (`keyctl(2)`
/// KEYCTL_JOIN_SESSION_KEYRING with no name), as runc does for every
/// container: the job no longer possesses the runner's session keyring,
/// whose keys a possessor may read whatever its uid.
pub fn join_new_session_keyring() -> io::Result<()> {
    // SAFETY: integer arguments and a null name, which asks the kernel for
    // a new anonymous keyring.
    let ret =
        unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<libc::c_char>()) };
    check(ret).map(drop)
}

/// `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` on an fd: a detached copy of
/// the mount tree at `fd`, ready to get attributes and be moved into place.
pub fn clone_tree(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let empty = c"";
    // SAFETY: `empty` is a valid C string; flags are constants.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC as libc::c_uint
                | libc::AT_EMPTY_PATH as libc::c_uint
                | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    // SAFETY: a non-negative return is a new fd we own.
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sets mount attributes (`MOUNT_ATTR_*`) on the whole tree at `fd`. Unlike
/// a remount, this reaches every submount too, so a read-only bind of a tree
/// holding other mounts is read-only all the way down.
pub fn set_mount_attrs(fd: BorrowedFd<'_>, attrs: u64) -> io::Result<()> {
    // SAFETY: a plain C struct of integers, for which all-zero is valid.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = attrs;
    let empty = c"";
    // SAFETY: `attr` is initialised and its size passed; `empty` is valid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check(ret).map(drop)
}

/// A detached, recursive copy of the mount tree at `fd` with `attrs` set on
/// every mount in it (so read-only reaches submounts too, unlike a remount).
pub fn detached_copy(fd: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
    let tree = clone_tree(fd)?;
    set_mount_attrs(tree.as_fd(), attrs)?;
    Ok(tree)
}

/// Attaches the detached mount `tree` on top of the object `target` refers to.
pub fn move_mount_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both paths are the valid empty C string; fds are borrowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(ret).map(drop)
}

/// `pivot_root(".", ".")`: the trick from runc that avoids a temporary
/// put_old directory; the old root ends up stacked on the new one.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: valid C strings.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(ret).map(drop)
}

/// Reads this boot's id: leases recorded under another boot id are stale.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?.trim().to_string())
}

/// Start time of a process in clock ticks since boot (field 22 of
/// /proc/PID/stat): with the pid it names one process for the whole boot.
pub fn process_start_time(pid: libc::pid_t) -> io::Result<u64> {
    process_stat(pid).map(|s| s.start_time)
}

/// What /proc/PID/stat says of a process that [`process_stat`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `T` (stopped), `t` (stopped by a tracer), `Z`, ...
    pub state: char,
    /// Field 9: the kernel's PF_* flags.
    pub flags: u64,
    /// Field 22, as [`process_start_time`].
    pub start_time: u64,
}

impl ProcStat {
    /// PF_EXITING (include/linux/sched.h): set at the start of do_exit,
    /// before the task drops its namespaces.
    const PF_EXITING: u64 = 0x4;

    /// Dying or dead: exiting, a zombie, or being reaped.
    pub fn is_exiting(&self) -> bool {
        matches!(self.state, 'Z' | 'X') || self.flags & Self::PF_EXITING != 0
    }
}

/// Fields 3, 9 and 22 of /proc/PID/stat.
pub fn process_stat(pid: libc::pid_t) -> io::Result<ProcStat> {
    use std::io::Read;
    // One read into a buffer that holds the whole line (52 numbers and a
    // 16-byte name), where `read_to_string` probes in small steps: this is
    // on every job's start path.
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat"))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let stat = String::from_utf8_lossy(&buf[..len]);
    parse_stat(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("malformed /proc/{pid}/stat")))
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it are counted from the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state: ppid, pgrp, session, tty_nr, tpgid, then flags.
    let flags = fields.nth(5)?.parse().ok()?;
    let start_time = fields.nth(12)?.parse().ok()?;
    Some(ProcStat { state, flags, start_time })
}

/// `_exit(2)`: in a forked child, leave without running atexit handlers or
/// flushing stdio buffers that belong to the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Converts strings to the C strings execve takes for argv and envp.
pub fn cstrings<I, S>(items: I) -> io::Result<Vec<CString>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    items
        .into_iter()
        .map(|s| {
            CString::new(s.as_ref().to_vec())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
        })
        .collect()
}

/// `execve` that returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: both arrays are NULL-terminated and point into CStrings that
    // outlive the call; execve only returns on error.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`: from here on every syscall
/// of this task and of everything it execs or forks runs through `filter`.
/// The kernel checks the program and refuses a bad one (EINVAL).
pub fn seccomp_set_filter(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let prog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `prog` points at `len` initialised instructions that outlive
    // the call; the kernel copies the program and never writes through the
    // pointer (the field is `*mut` in the C declaration only).
    let ret =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog) };
    check(ret).map(drop)
}

/// fork(2). Returns the child's pid in the parent, `None` in the child.
///
/// # Safety
///
/// As for [`clone3`]: the process must be single-threaded at the call.
pub unsafe fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: our caller is single-threaded (this function's contract), so
    // the child's copy of memory holds no lock of a missing thread.
    let ret = unsafe { libc::fork() };
    Ok(match check(ret as libc::c_long)? {
        0 => None,
        pid => Some(pid as libc::pid_t),
    })
}

/// kill(2) by number: real-time signals too, and `pid < 0` for a group.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integers.
    let ret = unsafe { libc::kill(pid, sig) };
    check(ret as libc::c_long).map(drop)
}

/// Blocks every signal that can be blocked, for this thread.
pub fn block_all_signals() -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None).map_err(io::Error::from)
}

/// Waits for any signal (all of them blocked by the caller, real-time ones
/// included) and returns its number.
pub fn wait_any_signal() -> io::Result<libc::c_int> {
    // SAFETY: a plain C struct, for which all-zero is valid, filled by
    // sigfillset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; sigfillset only writes it.
    unsafe { libc::sigfillset(&mut set) };
    // SAFETY: `set` is initialised; a null siginfo is allowed.
    let ret = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
    check(ret as libc::c_long).map(|s| s as libc::c_int)
}

/// `prctl(PR_SET_DUMPABLE, 0)`: /proc/PID of this process becomes root's
/// and ptrace-style access to it (mem, exe, fd, environ) needs
/// CAP_SYS_PTRACE. An exec of an ordinary binary makes the new program
/// dumpable again.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    check(ret as libc::c_long).map(drop)
}

/// `ioctl(fd, TIOCSCTTY, 0)`: the terminal `fd` becomes the controlling
/// terminal of the calling session leader.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    check(ret as libc::c_long).map(drop)
}

/// A terminal's window size (TIOCGWINSZ).
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    // SAFETY: a plain C struct of integers, for which all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, writable `ws`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    check(ret as libc::c_long).map(|_| ws)
}

/// Sets a terminal's window size (TIOCSWINSZ); the kernel sends SIGWINCH
/// to its foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from the valid `ws`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const libc::winsize) };
    check(ret as libc::c_long).map(drop)
}

/// Sends one byte `tag` with `fd` attached (SCM_RIGHTS) over a Unix socket.
pub fn send_fd(sock: BorrowedFd<'_>, tag: u8, fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(std::slice::from_ref(&tag))];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&raw)], MsgFlags::empty(), None)
        .map(drop)
        .map_err(io::Error::from)
}

/// Receives what [`send_fd`] sent: the tag and the fd, if one came; `None`
/// at EOF (the peer closed its end).
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<(u8, Option<OwnedFd>)>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut tag = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut tag)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    let mut fd = None;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed `raw` as a new fd of ours;
                // nothing else owns it. Extra fds (none are sent) are closed.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    Ok(Some((tag[0], fd)))
}

/// `waitpid(-1, WNOHANG)`: reaps one exited child, if any, and returns its
/// pid and whether it exited (`Ok(code)`) or was killed (`Err(signal)`).
/// `None`: no child has exited (or there is none). By number, real-time
/// signals too (nix's `WaitStatus` refuses those).
#[allow(clippy::type_complexity)]
pub fn reap_one() -> Option<(libc::pid_t, Result<i32, i32>)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if pid <= 0 {
            return None;
        }
        if libc::WIFEXITED(status) {
            return Some((pid, Ok(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Some((pid, Err(libc::WTERMSIG(status))));
        }
        // Stopped or continued: not reported without WUNTRACED/WCONTINUED.
    }
}

/// A new pseudo-terminal from the devpts behind `ptmx` (an open /dev/ptmx):
/// unlocked (TIOCSPTLCK 0), and its slave opened straight from the master
/// (TIOCGPTPEER), with no path lookup in /dev/pts that a job could race.
/// Both close-on-exec, neither the caller's controlling terminal.
pub fn open_pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid `unlock`.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock as *const libc::c_int) };
    check(ret as libc::c_long)?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new fd.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    check(fd as libc::c_long)?;
    // SAFETY: the kernel just installed `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unmaps (MADV_DONTNEED) this process's resident pages of its own
/// executable's read-only, never-written segments: the code and the
/// read-only data before it. They stay in the page cache, shared by every
/// process running the binary, and fault back in (from that cache, with
/// the same bytes) when touched again. Segments that can hold written
/// pages (RELRO after relocation, data) are never touched: those are
/// writable, and only the non-writable PT_LOAD at file offset 0 and the
/// executable one are taken.
pub fn drop_own_code_pages() -> io::Result<()> {
    // The executable's program headers, from the kernel's auxiliary vector
    // rather than /proc/self/maps and /proc/self/exe: reading those two
    // was most of this call's cost, paid twice per job (runner and init).
    // SAFETY: getauxval only reads the auxiliary vector.
    let (at, count, page) =
        unsafe { (libc::getauxval(libc::AT_PHDR), libc::getauxval(libc::AT_PHNUM), libc::getauxval(libc::AT_PAGESZ)) };
    let page = page as usize;
    if at == 0 || count == 0 || !page.is_power_of_two() {
        return Ok(());
    }
    // SAFETY: AT_PHDR is the address of the running executable's program
    // headers, AT_PHNUM of them, which the kernel mapped (inside the first
    // PT_LOAD) for the life of the process and nothing writes.
    let headers = unsafe { std::slice::from_raw_parts(at as *const libc::Elf64_Phdr, count as usize) };
    // Where the executable was loaded: PT_PHDR says where its headers are
    // in its own addresses.
    let Some(phdr) = headers.iter().find(|h| h.p_type == libc::PT_PHDR) else { return Ok(()) };
    let bias = (at as usize).wrapping_sub(phdr.p_vaddr as usize);
    for h in headers.iter().filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0) {
        let code = h.p_flags & libc::PF_X != 0;
        let headers_and_rodata = h.p_offset == 0;
        if !(code || headers_and_rodata) {
            continue;
        }
        let start = bias.wrapping_add(h.p_vaddr as usize) & !(page - 1);
        let end = bias.wrapping_add((h.p_vaddr + h.p_memsz) as usize).next_multiple_of(page);
        // SAFETY: the range is a private, read-only mapping of our own
        // executable that nothing ever wrote (code, and the ELF headers
        // and read-only data at offset 0, which a static-pie's relocation
        // reads but never writes; a writable segment, RELRO's included, is
        // never taken): DONTNEED drops only page table entries, and the
        // next access maps the same file bytes again. No Rust object lives
        // in it.
        let ret = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        check(ret as libc::c_long)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages of this test binary's code mapping that are mapped
    /// (/proc/self/pagemap's present bit) fall to the few that the count
    /// itself faults back in (64 KiB around each, the kernel's fault-around).
    /// Counted in a run of this test binary that runs this test alone: the
    /// other tests' threads would fault code back in between the drop and
    /// the count (seen: 1354 of 2606 pages mapped again).
    #[test]
    fn own_code_pages_are_dropped() {
        const ALONE: &str = "REPEATR_TEST_CODE_PAGES_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["sys::tests::own_code_pages_are_dropped", "--exact", "--test-threads=1", "--nocapture"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the test did not run alone: {text}");
            return;
        }
        use std::os::unix::fs::FileExt;
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (start, end) = maps
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[1].contains('x') && Some(f[5]) == exe.to_str())
            .and_then(|f| f[0].split_once('-').map(|(a, b)| (a.to_string(), b.to_string())))
            .map(|(a, b)| (usize::from_str_radix(&a, 16).unwrap(), usize::from_str_radix(&b, 16).unwrap()))
            .expect("the code mapping");
        let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut entries = vec![0u8; (end - start) / 4096 * 8];
        let mut present = || {
            pagemap.read_exact_at(&mut entries, (start / 4096 * 8) as u64).unwrap();
            entries.chunks(8).filter(|e| e[7] & 0x80 != 0).count()
        };
        let before = present();
        drop_own_code_pages().unwrap();
        let after = present();
        assert!(before > 100, "the test's code is mapped: {before} pages");
        assert!(after * 2 < before, "code pages mapped: {before} before, {after} after");
    }

    /// The records of a real directory, then a cut and a zero-length one.
    #[test]
    fn dirents_reads_each_record_and_stops_at_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "bb", "a-longer-name-than-eight"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("file"), "").unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = getdents64(d.as_fd(), &mut buf).unwrap();
        let mut got: Vec<(u8, String)> =
            dirents(&buf[..n]).map(|(t, name)| (t, String::from_utf8_lossy(name).into_owned())).collect();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        let dir_t = libc::DT_DIR;
        let want = [(dir_t, "."), (dir_t, ".."), (dir_t, "a"), (dir_t, "a-longer-name-than-eight"), (dir_t, "bb")];
        let want: Vec<(u8, String)> = want.iter().map(|(t, n)| (*t, n.to_string())).collect();
        assert_eq!(got.iter().filter(|(_, n)| n != "file").cloned().collect::<Vec<_>>(), want);
        assert!(got.contains(&(libc::DT_REG, "file".to_string())));
        assert_eq!(getdents64(d.as_fd(), &mut buf).unwrap(), 0, "the end");

        // A record cut short, then one whose length is zero, end the walk.
        let first = usize::from(u16::from_ne_bytes([buf[16], buf[17]]));
        assert_eq!(dirents(&buf[..first - 1]).count(), 0);
        let mut zero = buf[..n].to_vec();
        zero[first + 16] = 0;
        zero[first + 17] = 0;
        assert_eq!(dirents(&zero).count(), 1);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "42 (a) b) (c) T 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 183280 1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(ProcStat { state: 'T', flags: 4194560, start_time: 183280 }));
        assert_eq!(parse_stat("42 (x) S 1"), None);
        let me = process_stat(std::process::id() as libc::pid_t).unwrap();
        assert_eq!(me.start_time, process_start_time(std::process::id() as libc::pid_t).unwrap());
        assert!(matches!(me.state, 'R' | 'S'), "{me:?}");
    }
}
