//! Bridge slots: how many a bridge has, how the bridges of one network
//! (the hub and its leaves) are named, and the names derived from a slot
//! (its host veth and its files below `slots/`).
//!
//! One configured bridge (the hub, which holds the gateway address) is one
//! L2 domain of up to `1 + MAX_LEAVES` bridges: a Linux bridge takes at
//! most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved), so more jobs than
//! that go on leaf bridges, each linked to the hub by one veth pair. Every
//! job of the domain has the same subnet and gateway and reaches the others
//! and the gateway at L2: the host forwards nothing between bridges.

/// The highest slot number + 1 that may name a file or a veth: a bridge's
/// 1023 ports. Rows and files from before leaves existed may use any of
/// them; the walk hands out only `0..ports_per_bridge()`.
pub const MAX_SLOTS: u16 = 1023;

/// Job ports per bridge of a domain (slots `0..=999`: 3 digits, so that a
/// leaf's veth `{leaf}-{slot}` fits 15 bytes). A leaf uses one more port
/// for its link to the hub; the hub one per leaf: 1000 + 23 = 1023.
pub const PORTS_PER_BRIDGE: u16 = 1000;

/// Leaves a hub may have: its ports beyond `PORTS_PER_BRIDGE`.
pub const MAX_LEAVES: u16 = MAX_SLOTS - PORTS_PER_BRIDGE;

// A leaf holds its jobs and its uplink.
const _: () = assert!(PORTS_PER_BRIDGE < MAX_SLOTS);

/// The suffixes of leaves 1..=MAX_LEAVES: one byte, so a leaf's name is at
/// most `config::MAX_BRIDGE_NAME` + 1 = 11 bytes.
const LEAF_SUFFIXES: &[u8; MAX_LEAVES as usize] = b"abcdefghijklmnopqrstuvw";

/// Test-only: job ports per bridge (1..=1000), so that a test forces leaves
/// with a few jobs. Hidden: nothing but tests has a reason to set it.
pub const PORTS_ENV: &str = "REPEATR_TEST_PORTS_PER_BRIDGE";

/// Job ports per bridge: [`PORTS_PER_BRIDGE`], or fewer if [`PORTS_ENV`]
/// says so (an unparsable or out-of-range value is ignored).
pub fn ports_per_bridge() -> u16 {
    std::env::var(PORTS_ENV)
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|p| (1..=PORTS_PER_BRIDGE).contains(p))
        .unwrap_or(PORTS_PER_BRIDGE)
}

/// The name of bridge `index` of `hub`'s domain: 0 is the hub itself,
/// 1..=MAX_LEAVES its leaves (`repeatr0` → `repeatr0a`, `repeatr0b`, …).
/// `None` past the last leaf.
pub fn domain_bridge(hub: &str, index: u16) -> Option<String> {
    match index {
        0 => Some(hub.to_string()),
        i => LEAF_SUFFIXES.get(usize::from(i - 1)).map(|c| format!("{hub}{}", char::from(*c))),
    }
}

/// Every bridge name `hub`'s domain may use, the hub first.
pub fn domain_bridges(hub: &str) -> Vec<String> {
    (0..=MAX_LEAVES).filter_map(|i| domain_bridge(hub, i)).collect()
}

/// `(hub, index)` if `name` is a leaf's name (a valid hub name + one leaf
/// suffix).
pub fn leaf_of(name: &str) -> Option<(&str, u16)> {
    let (last, hub) = (name.as_bytes().last()?, name.get(..name.len() - 1)?);
    let i = LEAF_SUFFIXES.iter().position(|c| c == last)?;
    crate::config::check_bridge(hub).ok()?;
    Some((hub, u16::try_from(i).ok()? + 1))
}

/// A name that may be a bridge of some domain, hub or leaf (a directory
/// below `slots/`, a lease's `bridge`): `config::check_bridge`'s rule, or
/// a name that passes it followed by a leaf suffix.
pub(crate) fn check_domain_bridge(name: &str) -> Result<(), String> {
    match crate::config::check_bridge(name) {
        Err(_) if leaf_of(name).is_some() => Ok(()),
        r => r,
    }
}

/// The veth pair linking leaf `leaf` to its hub: (the end on the hub, the
/// end on the leaf). Not `{leaf}-{number}`, so never taken for a job's.
pub fn uplink_names(leaf: &str) -> (String, String) {
    (format!("{leaf}-h"), format!("{leaf}-l"))
}

/// The host-side veth name a slot owns.
pub fn iface_name(bridge: &str, slot: u16) -> String {
    format!("{bridge}-{slot}")
}

/// The names of a slot's files in `slots/{bridge}/`.
#[derive(Clone, Debug)]
pub(crate) struct SlotFiles {
    pub lock: String,
    pub json: String,
    pub tmp: String,
}

impl SlotFiles {
    pub(crate) fn new(slot: u16) -> SlotFiles {
        SlotFiles {
            lock: Self::lock_name(slot),
            json: format!("{slot}.json"),
            // Dot-named so that a scan for `{slot}.json` never sees a
            // half-written record.
            tmp: format!(".{slot}.json.tmp"),
        }
    }

    /// The slot lock's name alone, for a judgement that needs no other.
    pub(crate) fn lock_name(slot: u16) -> String {
        format!("{slot}.lock")
    }

    /// The slot a lock file's name names, if it is one.
    pub(crate) fn slot_of_lock(name: &str) -> Option<u16> {
        name.strip_suffix(".lock")?.parse::<u16>().ok().filter(|s| *s < MAX_SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_BRIDGE_NAME;

    #[test]
    fn leaves_are_named_after_their_hub() {
        assert_eq!(domain_bridge("repeatr0", 0).as_deref(), Some("repeatr0"));
        assert_eq!(domain_bridge("repeatr0", 1).as_deref(), Some("repeatr0a"));
        assert_eq!(domain_bridge("repeatr0", MAX_LEAVES).as_deref(), Some("repeatr0w"));
        assert_eq!(domain_bridge("repeatr0", MAX_LEAVES + 1), None);
        let all = domain_bridges("r");
        assert_eq!(all.len(), usize::from(MAX_LEAVES) + 1);
        for (i, name) in all.iter().enumerate().skip(1) {
            assert_eq!(leaf_of(name), Some(("r", u16::try_from(i).unwrap())));
        }
        assert_eq!(leaf_of("r"), None, "a one-byte name has no hub");
        assert_eq!(leaf_of("repeatr0"), None, "'0' is no leaf suffix");
        assert_eq!(leaf_of("bad/a"), None);
    }

    #[test]
    fn every_name_fits_the_kernel_limit() {
        let hub = "h".repeat(MAX_BRIDGE_NAME);
        let leaf = domain_bridge(&hub, MAX_LEAVES).unwrap();
        assert!(crate::network::check_ifname(&leaf).is_ok());
        assert!(crate::network::check_ifname(&iface_name(&leaf, PORTS_PER_BRIDGE - 1)).is_ok());
        assert!(crate::network::check_ifname(&iface_name(&hub, MAX_SLOTS - 1)).is_ok());
        let (h, l) = uplink_names(&leaf);
        assert!(crate::network::check_ifname(&h).is_ok() && crate::network::check_ifname(&l).is_ok());
        assert!(h.parse::<u16>().is_err() && !h.ends_with(|c: char| c.is_ascii_digit()));
    }
}
