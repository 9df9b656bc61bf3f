//! The last steps before exec: who the job runs as and what it may do.

use std::collections::HashSet;
use std::io;

use caps::{CapSet, Capability};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use super::spec::{Caps, User};
use crate::sys;

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Shrinks the bounding set first (it needs CAP_SETPCAP, which a later
/// setuid to a non-root user would take away), then switches identity, then
/// sets the remaining sets for what is left.
pub fn drop_privileges(user: User, policy: &Caps) -> io::Result<()> {
    let kept: &HashSet<Capability> = policy.set();
    for cap in caps::all() {
        if !kept.contains(&cap) {
            // EINVAL: the running kernel does not know this capability.
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                Err(e) if caps::has_cap(None, CapSet::Bounding, cap).ok() == Some(false) => {
                    log::debug!("bounding drop of {cap}: {e}")
                }
                Err(e) => return Err(caps_err(e)),
            }
        }
    }
    // No supplementary groups: the runner's own must not leak in.
    nix::unistd::setgroups(&[]).map_err(io::Error::from)?;
    let gid = nix::unistd::Gid::from_raw(user.gid);
    let uid = nix::unistd::Uid::from_raw(user.uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(io::Error::from)?;
    nix::unistd::setresuid(uid, uid, uid).map_err(io::Error::from)?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err)?;
    if user.uid == 0 {
        // Effective must shrink before permitted: it may never exceed it.
        caps::set(None, CapSet::Effective, kept).map_err(caps_err)?;
        caps::set(None, CapSet::Permitted, kept).map_err(caps_err)?;
    }
    // The kernel already emptied permitted/effective on a setuid away from
    // root (no SECBIT_KEEP_CAPS): a non-root job has no capabilities.
    Ok(())
}

/// PR_SET_NO_NEW_PRIVS: setuid binaries and file capabilities in the image
/// cannot raise the job above what it was given.
pub fn no_new_privs() -> io::Result<()> {
    sys::set_no_new_privs()
}

/// The job dies with its runner: SIGKILL from the kernel when the runner
/// goes, however it goes. A setuid clears this setting, so it is set again
/// after the identity switch.
pub fn die_with_parent() -> io::Result<()> {
    sys::set_parent_death_signal(libc::SIGKILL)
}

/// Unblocks every signal: the job starts with an empty mask, as any
/// program expects (the child has had them all blocked since the clone).
pub fn unblock_signals() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// A session keyring of the job's own, joined while still root (so the
/// key quota charged is root's, not that of a `--user` shared by many
/// jobs): the runner's session keyring, and so any key the host put in it,
/// is out of the job's reach. The user keyring (per uid) is shared by
/// design; the seccomp profile keeps the job away from keyctl altogether.
pub fn new_session_keyring() -> io::Result<()> {
    sys::join_new_session_keyring()
}
