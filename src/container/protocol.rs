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

/// The init's last word over the control socket: how the command (pid 2)
/// ended. The init is pid 1 of its namespace and cannot die by a signal it
/// sends itself, so the runner learns a command's killing signal from
/// this, not from the init's own status. Wire format: `x`, one byte of
/// kind (0 exited, 1 killed by a signal), the value as a little-endian i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnded {
    Exited(i32),
    Signaled(i32),
}

impl CommandEnded {
    pub const LEN: usize = 6;

    pub fn encode(self) -> [u8; Self::LEN] {
        let (kind, value) = match self {
            CommandEnded::Exited(c) => (0, c),
            CommandEnded::Signaled(s) => (1, s),
        };
        let v = value.to_le_bytes();
        [b'x', kind, v[0], v[1], v[2], v[3]]
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let [b'x', kind, a, b, c, d] = *bytes.get(..Self::LEN)? else { return None };
        let value = i32::from_le_bytes([a, b, c, d]);
        match kind {
            0 => Some(CommandEnded::Exited(value)),
            1 => Some(CommandEnded::Signaled(value)),
            _ => None,
        }
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
    fn command_ends_round_trip() {
        for end in [CommandEnded::Exited(0), CommandEnded::Exited(255), CommandEnded::Signaled(15)] {
            assert_eq!(CommandEnded::decode(&end.encode()), Some(end));
        }
        assert_eq!(CommandEnded::decode(b"x\x02\0\0\0\0"), None);
        assert_eq!(CommandEnded::decode(b"x"), None);
    }
}
