//! Bridge slots: how many a bridge has, and the names derived from a slot
//! (its host veth and its files below `slots/`).

use std::path::{Path, PathBuf};

/// Slots per bridge, 0..=1022: the kernel's BR_MAX_PORTS is 1024 and the
/// numbering stays within the 4 digits that `{bridge}-{slot}` has room for.
pub const MAX_SLOTS: u16 = 1023;

/// The host-side veth name a slot owns.
pub fn iface_name(bridge: &str, slot: u16) -> String {
    format!("{bridge}-{slot}")
}

/// `slots/{bridge}/{slot}.lock` and its JSON sidecar, relative to the root.
#[derive(Clone, Debug)]
pub(crate) struct SlotPaths {
    pub lock: PathBuf,
    pub json: PathBuf,
    pub tmp: PathBuf,
}

impl SlotPaths {
    pub(crate) fn new(slots_dir: &Path, bridge: &str, slot: u16) -> SlotPaths {
        let dir = slots_dir.join(bridge);
        SlotPaths {
            lock: dir.join(format!("{slot}.lock")),
            json: dir.join(format!("{slot}.json")),
            // Dot-named so that a scan for `{slot}.json` never sees a
            // half-written record.
            tmp: dir.join(format!(".{slot}.json.tmp")),
        }
    }
}
