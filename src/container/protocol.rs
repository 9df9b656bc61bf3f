//! The launch protocol between runner and child: what travels over the
//! report pipe and the control socket `spawn` makes, and the exit codes of
//! a launch that never became the job. Both sides (`spawn` and `supervise`
//! in the runner, `setup` and `init` in the child) import it; it imports
//! none of them.

/// Exit codes of a launch that never became the job (documented in README).
/// 125 is also the code of every other runner error (`crate::error`), like
/// docker and podman: a broken launch is a broken runner, not a broken job.
pub const EXIT_RUNNER_ERROR: i32 = 125;
pub const EXIT_CANNOT_EXEC: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// Why the child did not become the job, as reported over the pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFailure {
    pub code: i32,
    pub message: String,
}

impl LaunchFailure {
    /// Wire format: one byte of exit code, then the UTF-8 message.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.code as u8];
        v.extend_from_slice(self.message.as_bytes());
        v
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&code, msg) = bytes.split_first()?;
        Some(LaunchFailure { code: code as i32, message: String::from_utf8_lossy(msg).into_owned() })
    }
}

/// The runner's go: the job's /etc/hosts and /etc/resolv.conf, which need
/// the leased address. Wire format: `g`, two little-endian u32 lengths,
/// then both texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoMessage {
    pub hosts: String,
    pub resolv_conf: String,
}

impl GoMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![b'g'];
        v.extend_from_slice(&(self.hosts.len() as u32).to_le_bytes());
        v.extend_from_slice(&(self.resolv_conf.len() as u32).to_le_bytes());
        v.extend_from_slice(self.hosts.as_bytes());
        v.extend_from_slice(self.resolv_conf.as_bytes());
        v
    }

    /// The two lengths from the 9-byte header.
    pub fn lengths(header: &[u8; 9]) -> Option<(usize, usize)> {
        let (tag, rest) = header.split_first()?;
        let h = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        let r = u32::from_le_bytes(rest[4..].try_into().ok()?) as usize;
        // /etc files of a few KiB; anything else is not a message of ours.
        (*tag == b'g' && h + r <= 1 << 20).then_some((h, r))
    }
}

/// Tag of the control message that carries the job's pty master (with
/// `-t`): the child opens the pty in the job's own devpts and sends the
/// master over with SCM_RIGHTS, before it waits for the go.
pub const TTY_MASTER: u8 = b't';

/// How the command (pid 2) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnded {
    Exited(i32),
    Signaled(i32),
}

/// The init's last word over the control socket: how the command ended,
/// and the CPU time of every process of the job the init reaped (its own
/// set-up not counted). The init is pid 1 of its namespace and cannot die
/// by a signal it sends itself, so the runner learns a command's killing
/// signal from this, not from the init's own status. Wire format: `x`,
/// one byte of kind (0 exited, 1 killed by a signal), the value as a
/// little-endian i32, user and system CPU time in microseconds as
/// little-endian u64s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWord {
    pub ended: CommandEnded,
    pub user_us: u64,
    pub system_us: u64,
}

impl LastWord {
    pub const LEN: usize = 22;

    pub fn encode(self) -> [u8; Self::LEN] {
        let (kind, value) = match self.ended {
            CommandEnded::Exited(c) => (0, c),
            CommandEnded::Signaled(s) => (1, s),
        };
        let mut out = [0u8; Self::LEN];
        out[0] = b'x';
        out[1] = kind;
        out[2..6].copy_from_slice(&value.to_le_bytes());
        out[6..14].copy_from_slice(&self.user_us.to_le_bytes());
        out[14..22].copy_from_slice(&self.system_us.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..Self::LEN)?;
        let value = i32::from_le_bytes(b[2..6].try_into().ok()?);
        let ended = match (b[0], b[1]) {
            (b'x', 0) => CommandEnded::Exited(value),
            (b'x', 1) => CommandEnded::Signaled(value),
            _ => return None,
        };
        let user_us = u64::from_le_bytes(b[6..14].try_into().ok()?);
        let system_us = u64::from_le_bytes(b[14..22].try_into().ok()?);
        Some(LastWord { ended, user_us, system_us })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_round_trips() {
        let f = LaunchFailure { code: 127, message: "not found".into() };
        assert_eq!(LaunchFailure::decode(&f.encode()), Some(f));
        assert_eq!(LaunchFailure::decode(b""), None);
    }

    #[test]
    fn go_messages_round_trip() {
        let m = GoMessage { hosts: "127.0.0.1 localhost\n".into(), resolv_conf: "nameserver 198.18.0.1\n".into() };
        let bytes = m.encode();
        let header: [u8; 9] = bytes[..9].try_into().unwrap();
        let (h, r) = GoMessage::lengths(&header).unwrap();
        assert_eq!(&bytes[9..9 + h], m.hosts.as_bytes());
        assert_eq!(&bytes[9 + h..9 + h + r], m.resolv_conf.as_bytes());
        assert_eq!(GoMessage::lengths(&[b'x', 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn last_words_round_trip() {
        for ended in [CommandEnded::Exited(0), CommandEnded::Exited(255), CommandEnded::Signaled(15)] {
            let word = LastWord { ended, user_us: 1_234_567, system_us: u64::MAX };
            assert_eq!(LastWord::decode(&word.encode()), Some(word));
        }
        let mut bad = LastWord { ended: CommandEnded::Exited(0), user_us: 0, system_us: 0 }.encode();
        bad[1] = 2;
        assert_eq!(LastWord::decode(&bad), None);
        assert_eq!(LastWord::decode(b"x"), None);
    }
}
