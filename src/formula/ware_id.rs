//! Ware ids: `PACKTYPE:HASH`. Only the `tar` pack type exists; the hash is a
//! SHA-256 written as 64 lowercase hex digits (one spelling per hash, so ids
//! compare as strings; see docs/ware-hash.md).

use std::fmt;
use std::str::FromStr;

use super::error::WareError;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Digest {
    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Result<Digest, &'static str> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err("has a hash that is not 64 hex digits long");
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or("has a character in its hash that is not 0-9 or a-f")?;
            let lo = hex_value(pair[1]).ok_or("has a character in its hash that is not 0-9 or a-f")?;
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The identity of a ware: its pack type and the hash of its file tree.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WareId {
    pub hash: Digest,
}

impl WareId {
    pub const PACKTYPE: &'static str = "tar";
}

impl fmt::Display for WareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::PACKTYPE, self.hash)
    }
}

impl FromStr for WareId {
    type Err = WareError;

    fn from_str(text: &str) -> Result<WareId, WareError> {
        let bad = |problem| WareError::BadWareId { id: text.escape_debug().to_string(), problem };
        let (packtype, hash) = text.split_once(':').ok_or_else(|| bad("has no pack type"))?;
        if packtype != Self::PACKTYPE {
            return Err(bad("has an unknown pack type"));
        }
        Ok(WareId { hash: Digest::from_hex(hash).map_err(bad)? })
    }
}

impl serde::Serialize for WareId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for WareId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WareId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn round_trips() {
        let id: WareId = format!("tar:{HEX}").parse().unwrap();
        assert_eq!(id.to_string(), format!("tar:{HEX}"));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<WareId>(&json).unwrap(), id);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let cases = [
            (HEX.to_string(), "no pack type"),
            (format!("zip:{HEX}"), "unknown pack type"),
            ("tar:abc".to_string(), "64 hex digits"),
            (format!("tar:{}", HEX.to_uppercase()), "0-9 or a-f"),
            (format!("tar:{HEX}0"), "64 hex digits"),
        ];
        for (text, want) in cases {
            let err = text.parse::<WareId>().unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, WareError::BadWareId { .. }), "{msg}");
            assert!(msg.contains(want), "{text}: {msg}");
            assert!(msg.contains("expected `tar:`"), "{msg}");
        }
    }
}
