//! The launch protocol between runner and child: what travels over the two
//! pipes `spawn` makes, and the exit codes of a launch that never became
//! the job. Both sides (`spawn` in the runner, `init` in the child) import
//! it; it imports neither.

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
}
