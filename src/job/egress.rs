//! A bridge's way out (`network.egress = "nat"`), set up by the first run
//! that brings the bridge up: the glue between the state dir's record of
//! it (`state::EgressMark`) and the host-side work (`network::egress`).
//!
//! A later run reads that record and IPv4 forwarding (two small reads) and
//! does nothing else; no run does any per-job firewall work.

use std::path::Path;

use crate::config::{Egress, NetworkConfig};
use crate::error::Error;
use crate::network::egress::{self, Nft};
use crate::state::{EgressMark, read_egress_mark, update_egress_mark};

/// What a run found before it made anything.
pub struct Before {
    netns: u64,
    mark: Option<EgressMark>,
    forwarding: bool,
    /// Found only when the set-up may be needed: then a missing `nft` is
    /// refused before the bridge is made.
    nft: Option<Nft>,
}

/// Before the bridge: `None` without egress. A host without `nft` where the
/// NAT is not yet up is refused here, before anything is made.
pub fn before(state_dir: &Path, c: &NetworkConfig) -> Result<Option<Before>, Error> {
    if c.egress == Egress::None {
        return Ok(None);
    }
    let netns = egress::current_netns().map_err(Error::io("looking up the runner's network namespace"))?;
    let mark = read_egress_mark(state_dir, &c.bridge)?;
    let forwarding = egress::forwarding().unwrap_or(false);
    let nft = if mark.as_ref().is_none_or(|m| m.netns != netns) || !forwarding { Some(Nft::find()?) } else { None };
    Ok(Some(Before { netns, mark, forwarding, nft }))
}

/// Once the bridge is up (ifindex `bridge_index`): its NAT and forwarding,
/// set up under the state lock unless the record says they are. Of runs
/// that race here, the first sets up and the others find its record.
pub fn ensure(state_dir: &Path, c: &NetworkConfig, before: Before, bridge_index: u32) -> Result<(), Error> {
    let netns = before.netns;
    let up = |m: &Option<EgressMark>| {
        m.as_ref().is_some_and(|m| m.covers(netns, bridge_index, c.subnet, egress::TABLE_LAYOUT))
    };
    if before.forwarding && up(&before.mark) {
        return Ok(());
    }
    let nft = match before.nft {
        Some(nft) => nft,
        None => Nft::find()?,
    };
    update_egress_mark(state_dir, &c.bridge, |current| {
        let forwarding = egress::forwarding().unwrap_or(false);
        if forwarding && up(&current) {
            return Ok(current);
        }
        // The table before forwarding: a packet forwarded in between
        // would leave with the job's private address.
        if !up(&current) {
            for chain in egress::bring_up(&nft, &c.bridge, c.subnet)? {
                eprintln!("repeatr: {}", chain.warning(&c.bridge));
            }
        }
        let turned_on = !forwarding;
        if turned_on {
            egress::set_forwarding(true)?;
        }
        log::debug!("NAT for {} ({}) up; forwarding turned on: {turned_on}", c.bridge, c.subnet);
        let was = current.as_ref().is_some_and(|m| m.netns == netns && m.turned_forwarding_on);
        let turned_forwarding_on = turned_on || was;
        let layout = egress::TABLE_LAYOUT;
        Ok::<_, Error>(Some(EgressMark { netns, bridge_index, subnet: c.subnet, turned_forwarding_on, layout }))
    })
}

/// What [`take_down`] did (or, dry, would do) for one bridge.
#[derive(Debug, Default)]
pub struct TakenDown {
    /// The nftables table removed (`ip repeatr-<bridge>`), if there was one.
    pub table: Option<String>,
    /// IPv4 forwarding turned off: this bridge's set-up had turned it on,
    /// and no other bridge of this state dir has NAT left.
    pub forwarding_off: bool,
}

/// The other end of [`ensure`], for `repeatr gc --all` once the bridge has
/// no job: removes the bridge's table and record, and turns forwarding off
/// if this state dir turned it on and no other bridge of it needs it. A
/// bridge with no record has its table removed all the same if `nft` is
/// there (a record lost with a state dir made again); without `nft` and
/// without a record there is nothing of repeatr's to remove.
///
/// A record made in another network namespace (a runner run under `ip
/// netns exec`) is left as it is, and so are this namespace's table and
/// forwarding: that NAT is the other namespace's, where `gc` must run.
pub fn take_down(state_dir: &Path, bridge: &str, dry_run: bool) -> Result<TakenDown, Error> {
    let netns = egress::current_netns().map_err(Error::io("looking up this network namespace"))?;
    let mark = read_egress_mark(state_dir, bridge)?;
    if let Some(m) = mark.as_ref().filter(|m| m.netns != netns) {
        return Err(Error::Network(crate::network::NetworkError::Firewall {
            op: format!("remove the NAT of bridge {bridge}"),
            reason: format!(
                "it was set up in another network namespace (net:[{}]), not this one (net:[{netns}]): run repeatr gc --all there",
                m.netns
            ),
        }));
    }
    let nft = match (&mark, Nft::find()) {
        (_, Ok(nft)) => Some(nft),
        (Some(_), Err(e)) => return Err(e.into()),
        (None, Err(_)) => None,
    };
    let others = crate::state::egress_marks(state_dir)?.into_iter().filter(|b| b != bridge).count();
    if dry_run {
        let table = nft.as_ref().map(|_| egress::table_name(bridge)).filter(|_| mark.is_some());
        let forwarding_off = mark.is_some_and(|m| m.turned_forwarding_on) && others == 0;
        return Ok(TakenDown { table, forwarding_off });
    }
    let mut done = TakenDown::default();
    update_egress_mark(state_dir, bridge, |current| {
        // Made in another namespace since the read above: not ours here.
        if current.as_ref().is_some_and(|m| m.netns != netns) {
            return Ok(current);
        }
        if let Some(nft) = &nft
            && egress::remove(nft, bridge)?
        {
            done.table = Some(egress::table_name(bridge));
        }
        let others = crate::state::egress_marks(state_dir)?.into_iter().filter(|b| b != bridge).count();
        if current.is_some_and(|m| m.turned_forwarding_on) && others == 0 && egress::forwarding().unwrap_or(false) {
            egress::set_forwarding(false)?;
            done.forwarding_off = true;
        }
        Ok::<_, Error>(None)
    })?;
    Ok(done)
}
