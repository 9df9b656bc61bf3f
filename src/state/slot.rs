//! Bridge slots: how many a bridge has, and the names derived from a slot
//! (its host veth and its files below `slots/`).

/// Slots per bridge, 0..=1022: the kernel's BR_MAX_PORTS is 1024 and the
/// numbering stays within the 4 digits that `{bridge}-{slot}` has room for.
pub const MAX_SLOTS: u16 = 1023;

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
            lock: format!("{slot}.lock"),
            json: format!("{slot}.json"),
            // Dot-named so that a scan for `{slot}.json` never sees a
            // half-written record.
            tmp: format!(".{slot}.json.tmp"),
        }
    }
}
