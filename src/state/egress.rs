//! `STATE/egress/<bridge>`: the record that this state dir's NAT for a
//! bridge is up (`network::egress`), so that a run after the first one
//! pays a file read for it instead of an `nft` exec (~5 ms here).
//!
//! Written and removed only under the state lock: of 20 first runs at
//! once, the first to take the lock sets the NAT up and writes the record,
//! and the others find it there once they have the lock.

use std::io::{Read, Write};
use std::path::Path;

use ipnet::Ipv4Net;
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::lock::StateLock;
use super::private::PrivateDir;
use crate::config::check_bridge;

/// The directory of the records, in the state dir.
const EGRESS_DIR: &str = "egress";

/// What the NAT of one bridge was set up for. A record that does not
/// match the bridge as it is (another ifindex: the bridge was deleted and
/// made again; another subnet: the config changed) is set up again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressMark {
    /// The network namespace it was set up in (`network::egress::current_netns`):
    /// a run or `gc` in another one neither trusts nor removes it.
    pub netns: u64,
    pub bridge_index: u32,
    #[serde(with = "super::record::cidr")]
    pub subnet: Ipv4Net,
    /// Whether the set-up turned IPv4 forwarding on (it was off): then
    /// removing the last bridge's NAT turns it off again.
    pub turned_forwarding_on: bool,
    /// The table's layout (`network::egress::TABLE_LAYOUT`); 0 in a record
    /// written before layouts were counted.
    #[serde(default)]
    pub layout: u32,
}

impl EgressMark {
    /// Whether this record is of the NAT that `bridge_index` with `subnet`
    /// needs in the network namespace `netns`, in a table of `layout`.
    pub fn covers(&self, netns: u64, bridge_index: u32, subnet: Ipv4Net, layout: u32) -> bool {
        self.netns == netns && self.bridge_index == bridge_index && self.subnet == subnet && self.layout == layout
    }
}

/// The record of `bridge`, read without the lock (a record is replaced by
/// rename, so a reader sees a whole one or none); `None` if there is none
/// or it does not parse (then it is set up again).
pub fn read_egress_mark(state_dir: &Path, bridge: &str) -> Result<Option<EgressMark>, StateError> {
    let Some(dir) = PrivateDir::open(state_dir, false)? else { return Ok(None) };
    let Some(sub) = dir.subdir(EGRESS_DIR, false)? else { return Ok(None) };
    read(&sub, bridge)
}

fn read(dir: &PrivateDir, bridge: &str) -> Result<Option<EgressMark>, StateError> {
    check_bridge(bridge).map_err(|p| StateError::Request(format!("bridge {bridge:?} {p}")))?;
    let Some(mut file) = dir.open_file(bridge, OFlag::O_RDONLY, "read")? else { return Ok(None) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(StateError::io("read", &dir.join(bridge)))?;
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Under the state lock: gives `f` the record of `bridge` as it is now and
/// stores what `f` returns (`None` removes it). `f` does the host-side
/// work, so no other runner of this state dir does it at the same time.
pub fn update_egress_mark<E: From<StateError>>(
    state_dir: &Path,
    bridge: &str,
    f: impl FnOnce(Option<EgressMark>) -> Result<Option<EgressMark>, E>,
) -> Result<(), E> {
    let dir = PrivateDir::create(state_dir)?;
    let _lock = StateLock::acquire(&dir)?;
    let sub = dir.create_subdir(EGRESS_DIR)?;
    let current = read(&sub, bridge)?;
    let next = f(current.clone())?;
    if next == current {
        return Ok(());
    }
    match next {
        Some(mark) => {
            // Never a bridge name (`~`), so never taken for a record.
            let tmp = format!("{bridge}~");
            let text = serde_json::to_vec(&mark)
                .map_err(|e| StateError::io("encode", &sub.join(bridge))(std::io::Error::other(e)))?;
            let mut file = sub.create_temp(&tmp)?;
            file.write_all(&text).map_err(StateError::io("write", &sub.join(&tmp)))?;
            drop(file);
            sub.rename(&tmp, bridge)?;
        }
        None => sub.remove(bridge)?,
    }
    Ok(())
}

/// The bridges with a record: whose NAT this state dir set up.
pub fn egress_marks(state_dir: &Path) -> Result<Vec<String>, StateError> {
    let Some(dir) = PrivateDir::open(state_dir, false)? else { return Ok(Vec::new()) };
    let Some(sub) = dir.subdir(EGRESS_DIR, false)? else { return Ok(Vec::new()) };
    let mut names: Vec<String> = sub.names()?.into_iter().filter(|n| check_bridge(n).is_ok()).collect();
    names.sort();
    Ok(names)
}
