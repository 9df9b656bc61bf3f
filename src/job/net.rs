//! A job's bridge network, from lease to release: the glue between the
//! state store (who holds which address and slot) and the netlink code
//! (bridge, veth). Teardown runs on every path, collects every error, and
//! is also what `Drop` does if the runner unwinds without calling it.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::config::{Config, Egress, NetworkConfig};
use crate::container::Launched;
use crate::error::Error;
use crate::network::port_map::{self, Element};
use crate::network::{Deletion, HostNet, JobSide, LeafSpec, LinkOwner, NetworkError, PendingVeth, VethSpec};
use crate::publish::PublishError;
use crate::state::{Lease, LeaseRecord, LeaseRequest, StateDir, leaf_of, uplink_names};

/// What a bridged job asks of its network beyond an address.
#[derive(Clone, Debug, Default)]
pub struct NetRequest {
    /// `--ip`: this address on the bridge.
    pub ip: Option<Ipv4Addr>,
    /// `--publish`: host ports forwarded to the job.
    pub publish: Vec<crate::publish::Publish>,
    /// The job was named (`--name`): the jobs started after it on its
    /// bridge find it by that name in their `/etc/hosts`.
    pub named: bool,
}

pub struct JobNet {
    state: StateDir,
    config: NetworkConfig,
    host: HostNet,
    /// The host veth's ifindex, once attached.
    veth: Option<u32>,
    /// The map elements of the job's published ports, once added.
    published: Vec<Element>,
    /// `None` once released.
    lease: Option<Lease>,
}

impl JobNet {
    /// Plugs the launched (not yet running) job into the bridge: checks the
    /// config against the host, takes a lease (address + slot), cleans what
    /// dead runners left in the slots it reclaimed, and gives the job its
    /// veth. An error leaves nothing behind but what `Drop` releases.
    ///
    /// The lease (SQLite, under the state lock) and the veth's creation
    /// (netlink) do not depend on each other until the veth gets its name
    /// and address, so a thread takes the lease while this one makes the
    /// veth, and side by side the pair costs the longer one (the lease:
    /// ~2 ms for a lone job here, the veth ~0.3 ms). The thread also makes
    /// the socket in the job's netns for the veth's job side, as it ends.
    ///
    /// `owner`: the state dir's marker for the links (the runner has it
    /// already, for the job's cgroups). `asked`: the job's `--ip`, whether
    /// it was named, and its host ports to forward, recorded with its lease
    /// and added to the bridge's map once the job's veth is up.
    pub fn plug_in(
        (state_dir, owner): (&Path, LinkOwner),
        config_path: Option<&Path>,
        job: &Launched,
        (id, asked): (&str, &NetRequest),
        command: &[String],
    ) -> Result<JobNet, Error> {
        let publish = asked.publish.as_slice();
        let config = Config::load(config_path)?.network;
        if !publish.is_empty() && config.egress == Egress::None {
            return Err(PublishError::NoEgress.into());
        }
        let mut host = HostNet::open(owner)?;
        let routes = host.routes_overlapping(config.subnet)?;
        config.validate(&routes)?;
        log::trace!("config checked against the {} host routes that overlap its subnet", routes.len());
        let req =
            LeaseRequest { ip: asked.ip, named: asked.named, ..LeaseRequest::new(&config, id, &command.join(" ")) };

        let netns = job.netns().map_err(Error::io("opening the job's network namespace"))?;
        let (leased, made) = std::thread::scope(|s| {
            let leasing = std::thread::Builder::new().name("lease".into()).spawn_scoped(s, || {
                let state = StateDir::open(state_dir)?;
                let lease = state.acquire_publishing(&req, publish, |dead| {
                    for e in super::publish::unpublish_dead(dead) {
                        log::warn!("{e}");
                    }
                })?;
                // Last, as the thread ends: this moves it into the job's
                // netns for good. Its error comes after the lease is in
                // `JobNet`, whose drop releases it.
                let job_side = JobSide::from_here(netns.as_fd());
                Ok::<_, Error>((state, lease, job_side))
            });
            let made = make_veth(&mut host, state_dir, &config, netns.as_fd());
            let leased = match leasing {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::io("taking the lease")(std::io::Error::other("thread panicked")))),
                Err(e) => Err(Error::io("starting the lease thread")(e)),
            };
            (leased, made)
        });
        let (state, lease, job_side) = match leased {
            Ok(leased) => leased,
            Err(e) => {
                if let Ok((pending, _)) = made
                    && let Err(d) = host.discard(pending)
                {
                    log::warn!("{d}");
                }
                return Err(e);
            }
        };
        log::debug!("leased {} slot {} on {}", lease.record.ip, lease.record.slot, lease.record.bridge);
        let record = lease.record.clone();
        let mut net = JobNet { state, config, host, veth: None, published: Vec::new(), lease: Some(lease) };
        // From here on, Drop releases the lease whatever fails.
        let (pending, hub) = made?;
        let mut job_side = job_side?;
        let bridge_index = net.lease_bridge(&record.bridge, hub)?;
        let spec = veth_spec(&net.config, &record, bridge_index);
        net.clean_reclaimed_slots();
        net.veth = Some(net.host.finish_pending(pending, &spec, &mut job_side)?.host_index);
        log::debug!("attached {} to {}", spec.host_name, spec.bridge);
        if let Some(lease) = &net.lease
            && !lease.published.is_empty()
        {
            let elements: Vec<Element> = lease.published.iter().map(|p| Element { port: p.port, ip: p.ip }).collect();
            // Kept before the add: the teardown takes them out whatever
            // the add did (a missing element is no error there).
            net.published = elements.clone();
            port_map::publish(&net.config.bridge, &elements)?;
            log::debug!("published {} port(s)", elements.len());
        }
        Ok(net)
    }

    /// The ifindex of the bridge the lease put the job on: the hub
    /// (`hub`), or a leaf of it, made with its uplink if it is not all
    /// there (under the state lock, so that two runners never make one
    /// uplink twice; whoever comes second finds it ready).
    fn lease_bridge(&mut self, name: &str, hub: u32) -> Result<u32, Error> {
        if name == self.config.bridge {
            return Ok(hub);
        }
        let number = match leaf_of(name) {
            Some((of, number)) if of == self.config.bridge => number,
            // Only a damaged database could say so.
            _ => {
                return Err(Error::Network(NetworkError::Unexpected {
                    op: format!("plug the job into bridge {name}"),
                    reason: format!("it is neither {} nor a leaf of it; run `repeatr gc`", self.config.bridge),
                }));
            }
        };
        let leaf = LeafSpec { name: name.to_string(), number, uplink: uplink_names(name), mtu: self.config.mtu };
        if let Some(index) = self.host.leaf_ready(hub, &leaf)? {
            return Ok(index);
        }
        let (state, host) = (&self.state, &mut self.host);
        let index = state.with_lock(|| host.ensure_leaf(hub, &leaf).map_err(Error::from))?;
        log::debug!("leaf {} of {} up", leaf.name, self.config.bridge);
        Ok(index)
    }

    /// Host veths of slots whose dead owners this lease reclaimed: each one
    /// is deleted while we hold that slot's lock, so it cannot be a veth a
    /// new job has just created, and only if it carries this state dir's
    /// marker.
    fn clean_reclaimed_slots(&mut self) {
        let Some(lease) = &self.lease else { return };
        for (bridge, slot) in &lease.reclaimed {
            match self.state.try_lock_slot(bridge, *slot) {
                Ok(Some(lock)) => match self.host.delete_own_link(&lock.iface()) {
                    Ok(Deletion::Kept(other)) => log::warn!("left {} alone: it {other}", lock.iface()),
                    Ok(_) => {}
                    Err(e) => log::warn!("deleting leftover {}: {e}", lock.iface()),
                },
                Ok(None) => {}
                Err(e) => log::warn!("slot {slot} of {bridge}: {e}"),
            }
        }
    }

    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.lease.as_ref().map(|l| l.record.ip)
    }

    /// The live jobs of the domain when this one leased (see `Lease::peers`).
    pub fn peers(&self) -> &str {
        self.lease.as_ref().map_or("", |l| &l.peers)
    }

    /// The network section of the config this job was plugged in with.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Deletes the host veth and releases the lease, in that order (the
    /// slot lock goes last, so nobody reuses the slot while its veth
    /// exists). Every step runs even if an earlier one failed.
    pub fn teardown(mut self) -> Result<(), Error> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<(), Error> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let mut errors: Vec<String> = Vec::new();
        // The job is dead, so its netns is going and the kernel destroys
        // the veth pair with it; we only free the slot's name at once.
        let r = &lease.record;
        // Before the release: until the row goes, no other job can be
        // given these host ports, so this never takes out another's element.
        if !self.published.is_empty() {
            if let Err(e) = port_map::unpublish(&r.bridge, &self.published) {
                errors.push(e.to_string());
            }
            self.published.clear();
        }
        match self.host.retire_link(&r.iface, self.veth.take()) {
            Ok(found) => log::debug!("veth {} retired: {found}", r.iface),
            Err(e) => errors.push(e.to_string()),
        }
        if let Err(e) = self.state.release(lease) {
            errors.push(e.to_string());
        }
        log::debug!("lease released");
        if errors.is_empty() { Ok(()) } else { Err(Error::Teardown(errors.join("; "))) }
    }
}

/// The job's veth as its lease names and addresses it, on the lease's
/// bridge (ifindex `bridge_index`).
fn veth_spec(c: &NetworkConfig, lease: &LeaseRecord, bridge_index: u32) -> VethSpec {
    VethSpec {
        host_name: lease.iface.clone(),
        bridge: lease.bridge.clone(),
        bridge_index,
        ip: lease.ip,
        prefix: c.subnet.prefix_len(),
        gateway: c.gateway,
        mtu: c.mtu,
    }
}

/// The hub bridge (made if missing; creating it races harmlessly with other
/// runners, which see EEXIST and use it) and a pending veth into the job's
/// netns (returned open, with the hub's ifindex): what can be made before
/// the lease is known.
///
/// With egress, the bridge's NAT too (`egress`): a host without `nft` is
/// refused before the bridge is made, and no job is plugged in before the
/// NAT is up.
fn make_veth(
    host: &mut HostNet,
    state_dir: &Path,
    c: &NetworkConfig,
    netns: BorrowedFd<'_>,
) -> Result<(PendingVeth, u32), Error> {
    let egress = super::egress::before(state_dir, c)?;
    let bridge = host.ensure_bridge(&c.bridge, c.gateway, c.subnet, c.mtu)?;
    log::trace!("bridge {} ready", c.bridge);
    if let Some(before) = egress {
        super::egress::ensure(state_dir, c, before, bridge)?;
    }
    Ok((host.create_pending(c.mtu, netns)?, bridge))
}

impl Drop for JobNet {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            log::warn!("{e}");
        }
    }
}
