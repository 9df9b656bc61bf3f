//! Taking, giving back, listing and reclaiming leases.
//!
//! Every write happens under the state lock and inside one BEGIN IMMEDIATE
//! transaction, so two runners can never pick the same address or slot, nor
//! reclaim the same stale lease twice.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::dir::{StateDir, check_slot};
use super::error::StateError;
use super::liveness::{LockSnapshot, Verdict};
use super::lock::{SlotLock, StateLock, try_lock_slot_file};
use super::ports::{self, PublishedPort};
use super::private::Subdirs;
use super::record::LeaseRecord;
use super::slot::{MAX_LEAVES, PORTS_PER_BRIDGE, SlotFiles, domain_bridge, domain_bridges, ports_per_bridge};
use super::{alloc, generation, liveness, schema, sidecar};

/// Per bridge, the slots whose lock a reclaim found free.
type FreeSlots = HashMap<String, HashSet<u16>>;
use crate::civil_time;
use crate::config::{NetworkConfig, check_gateway, check_subnet, reserved_role};
use crate::publish::Publish;
use crate::sys;

/// What a runner asks for.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub job: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// `--ip`: this address or an error, never another one.
    pub ip: Option<Ipv4Addr>,
    /// For display (`repeatr leases`); not interpreted.
    pub command: String,
    /// The user named the job (`--name`): it goes into the `/etc/hosts` of
    /// the jobs leased after it on its bridge (see [`Lease::peers`]).
    pub named: bool,
    /// The runner's pid: the process that holds the slot lock.
    pub pid: u32,
    /// Job slots per bridge of the domain: [`PORTS_PER_BRIDGE`] but in
    /// tests (see [`ports_per_bridge`]).
    pub slots_per_bridge: u16,
}

/// A lease held by this process. Dropping it without [`StateDir::release`]
/// frees the slot lock, which makes the row stale: the next allocation
/// reclaims it, exactly as after a crash.
#[derive(Debug)]
pub struct Lease {
    pub record: LeaseRecord,
    /// Slots (bridge, slot) of this lease's domain (the hub and its leaves)
    /// whose dead owners' leases this allocation reclaimed. A host veth
    /// `{bridge}-{slot}` may be left over for each: delete it only while
    /// holding [`StateDir::try_lock_slot`] for it.
    pub reclaimed: Vec<(String, u16)>,
    /// The other live named jobs (`--name`) of this domain as /etc/hosts
    /// lines (`ip\tjob\n` each, in slot order), as the lease transaction saw them: a snapshot
    /// for the job's /etc/hosts, so jobs started before this one resolve by
    /// name. Jobs started later, and addresses that change, are not in it.
    /// Text, not a list: next to a thousand jobs, a string and a parse per
    /// peer were 1.5% of all CPU in a burst.
    pub peers: String,
    /// The host ports this lease publishes (`--publish`), recorded with it.
    pub published: Vec<PublishedPort>,
    /// Held, never read: dropping it frees the slot.
    _slot_lock: SlotLock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Running,
    Stale,
}

/// A lease as `repeatr leases` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    #[serde(flatten)]
    pub lease: LeaseRecord,
    pub state: LeaseState,
    /// The host ports the job publishes (`--publish`); left out of the JSON
    /// when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<Publish>,
}

/// What `gc` reclaimed (or, with `dry_run`, would reclaim). For each lease,
/// `bridge`/`slot`/`iface` name a host veth that may be left over: delete it
/// while holding [`StateDir::try_lock_slot`] for that slot.
#[derive(Clone, Debug, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub reclaimed: Vec<LeaseRecord>,
    /// Sidecars of dead jobs removed: those of the reclaimed leases and any
    /// left without a row (a runner killed between writing its sidecar and
    /// committing).
    pub sidecars_removed: Vec<PathBuf>,
    /// Published ports of dead jobs whose rows were deleted (not in a dry run).
    pub ports_unpublished: Vec<PublishedPort>,
}

impl LeaseRequest {
    /// A request for this process (the runner) on the configured network,
    /// for a named job; set `ip` for `--ip`, `named` false for a job without
    /// `--name`.
    pub fn new(net: &NetworkConfig, job: &str, command: &str) -> LeaseRequest {
        LeaseRequest {
            job: job.to_string(),
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            ip: None,
            command: command.to_string(),
            named: true,
            pid: std::process::id(),
            slots_per_bridge: ports_per_bridge(),
        }
    }
}

const COLUMNS: &str =
    "job, bridge, subnet, ip, gateway, slot, iface, pid, start_time, boot_id, command, started_at, named";

impl StateDir {
    /// Leases an address and a bridge slot for `req.job`. The returned
    /// [`Lease`] holds the slot lock; keep it for the job's whole life.
    ///
    /// The rows are trusted while the database is the one the runners last
    /// wrote (`generation`): then an allocation reads only the rows it
    /// walks past (`alloc`), never every lease, and probes the slot lock of
    /// those alone. A dead runner's lease is reclaimed when the walk
    /// reaches its address or its slot, or by `gc`. Otherwise every row of
    /// the bridge is judged and every sidecar compared first, as `gc` does.
    pub fn acquire(&self, req: &LeaseRequest) -> Result<Lease, StateError> {
        self.acquire_publishing(req, &[], |_| {})
    }

    /// [`acquire`](Self::acquire), also publishing `ports` for the job: a
    /// host port a live job publishes is refused with its name. The rows of
    /// dead jobs' published ports are deleted in the same transaction and,
    /// once it is committed and while the state lock is still held, given
    /// to `unpublish` (which removes their map elements).
    pub fn acquire_publishing(
        &self,
        req: &LeaseRequest,
        ports: &[Publish],
        unpublish: impl FnOnce(&[PublishedPort]),
    ) -> Result<Lease, StateError> {
        check_request(req)?;
        let _lock = StateLock::acquire(&self.dir)?;
        let mut conn = self.conn()?;
        let tx = schema::write_tx(&mut conn, &self.db)?;
        let mut bridges = self.bridges();
        let trusted = generation::in_file(&self.dir) == Some(generation::in_db(&tx, &self.db)?);
        let domain = domain_bridges(&req.bridge);
        let mut reclaimed = Vec::new();
        if !trusted {
            let (mut rows, mut snapshot) = load_for_sweep(&tx, &self.db)?;
            let mut free = FreeSlots::new();
            reclaimed = self.reclaim(&tx, &mut rows, Some(&domain), &mut bridges, &mut snapshot, &mut free)?;
            // Judged before the sidecars are: a dead holder's row goes, so
            // that its sidecar counts as dead too.
            if let Some(holder) = rows.iter().find(|r| r.job == req.job) {
                if self.is_live(holder, &mut bridges)? {
                    return Err(StateError::DuplicateJob { job: req.job.clone(), ip: holder.ip, pid: holder.pid });
                }
                self.forget(&tx, holder)?;
            }
            rows.retain(|r| r.job != req.job);
            self.check_sidecars(&tx, &rows, &mut bridges, &free)?;
        } else if let Some(holder) = row_where(&tx, "job = ?1", params![req.job], &self.db)? {
            if self.is_live(&holder, &mut bridges)? {
                return Err(StateError::DuplicateJob { job: req.job.clone(), ip: holder.ip, pid: holder.pid });
            }
            // A dead job of the same id.
            self.forget(&tx, &holder)?;
            reclaimed.push(holder);
        }

        let ip = match req.ip {
            Some(ip) => self.take_static_ip(&tx, req, ip, &mut bridges, &mut reclaimed)?,
            None => self.take_next_ip(&tx, req, &mut bridges, &mut reclaimed)?,
        };
        let (slot_lock, span) = self.take_next_slot(&tx, req, &mut bridges, &mut reclaimed)?;
        let bridge = slot_lock.bridge().to_string();
        if trusted {
            // These rows were what the runners last wrote: the sidecars of
            // the leases just reclaimed are theirs, unless their slot is
            // held again (the one just taken is rewritten below).
            for dead in &reclaimed {
                remove_dead_sidecar(dead, &mut bridges)?;
            }
        }
        let alive = |job: &str| match row_where(&tx, "job = ?1", params![job], &self.db)? {
            Some(r) => self.is_live(&r, &mut bridges),
            None => Ok(false),
        };
        let mut stale_ports = ports::drop_stale(&tx, &self.db, alive)?;
        // Every publisher left is live: drop_stale judged them all.
        let holder = |job: &str| Ok(row_where(&tx, "job = ?1", params![job], &self.db)?.map(|r| r.pid));
        let publisher = (req.job.as_str(), req.bridge.as_str(), ip);
        let published = ports::claim(&tx, &self.db, publisher, ports, holder, &mut stale_ports)?;
        // Before our own row goes in: the other jobs of the domain.
        let mut peers = String::new();
        for name in &domain[..usize::from(span)] {
            self::peers(&tx, name, &self.db, &mut peers)?;
        }

        let record = LeaseRecord {
            job: req.job.clone(),
            bridge,
            subnet: req.subnet,
            ip,
            gateway: req.gateway,
            slot: slot_lock.slot(),
            iface: slot_lock.iface(),
            pid: req.pid,
            start_time: start_time(req.pid),
            boot_id: self.boot_id.clone(),
            command: req.command.clone(),
            started_at: civil_time::rfc3339_now(),
            named: req.named,
        };
        insert(&tx, &record, &self.db)?;
        if req.ip.is_none() {
            // A static address leaves the round-robin position alone: the
            // next automatic pick goes on where the previous one left off.
            set_last_ip(&tx, &req.bridge, ip, &self.db)?;
        }
        let files = SlotFiles::new(record.slot);
        let dir = bridges.create(&record.bridge)?;
        let ports: Vec<Publish> = published.iter().map(|p| p.port).collect();
        sidecar::write(dir, &files, &record, &ports)?;
        let count = generation::bump(&tx, &self.db)?;
        if let Err(e) = tx.commit() {
            // Best effort: a sidecar left behind is ignored once the slot
            // lock (dropped with `slot_lock` on return) is free.
            let _ = dir.remove(&files.json);
            return Err(StateError::db(&self.db)(e));
        }
        generation::write_file(&self.dir, count);
        if !stale_ports.is_empty() {
            unpublish(&stale_ports);
        }
        let reclaimed =
            reclaimed.into_iter().filter(|r| domain.contains(&r.bridge)).map(|r| (r.bridge, r.slot)).collect();
        Ok(Lease { record, reclaimed, peers, published, _slot_lock: slot_lock })
    }

    /// `--ip`: a host of the subnet, not the gateway, not a live job's. A
    /// dead job's lease of it is reclaimed.
    fn take_static_ip(
        &self,
        tx: &Connection,
        req: &LeaseRequest,
        ip: Ipv4Addr,
        bridges: &mut Subdirs<'_>,
        reclaimed: &mut Vec<LeaseRecord>,
    ) -> Result<Ipv4Addr, StateError> {
        check_static_ip(req, ip)?;
        if let Some(row) = row_where(tx, "ip = ?1", params![ip.to_string()], &self.db)? {
            if self.is_live(&row, bridges)? {
                return Err(StateError::IpTaken { ip, job: row.job });
            }
            self.forget(tx, &row)?;
            reclaimed.push(row);
        }
        Ok(ip)
    }

    /// The first address after the bridge's last one that no live job
    /// holds; a dead job's lease met on the way is reclaimed and its
    /// address taken (it is the one released longest ago).
    fn take_next_ip(
        &self,
        tx: &Connection,
        req: &LeaseRequest,
        bridges: &mut Subdirs<'_>,
        reclaimed: &mut Vec<LeaseRecord>,
    ) -> Result<Ipv4Addr, StateError> {
        let last = last_ip(tx, &req.bridge, &self.db)?;
        for ip in alloc::hosts_after(req.subnet, req.gateway, last) {
            let Some(row) = row_where(tx, "ip = ?1", params![ip.to_string()], &self.db)? else {
                return Ok(ip);
            };
            if !self.is_live(&row, bridges)? {
                self.forget(tx, &row)?;
                reclaimed.push(row);
                return Ok(ip);
            }
        }
        // Every host was walked and is a live job's.
        let leased = load(tx, &self.db)?.iter().filter(|r| alloc::is_leasable(req.subnet, req.gateway, r.ip)).count();
        Err(StateError::Exhausted { subnet: req.subnet, leased })
    }

    /// The first slot after the domain's last one that no live job holds
    /// and whose lock is free (a held lock without a row is skipped too:
    /// someone is cleaning up that slot's veth, or a live job the database
    /// does not know). A dead job's lease of it is reclaimed first. The
    /// walk spans the hub and the leaves opened so far; only when all of
    /// their slots are live does it open the next leaf (`leaves:<hub>` in
    /// `meta`), so a host needs no leaf until the hub is full. Returns the
    /// lock and the number of bridges the domain spans; the position is
    /// saved.
    fn take_next_slot(
        &self,
        tx: &Connection,
        req: &LeaseRequest,
        bridges: &mut Subdirs<'_>,
        reclaimed: &mut Vec<LeaseRecord>,
    ) -> Result<(SlotLock, u16), StateError> {
        let hub = req.bridge.as_str();
        let ports = req.slots_per_bridge.clamp(1, PORTS_PER_BRIDGE);
        let last = meta_value(tx, &slot_key(hub), &self.db)?.and_then(|v| u32::try_from(v).ok());
        let opened = meta_value(tx, &leaves_key(hub), &self.db)?.and_then(|v| u16::try_from(v).ok());
        let mut span = opened.unwrap_or(0).min(MAX_LEAVES) + 1;
        // First the bridges opened so far, round-robin; then each new leaf
        // from its first slot.
        let mut walk: Box<dyn Iterator<Item = (u16, u16)>> = Box::new(alloc::slots_after(last, span, ports));
        loop {
            for (index, slot) in walk {
                let Some(bridge) = domain_bridge(hub, index) else { continue };
                if let Some(lock) = self.try_slot(tx, bridges, &bridge, slot, reclaimed)? {
                    set_meta(tx, &slot_key(hub), i64::from(alloc::position(index, slot, ports)), &self.db)?;
                    if opened != Some(span - 1) {
                        set_meta(tx, &leaves_key(hub), i64::from(span - 1), &self.db)?;
                    }
                    return Ok((lock, span));
                }
            }
            if span > MAX_LEAVES {
                return Err(StateError::NoFreeSlot { bridge: hub.to_string(), bridges: span, ports });
            }
            let leaf = span;
            span += 1;
            walk = Box::new((0..ports).map(move |slot| (leaf, slot)));
        }
    }

    /// Slot `slot` of `bridge` if no live job holds it (a dead job's lease
    /// of it reclaimed) and its lock is free: the lock.
    fn try_slot(
        &self,
        tx: &Connection,
        bridges: &mut Subdirs<'_>,
        bridge: &str,
        slot: u16,
        reclaimed: &mut Vec<LeaseRecord>,
    ) -> Result<Option<SlotLock>, StateError> {
        let files = SlotFiles::new(slot);
        let dir = bridges.create(bridge)?;
        if let Some(row) = row_where(tx, "bridge = ?1 AND slot = ?2", params![bridge, slot], &self.db)? {
            if liveness::is_live(&row, Some(dir), &self.boot_id)? {
                return Ok(None);
            }
            self.forget(tx, &row)?;
            reclaimed.push(row);
        }
        try_lock_slot_file(dir, &files.lock, bridge, slot)
    }

    /// Forgets the leaves of `hub`'s domain (`leaves:<hub>`), so that the
    /// next job goes on the hub and no leaf is needed again until it is
    /// full; for `gc --all`, before it deletes the leaves. Refused (false)
    /// while any row is on a leaf: a live job's or one `gc` left.
    pub fn forget_leaves(&self, hub: &str) -> Result<bool, StateError> {
        crate::config::check_bridge(hub).map_err(|p| StateError::Request(format!("bridge {hub:?} {p}")))?;
        let _lock = StateLock::acquire(&self.dir)?;
        let mut conn = self.conn()?;
        let tx = schema::write_tx(&mut conn, &self.db)?;
        for leaf in &domain_bridges(hub)[1..] {
            let on_it: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM leases WHERE bridge = ?1)", params![leaf], |r| r.get(0))
                .map_err(StateError::db(&self.db))?;
            if on_it {
                return Ok(false);
            }
        }
        tx.execute("DELETE FROM meta WHERE key = ?1", params![leaves_key(hub)]).map_err(StateError::db(&self.db))?;
        tx.commit().map_err(StateError::db(&self.db))?;
        Ok(true)
    }

    /// Runs `f` under the exclusive state lock: for set-up that must not
    /// race with another runner's (a leaf bridge and its uplink).
    pub fn with_lock<T, E: From<StateError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let _lock = StateLock::acquire(&self.dir)?;
        f()
    }

    /// Gives a lease back: the row, then the sidecar, then (by dropping the
    /// lease) the slot lock. In that order so that at no moment is the slot
    /// free while a record still claims it for a live job.
    pub fn release(&self, lease: Lease) -> Result<(), StateError> {
        let _lock = StateLock::acquire(&self.dir)?;
        let mut conn = self.conn()?;
        let tx = schema::write_tx(&mut conn, &self.db)?;
        // Matching the slot too: after a rebuild the job id may have been
        // restored with the same slot; anything else is not ours to delete.
        let sql = "DELETE FROM leases WHERE job = ?1 AND bridge = ?2 AND slot = ?3";
        schema::execute(&tx, sql, params![lease.record.job, lease.record.bridge, lease.record.slot])
            .map_err(StateError::db(&self.db))?;
        if !lease.published.is_empty() {
            ports::release(&tx, &self.db, &lease.record.job, &lease.record.bridge)?;
        }
        let count = generation::bump(&tx, &self.db)?;
        let last = schema::query_row(&tx, "SELECT NOT EXISTS (SELECT 1 FROM leases)", [], |r| r.get::<_, bool>(0));
        tx.commit().map_err(StateError::db(&self.db))?;
        generation::write_file(&self.dir, count);
        if last.unwrap_or(false) && self.wal_size() > schema::QUIET_WAL_LIMIT {
            schema::checkpoint(&conn, &self.db);
        }
        if let Some(dir) = self.bridges().get(&lease.record.bridge)? {
            dir.remove(&SlotFiles::new(lease.record.slot).json)?;
        }
        drop(lease);
        Ok(())
    }

    /// Every lease with its state. A plain WAL read: it takes the state lock
    /// only shared, for the duration of the read, which waits for a writer's
    /// few milliseconds at most and keeps `rebuild` from moving the file
    /// while it is open.
    pub fn list(&self) -> Result<Vec<LeaseInfo>, StateError> {
        let (rows, mut snapshot, trusted, ports) = {
            let _lock = StateLock::acquire_shared(&self.dir)?;
            self.check_db_files()?;
            let conn = schema::connect(&self.db, false)?;
            let (rows, snapshot) = load_for_sweep(&conn, &self.db)?;
            let ports = ports::all(&conn, &self.db)?;
            (rows, snapshot, generation::in_file(&self.dir) == Some(generation::in_db(&conn, &self.db)?), ports)
        };
        let mut by_job: HashMap<String, Vec<Publish>> = HashMap::new();
        for p in ports {
            by_job.entry(p.job).or_default().push(p.port);
        }
        let mut bridges = self.bridges();
        if !trusted {
            // The database is not the one the runners last wrote: show it
            // only if it knows every live job, as `acquire` would use it.
            self.find_lost_lease(&rows, &mut bridges)?;
        }
        rows.into_iter()
            .map(|lease| {
                let live = self.judge(&lease, &mut bridges, Some(&mut snapshot))? == Verdict::Live;
                let state = if live { LeaseState::Running } else { LeaseState::Stale };
                let mut published = by_job.remove(&lease.job).unwrap_or_default();
                published.sort();
                Ok(LeaseInfo { lease, state, published })
            })
            .collect()
    }

    /// Reclaims the leases of dead runners on every bridge, and removes
    /// sidecars that dead runners left without a row. With `dry_run`,
    /// changes nothing and reports what would go.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StateError> {
        self.gc_with(dry_run, |_| {})
    }

    /// [`gc`](Self::gc), giving the published ports of dead jobs it deletes
    /// to `unpublish` after the commit, under the state lock (see
    /// [`acquire_publishing`](Self::acquire_publishing)).
    pub fn gc_with(&self, dry_run: bool, unpublish: impl FnOnce(&[PublishedPort])) -> Result<GcReport, StateError> {
        if dry_run {
            // The ports first: a job that starts after this read has none
            // here, so it cannot be shown as dead by the list that follows.
            let ports = {
                let _lock = StateLock::acquire_shared(&self.dir)?;
                self.check_db_files()?;
                ports::all(&schema::connect(&self.db, false)?, &self.db)?
            };
            let (live, stale): (Vec<_>, Vec<_>) =
                self.list()?.into_iter().partition(|i| i.state == LeaseState::Running);
            let ports_unpublished = ports.into_iter().filter(|p| !live.iter().any(|i| i.lease.job == p.job)).collect();
            let reclaimed = stale.into_iter().map(|i| i.lease).collect();
            return Ok(GcReport { dry_run, reclaimed, sidecars_removed: Vec::new(), ports_unpublished });
        }
        let _lock = StateLock::acquire(&self.dir)?;
        let mut conn = self.conn()?;
        let tx = schema::write_tx(&mut conn, &self.db)?;
        let mut bridges = self.bridges();
        let (mut rows, mut snapshot) = load_for_sweep(&tx, &self.db)?;
        let mut free = FreeSlots::new();
        let reclaimed = self.reclaim(&tx, &mut rows, None, &mut bridges, &mut snapshot, &mut free)?;
        // gc is where a user looks after a crash: always the full check.
        let sidecars_removed = self.check_sidecars(&tx, &rows, &mut bridges, &free)?;
        // Every bridge's dead leases were reclaimed: the rows left are live.
        let ports_unpublished = ports::drop_stale(&tx, &self.db, |job| Ok(rows.iter().any(|r| r.job == job)))?;
        let count = generation::bump(&tx, &self.db)?;
        tx.commit().map_err(StateError::db(&self.db))?;
        generation::write_file(&self.dir, count);
        if !ports_unpublished.is_empty() {
            unpublish(&ports_unpublished);
        }
        Ok(GcReport { dry_run, reclaimed, sidecars_removed, ports_unpublished })
    }

    /// Deletes the dead leases among `rows` (of some bridges, or all), takes
    /// them out of `rows` and returns them, judged with `snapshot` (see
    /// [`load_for_sweep`]). The slots whose lock was free go to `free`:
    /// nobody can own their sidecars (see `check_sidecars`).
    fn reclaim(
        &self,
        conn: &Connection,
        rows: &mut Vec<LeaseRecord>,
        bridge: Option<&[String]>,
        bridges: &mut Subdirs<'_>,
        snapshot: &mut LockSnapshot,
        free: &mut FreeSlots,
    ) -> Result<Vec<LeaseRecord>, StateError> {
        let mut dead = Vec::new();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows.drain(..) {
            let verdict = if bridge.is_none_or(|b| b.contains(&row.bridge)) {
                self.judge(&row, bridges, Some(snapshot))?
            } else {
                Verdict::Live
            };
            if verdict == Verdict::DeadLockFree {
                free.entry(row.bridge.clone()).or_default().insert(row.slot);
            }
            if verdict == Verdict::Live {
                kept.push(row);
            } else {
                dead.push(row);
            }
        }
        if kept.is_empty() && !dead.is_empty() {
            // All dead (a host-wide crash, a reboot): one statement, which
            // SQLite runs as a truncation of the table and its indexes
            // instead of a search and four b-tree deletions per row.
            conn.execute("DELETE FROM leases", []).map_err(StateError::db(&self.db))?;
        } else {
            for row in &dead {
                self.forget(conn, row)?;
            }
        }
        *rows = kept;
        Ok(dead)
    }

    /// Deletes a dead lease's row. Its sidecar is left to
    /// `check_sidecars`, which removes it only if it is dead too: the file
    /// at that path may belong to a live job the database lost, and is then
    /// the only record of that job's address.
    fn forget(&self, conn: &Connection, row: &LeaseRecord) -> Result<(), StateError> {
        schema::execute(conn, "DELETE FROM leases WHERE job = ?1", params![row.job])
            .map(drop)
            .map_err(StateError::db(&self.db))
    }

    /// Fails with `LostLeases` if a live job's sidecar has no row of its
    /// own among `rows`; reads only, for `list`.
    fn find_lost_lease(&self, rows: &[LeaseRecord], bridges: &mut Subdirs<'_>) -> Result<(), StateError> {
        let by_slot: HashMap<(&str, u16), &LeaseRecord> =
            rows.iter().map(|r| ((r.bridge.as_str(), r.slot), r)).collect();
        for found in sidecar::scan(bridges, |_, _| false)?.sidecars {
            let known = match (&found.record, by_slot.get(&(found.bridge.as_str(), found.slot))) {
                (Some(rec), Some(row)) => rec.job == row.job && rec.ip == row.ip,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if !known && self.sidecar_live(&found, bridges)? {
                return Err(self.lost_lease(found));
            }
        }
        Ok(())
    }

    /// Compares the sidecars on disk with the rows (live ones, after
    /// reclaiming). A live sidecar the database does not match means the
    /// database lost leases (rebuilt from an old copy, deleted, replaced):
    /// allocating from it could hand out a live job's address, so refuse.
    /// Dead sidecars without a row are removed and returned. Those in the
    /// `free` slots (their lock was free when the reclaim probed it, under
    /// the state lock that any new lease of them needs) are removed
    /// unread: no live job holds those slots, so none owns those files.
    /// Temp files are removed too: under the state lock they are nobody's.
    fn check_sidecars(
        &self,
        conn: &Connection,
        rows: &[LeaseRecord],
        bridges: &mut Subdirs<'_>,
        free: &FreeSlots,
    ) -> Result<Vec<std::path::PathBuf>, StateError> {
        let by_slot: HashMap<(&str, u16), &LeaseRecord> =
            rows.iter().map(|r| ((r.bridge.as_str(), r.slot), r)).collect();
        let mut removed = Vec::new();
        let unread = |bridge: &str, slot: u16| free.get(bridge).is_some_and(|slots| slots.contains(&slot));
        let found = sidecar::scan(bridges, unread)?;
        for temp in found.temps {
            if let Some(dir) = bridges.get(&temp.bridge)? {
                dir.remove(&temp.name)?;
            }
            removed.push(temp.path);
        }
        // The unread ones (in free slots: all of them after a host-wide
        // crash) go at the end, together.
        let mut unread = Vec::new();
        for found in found.sidecars {
            let row = by_slot.get(&(found.bridge.as_str(), found.slot));
            if !found.read {
                unread.push((found.bridge, found.name));
                removed.push(found.path);
                continue;
            }
            match (&found.record, row) {
                (Some(rec), Some(row)) if rec.job == row.job && rec.ip == row.ip => continue,
                // Damaged, but the row says what it held: rewrite it, so
                // that a later rebuild still finds this job.
                (None, Some(row)) => {
                    if let Some(dir) = bridges.get(&found.bridge)? {
                        let ports = ports::of_job(conn, &self.db, &row.job)?;
                        sidecar::write(dir, &SlotFiles::new(found.slot), row, &ports)?;
                    }
                    continue;
                }
                _ => {}
            }
            if self.sidecar_live(&found, bridges)? {
                return Err(self.lost_lease(found));
            }
            if let Some(dir) = bridges.get(&found.bridge)? {
                dir.remove(&found.name)?;
            }
            removed.push(found.path);
        }
        bridges.remove_all(&unread)?;
        Ok(removed)
    }
}

/// Removes the sidecar in a reclaimed lease's slot if nobody holds that
/// slot's lock (then nobody can own the file).
fn remove_dead_sidecar(dead: &LeaseRecord, bridges: &mut Subdirs<'_>) -> Result<(), StateError> {
    let files = SlotFiles::new(dead.slot);
    if check_slot(&dead.bridge, dead.slot).is_err() {
        return Ok(());
    }
    if let Some(dir) = bridges.get(&dead.bridge)?
        && liveness::lock_held(Some(dir), &files.lock)? == Some(false)
    {
        dir.remove(&files.json)?;
    }
    Ok(())
}

fn check_request(req: &LeaseRequest) -> Result<(), StateError> {
    let bad = |what: &str, p: String| StateError::Request(format!("{what} {p}"));
    if req.job.is_empty() {
        return Err(StateError::Request("the job id is empty; give the job a name".into()));
    }
    crate::config::check_bridge(&req.bridge)
        .map_err(|p| StateError::Request(format!("bridge {:?} {p}", req.bridge)))?;
    check_subnet(req.subnet).map_err(|p| bad(&format!("subnet {}", req.subnet), p))?;
    check_gateway(req.subnet, req.gateway).map_err(|p| bad(&format!("gateway {}", req.gateway), p))?;
    Ok(())
}

/// `--ip`: a host of the subnet, not the gateway (whether a job holds it
/// is the caller's to find out).
fn check_static_ip(req: &LeaseRequest, ip: Ipv4Addr) -> Result<(), StateError> {
    let subnet = req.subnet;
    if !subnet.contains(&ip) {
        return Err(StateError::IpOutside { ip, subnet });
    }
    if ip == req.gateway {
        return Err(StateError::IpReserved { ip, role: "gateway", subnet });
    }
    if let Some(role) = reserved_role(subnet, ip) {
        return Err(StateError::IpReserved { ip, role, subnet });
    }
    Ok(())
}

/// The runner's start time; 0 (never a real one: init starts after boot)
/// if /proc cannot tell, which only weakens the display-only fallback.
fn start_time(pid: u32) -> u64 {
    libc::pid_t::try_from(pid).ok().and_then(|p| sys::process_start_time(p).ok()).unwrap_or(0)
}

/// Rows from which a sweep judges its leases with a [`LockSnapshot`]
/// rather than a probe of each slot lock. A probe is four syscalls (~4 us
/// on a 2-core VM); the snapshot's read of /proc/locks waits out an RCU
/// grace period (~8 ms there) however few locks there are, partly hidden
/// behind the read of the rows. The two break even between 1000 and 2000
/// rows there; far below, the snapshot would be most of a `leases` of ten
/// jobs.
const SNAPSHOT_FROM: i64 = 1000;

/// Every row (see [`load`]) and the snapshot to judge them with: one that
/// proves nothing below [`SNAPSHOT_FROM`] rows, so every lock is probed;
/// above, one taken on a second thread while the rows are read, so the
/// grace period's wait hides behind the read (~13 ms at 10,000 rows).
///
/// The caller holds the state lock, so no row is committed while the rows
/// and the snapshot are taken: a row's runner locked its slot before its
/// commit, so before the snapshot's read (what [`LockSnapshot`] needs).
fn load_for_sweep(conn: &Connection, db: &std::path::Path) -> Result<(Vec<LeaseRecord>, LockSnapshot), StateError> {
    let count: i64 =
        schema::query_row(conn, "SELECT count(*) FROM leases", [], |r| r.get(0)).map_err(StateError::db(db))?;
    if count < SNAPSHOT_FROM {
        return Ok((load(conn, db)?, LockSnapshot::none()));
    }
    std::thread::scope(|s| {
        // No thread to be had (a pids limit, no memory): one after the other.
        let taker = std::thread::Builder::new().spawn_scoped(s, LockSnapshot::take);
        let rows = load(conn, db);
        let snapshot = match taker {
            Ok(taker) => taker.join().unwrap_or_else(|_| LockSnapshot::none()),
            Err(_) => LockSnapshot::take(),
        };
        Ok((rows?, snapshot))
    })
}

pub(crate) fn load(conn: &Connection, db: &std::path::Path) -> Result<Vec<LeaseRecord>, StateError> {
    // Read in the table's own order and sorted here: `ORDER BY bridge,
    // slot` walks the (bridge, slot) index and seeks the table once per
    // row, which at 10,000 rows costs more than the whole sort.
    let sql = format!("SELECT {COLUMNS} FROM leases");
    let mut stmt = conn.prepare(&sql).map_err(StateError::db(db))?;
    let rows = stmt.query_map([], from_row).map_err(StateError::db(db))?;
    let mut rows: Vec<LeaseRecord> = rows.collect::<Result<_, _>>().map_err(StateError::db(db))?;
    // (bridge, slot) is unique: the order is total.
    rows.sort_unstable_by(|a, b| (&a.bridge, a.slot).cmp(&(&b.bridge, b.slot)));
    Ok(rows)
}

/// The one row `condition` (on a unique key) selects, if any.
fn row_where(
    conn: &Connection,
    condition: &str,
    args: impl rusqlite::Params,
    db: &std::path::Path,
) -> Result<Option<LeaseRecord>, StateError> {
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE {condition}");
    schema::query_row(conn, &sql, args, from_row).optional().map_err(StateError::db(db))
}

/// The query of [`peers`]. `named = 1` as the index's own condition:
/// SQLite uses a partial index only for a query whose WHERE implies it.
/// `+?1`, not `?1`: proving that implication compares the index's
/// condition with a bare parameter's value, which marks the statement to
/// be prepared again at every bind (a second parse per start); an
/// expression is not compared, and the plan is the same seek.
const PEERS: &str = "SELECT job, ip FROM leases INDEXED BY leases_named WHERE bridge = +?1 AND named = 1 ORDER BY slot";

/// The named jobs of a bridge as /etc/hosts lines (`ip\tjob\n`), onto `out`,
/// for a new job's /etc/hosts: one read of an index that holds only those
/// (`leases_named`), so anonymous jobs cost a start nothing; no liveness check (a dead
/// job's row not reclaimed yet is listed too, as a live job that ends later
/// would be). The columns are read in place, never copied or parsed into
/// values; a row whose address is no dotted quad or whose job is no job id
/// (only a damaged database has one) is left out, so nothing else reaches
/// the file.
fn peers(conn: &Connection, bridge: &str, db: &std::path::Path, out: &mut String) -> Result<(), StateError> {
    let mut stmt = conn.prepare_cached(PEERS).map_err(StateError::db(db))?;
    let mut rows = stmt.query(params![bridge]).map_err(StateError::db(db))?;
    while let Some(row) = rows.next().map_err(StateError::db(db))? {
        let text = |i| row.get_ref(i).ok().and_then(|v| v.as_str().ok());
        let (Some(job), Some(ip)) = (text(0), text(1)) else { continue };
        let job_id = !job.is_empty() && job.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if job_id && ip.parse::<Ipv4Addr>().is_ok() {
            for part in [ip, "\t", job, "\n"] {
                out.push_str(part);
            }
        }
    }
    Ok(())
}

pub(crate) fn insert(conn: &Connection, r: &LeaseRecord, db: &std::path::Path) -> Result<(), StateError> {
    let sql = format!("INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    let values = params![
        r.job,
        r.bridge,
        r.subnet.to_string(),
        r.ip.to_string(),
        r.gateway.to_string(),
        r.slot,
        r.iface,
        r.pid,
        // Clock ticks since boot: centuries away from i64::MAX.
        i64::try_from(r.start_time).unwrap_or(i64::MAX),
        r.boot_id,
        r.command,
        r.started_at,
        r.named
    ];
    schema::execute(conn, &sql, values).map(drop).map_err(StateError::db(db))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<LeaseRecord> {
    Ok(LeaseRecord {
        job: row.get(0)?,
        bridge: row.get(1)?,
        subnet: parsed(row, 2)?,
        ip: parsed(row, 3)?,
        gateway: parsed(row, 4)?,
        slot: row.get(5)?,
        iface: row.get(6)?,
        pid: row.get(7)?,
        start_time: {
            let ticks: i64 = row.get(8)?;
            u64::try_from(ticks)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, Type::Integer, Box::new(e)))?
        },
        boot_id: row.get(9)?,
        command: row.get(10)?,
        started_at: row.get(11)?,
        named: row.get(12)?,
    })
}

/// A text column parsed with `FromStr`; a failure reads as damage.
fn parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = row
        .get_ref(idx)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn last_ip(conn: &Connection, bridge: &str, db: &std::path::Path) -> Result<Option<Ipv4Addr>, StateError> {
    let text: Option<String> =
        schema::query_row(conn, "SELECT ip FROM last_ip WHERE bridge = ?1", params![bridge], |r| r.get(0))
            .optional()
            .map_err(StateError::db(db))?;
    // An unparsable position only costs the round-robin its place.
    Ok(text.and_then(|t| t.parse().ok()))
}

pub(crate) fn set_last_ip(
    conn: &Connection,
    bridge: &str,
    ip: Ipv4Addr,
    db: &std::path::Path,
) -> Result<(), StateError> {
    let sql = "INSERT INTO last_ip (bridge, ip) VALUES (?1, ?2) ON CONFLICT (bridge) DO UPDATE SET ip = excluded.ip";
    schema::execute(conn, sql, params![bridge, ip.to_string()]).map(drop).map_err(StateError::db(db))
}

/// The `meta` key of a domain's round-robin slot position
/// (`alloc::position`), keyed by its hub.
fn slot_key(hub: &str) -> String {
    format!("slot:{hub}")
}

/// The `meta` key of the number of leaves a hub's slot walk spans.
fn leaves_key(hub: &str) -> String {
    format!("leaves:{hub}")
}

fn meta_value(conn: &Connection, key: &str, db: &std::path::Path) -> Result<Option<i64>, StateError> {
    schema::query_row(conn, "SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
        .optional()
        .map_err(StateError::db(db))
}

fn set_meta(conn: &Connection, key: &str, value: i64, db: &std::path::Path) -> Result<(), StateError> {
    let sql = "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    schema::execute(conn, sql, params![key, value]).map(drop).map_err(StateError::db(db))
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// The peers query runs once per start: parsed once, and a seek of
    /// the covering partial index, whatever bridge it is bound to.
    #[test]
    fn the_peers_query_is_prepared_once_and_seeks_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let mut conn = schema::connect(&db, true).unwrap();
        schema::migrate(&mut conn, &db, true).unwrap();
        let mut out = String::new();
        for bridge in ["rpt0", "rpt1", "rpt0"] {
            peers(&conn, bridge, &db, &mut out).unwrap();
        }
        let stmt = conn.prepare_cached(PEERS).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "prepared again at a bind");
        drop(stmt);
        let plan: String =
            conn.query_row(&format!("EXPLAIN QUERY PLAN {PEERS}"), params!["rpt0"], |r| r.get(3)).unwrap();
        assert_eq!(plan, "SEARCH leases USING COVERING INDEX leases_named (bridge=?)");
    }
}
