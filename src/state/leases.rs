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
use super::lock::{SlotLock, StateLock, try_lock_slot_file};
use super::ports::{self, PublishedPort};
use super::private::{PrivateDir, Subdirs};
use super::record::LeaseRecord;
use super::slot::{MAX_SLOTS, SlotFiles};
use super::{alloc, generation, liveness, schema, sidecar};
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
    /// The runner's pid: the process that holds the slot lock.
    pub pid: u32,
}

/// A lease held by this process. Dropping it without [`StateDir::release`]
/// frees the slot lock, which makes the row stale: the next allocation
/// reclaims it, exactly as after a crash.
#[derive(Debug)]
pub struct Lease {
    pub record: LeaseRecord,
    /// Slots on this bridge whose dead owners' leases this allocation
    /// reclaimed. A host veth `{bridge}-{slot}` may be left over for each:
    /// delete it only while holding [`StateDir::try_lock_slot`] for it.
    pub reclaimed: Vec<u16>,
    /// The other live jobs on this bridge and their addresses (job id,
    /// ip), as the lease transaction saw them: a snapshot for the job's
    /// /etc/hosts, so jobs started before this one resolve by name. Jobs
    /// started later, and addresses that change, are not in it.
    pub peers: Vec<(String, Ipv4Addr)>,
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
    /// A request for this process (the runner) on the configured network;
    /// set `ip` for `--ip`.
    pub fn new(net: &NetworkConfig, job: &str, command: &str) -> LeaseRequest {
        LeaseRequest {
            job: job.to_string(),
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            ip: None,
            command: command.to_string(),
            pid: std::process::id(),
        }
    }
}

const COLUMNS: &str = "job, bridge, subnet, ip, gateway, slot, iface, pid, start_time, boot_id, command, started_at";

impl StateDir {
    /// Leases an address and a bridge slot for `req.job`, reclaiming the
    /// leases of dead runners on that bridge first. The returned [`Lease`]
    /// holds the slot lock; keep it for the job's whole life.
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
        let mut rows = load(&tx, &self.db)?;
        let reclaimed = self.reclaim(&tx, &mut rows, Some(&req.bridge), &mut bridges)?;
        if let Some(i) = rows.iter().position(|r| r.job == req.job) {
            let holder = &rows[i];
            if self.is_live(holder, &mut bridges)? {
                return Err(StateError::DuplicateJob { job: req.job.clone(), ip: holder.ip, pid: holder.pid });
            }
            // A dead job of the same id on another bridge.
            let dead = rows.swap_remove(i);
            self.forget(&tx, &dead)?;
        }
        if generation::in_file(&self.dir) == Some(generation::in_db(&tx, &self.db)?) {
            // These rows are what the runners last wrote: the sidecars of
            // the leases just reclaimed are theirs, and their slots free.
            for dead in &reclaimed {
                remove_dead_sidecar(dead, &mut bridges)?;
            }
        } else {
            self.check_sidecars(&rows, &mut bridges)?;
        }

        let taken: HashMap<Ipv4Addr, &str> = rows.iter().map(|r| (r.ip, r.job.as_str())).collect();
        let ip = match req.ip {
            Some(ip) => check_static_ip(req, ip, &taken)?,
            None => {
                let last = last_ip(&tx, &req.bridge, &self.db)?;
                alloc::next_ip(req.subnet, req.gateway, last, &taken.keys().copied().collect())?
            }
        };
        let alive = |job: &str| match rows.iter().find(|r| r.job == job) {
            Some(r) => self.is_live(r, &mut bridges),
            None => Ok(false),
        };
        let mut stale_ports = ports::drop_stale(&tx, &self.db, alive)?;
        let holder = |job: &str| match rows.iter().find(|r| r.job == job) {
            Some(r) => Ok(self.is_live(r, &mut bridges)?.then_some(r.pid)),
            None => Ok(None),
        };
        let publisher = (req.job.as_str(), req.bridge.as_str(), ip);
        let published = ports::claim(&tx, &self.db, publisher, ports, holder, &mut stale_ports)?;
        let used: HashSet<u16> = rows.iter().filter(|r| r.bridge == req.bridge).map(|r| r.slot).collect();
        let dir = bridges.create(&req.bridge)?;
        let slot_lock = take_free_slot(dir, &req.bridge, &used)?;

        let record = LeaseRecord {
            job: req.job.clone(),
            bridge: req.bridge.clone(),
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
        };
        insert(&tx, &record, &self.db)?;
        if req.ip.is_none() {
            // A static address leaves the round-robin position alone: the
            // next automatic pick goes on where the previous one left off.
            set_last_ip(&tx, &req.bridge, ip, &self.db)?;
        }
        let files = SlotFiles::new(record.slot);
        sidecar::write(dir, &files, &record)?;
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
        // Live rows only: the bridge's dead ones were reclaimed above.
        let peers = rows.iter().filter(|r| r.bridge == req.bridge).map(|r| (r.job.clone(), r.ip)).collect();
        let reclaimed = reclaimed.iter().map(|r| r.slot).collect();
        Ok(Lease { record, reclaimed, peers, published, _slot_lock: slot_lock })
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
        tx.execute(
            "DELETE FROM leases WHERE job = ?1 AND bridge = ?2 AND slot = ?3",
            params![lease.record.job, lease.record.bridge, lease.record.slot],
        )
        .map_err(StateError::db(&self.db))?;
        if !lease.published.is_empty() {
            ports::release(&tx, &self.db, &lease.record.job, &lease.record.bridge)?;
        }
        let count = generation::bump(&tx, &self.db)?;
        tx.commit().map_err(StateError::db(&self.db))?;
        generation::write_file(&self.dir, count);
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
        let rows = {
            let _lock = StateLock::acquire_shared(&self.dir)?;
            self.check_db_files()?;
            let conn = schema::connect(&self.db, false)?;
            load(&conn, &self.db)?
        };
        let mut bridges = self.bridges();
        rows.into_iter()
            .map(|lease| {
                let state = if self.is_live(&lease, &mut bridges)? { LeaseState::Running } else { LeaseState::Stale };
                Ok(LeaseInfo { lease, state })
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
            let reclaimed =
                self.list()?.into_iter().filter(|i| i.state == LeaseState::Stale).map(|i| i.lease).collect();
            return Ok(GcReport { dry_run, reclaimed, sidecars_removed: Vec::new(), ports_unpublished: Vec::new() });
        }
        let _lock = StateLock::acquire(&self.dir)?;
        let mut conn = self.conn()?;
        let tx = schema::write_tx(&mut conn, &self.db)?;
        let mut bridges = self.bridges();
        let mut rows = load(&tx, &self.db)?;
        let reclaimed = self.reclaim(&tx, &mut rows, None, &mut bridges)?;
        // gc is where a user looks after a crash: always the full check.
        let sidecars_removed = self.check_sidecars(&rows, &mut bridges)?;
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

    /// Deletes the dead leases among `rows` (of one bridge, or all), takes
    /// them out of `rows` and returns them.
    fn reclaim(
        &self,
        conn: &Connection,
        rows: &mut Vec<LeaseRecord>,
        bridge: Option<&str>,
        bridges: &mut Subdirs<'_>,
    ) -> Result<Vec<LeaseRecord>, StateError> {
        let mut dead = Vec::new();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows.drain(..) {
            if bridge.is_none_or(|b| b == row.bridge) && !self.is_live(&row, bridges)? {
                dead.push(row);
            } else {
                kept.push(row);
            }
        }
        *rows = kept;
        for row in &dead {
            self.forget(conn, row)?;
        }
        Ok(dead)
    }

    /// Deletes a dead lease's row. Its sidecar is left to
    /// `check_sidecars`, which removes it only if it is dead too: the file
    /// at that path may belong to a live job the database lost, and is then
    /// the only record of that job's address.
    fn forget(&self, conn: &Connection, row: &LeaseRecord) -> Result<(), StateError> {
        conn.execute("DELETE FROM leases WHERE job = ?1", params![row.job]).map(drop).map_err(StateError::db(&self.db))
    }

    /// Compares the sidecars on disk with the rows (live ones, after
    /// reclaiming). A live sidecar the database does not match means the
    /// database lost leases (rebuilt from an old copy, deleted, replaced):
    /// allocating from it could hand out a live job's address, so refuse.
    /// Dead sidecars without a row are removed and returned.
    fn check_sidecars(
        &self,
        rows: &[LeaseRecord],
        bridges: &mut Subdirs<'_>,
    ) -> Result<Vec<std::path::PathBuf>, StateError> {
        let by_slot: HashMap<(&str, u16), &LeaseRecord> =
            rows.iter().map(|r| ((r.bridge.as_str(), r.slot), r)).collect();
        let mut removed = Vec::new();
        for found in sidecar::scan(bridges)? {
            let row = by_slot.get(&(found.bridge.as_str(), found.slot));
            let files = SlotFiles::new(found.slot);
            match (&found.record, row) {
                (Some(rec), Some(row)) if rec.job == row.job && rec.ip == row.ip => continue,
                // Damaged, but the row says what it held: rewrite it, so
                // that a later rebuild still finds this job.
                (None, Some(row)) => {
                    if let Some(dir) = bridges.get(&found.bridge)? {
                        sidecar::write(dir, &files, row)?;
                    }
                    continue;
                }
                _ => {}
            }
            if self.sidecar_live(&found, bridges)? {
                return Err(self.lost_lease(found));
            }
            if let Some(dir) = bridges.get(&found.bridge)? {
                dir.remove(&files.json)?;
            }
            removed.push(found.path);
        }
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

/// The lowest slot in the bridge's `dir` that no row uses and nobody holds.
/// A held lock without a row is skipped too: someone is cleaning up that
/// slot's veth, or a live job the database does not know.
fn take_free_slot(dir: &PrivateDir, bridge: &str, used: &HashSet<u16>) -> Result<SlotLock, StateError> {
    for slot in (0..MAX_SLOTS).filter(|s| !used.contains(s)) {
        if let Some(lock) = try_lock_slot_file(dir, &SlotFiles::new(slot).lock, bridge, slot)? {
            return Ok(lock);
        }
    }
    Err(StateError::NoFreeSlot { bridge: bridge.to_string() })
}

fn check_request(req: &LeaseRequest) -> Result<(), StateError> {
    let bad = |what: &str, p: String| StateError::Request(format!("{what} {p}"));
    if req.job.is_empty() {
        return Err(StateError::Request("the job id is empty; give the job a name".into()));
    }
    check_slot(&req.bridge, 0)?;
    check_subnet(req.subnet).map_err(|p| bad(&format!("subnet {}", req.subnet), p))?;
    check_gateway(req.subnet, req.gateway).map_err(|p| bad(&format!("gateway {}", req.gateway), p))?;
    Ok(())
}

/// `--ip`: a host of the subnet, not the gateway, not leased.
fn check_static_ip(req: &LeaseRequest, ip: Ipv4Addr, taken: &HashMap<Ipv4Addr, &str>) -> Result<Ipv4Addr, StateError> {
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
    if let Some(job) = taken.get(&ip) {
        return Err(StateError::IpTaken { ip, job: job.to_string() });
    }
    Ok(ip)
}

/// The runner's start time; 0 (never a real one: init starts after boot)
/// if /proc cannot tell, which only weakens the display-only fallback.
fn start_time(pid: u32) -> u64 {
    libc::pid_t::try_from(pid).ok().and_then(|p| sys::process_start_time(p).ok()).unwrap_or(0)
}

pub(crate) fn load(conn: &Connection, db: &std::path::Path) -> Result<Vec<LeaseRecord>, StateError> {
    let sql = format!("SELECT {COLUMNS} FROM leases ORDER BY bridge, slot");
    let mut stmt = conn.prepare(&sql).map_err(StateError::db(db))?;
    let rows = stmt.query_map([], from_row).map_err(StateError::db(db))?;
    rows.collect::<Result<_, _>>().map_err(StateError::db(db))
}

pub(crate) fn insert(conn: &Connection, r: &LeaseRecord, db: &std::path::Path) -> Result<(), StateError> {
    let sql = format!("INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
    conn.execute(
        &sql,
        params![
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
            r.started_at
        ],
    )
    .map(drop)
    .map_err(StateError::db(db))
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
    })
}

/// A text column parsed with `FromStr`; a failure reads as damage.
fn parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn last_ip(conn: &Connection, bridge: &str, db: &std::path::Path) -> Result<Option<Ipv4Addr>, StateError> {
    let text: Option<String> = conn
        .query_row("SELECT ip FROM last_ip WHERE bridge = ?1", params![bridge], |r| r.get(0))
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
    conn.execute(
        "INSERT INTO last_ip (bridge, ip) VALUES (?1, ?2) ON CONFLICT (bridge) DO UPDATE SET ip = excluded.ip",
        params![bridge, ip.to_string()],
    )
    .map(drop)
    .map_err(StateError::db(db))
}
