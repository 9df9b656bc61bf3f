//! `published_ports`: which job publishes which host port (`--publish`).
//!
//! Rows are written in the lease transaction, under the state lock, so
//! of two runs asking for one host port the first to take the lock gets
//! it and the second is refused with the first one's name. A row whose job
//! holds no live lease is a dead runner's: the next lease transaction or
//! `gc` deletes it, and hands it to its caller, which takes the map
//! element of it out while it still holds the state lock (so a run that
//! then publishes the port cannot lose its element to that).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::error::StateError;
use super::schema;
use crate::publish::{Proto, Publish};

/// One published host port as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    #[serde(flatten)]
    pub port: Publish,
    pub job: String,
    /// The bridge whose NAT table holds the port's map element.
    pub bridge: String,
    /// The job's address: where the port leads.
    pub ip: Ipv4Addr,
}

/// Deletes the rows of dead jobs and returns them: `alive` judges each
/// publishing job once (no lease row, or a lease whose slot lock is free:
/// dead), so a SIGKILLed runner's ports go at the next lease transaction
/// whether or not it reclaims that lease. One probe per publishing job,
/// not per lease. Call it before the new lease's own row goes in: a dead
/// job of the same id leaves its ports to it this way too.
pub(super) fn drop_stale(
    conn: &Connection,
    db: &Path,
    mut alive: impl FnMut(&str) -> Result<bool, StateError>,
) -> Result<Vec<PublishedPort>, StateError> {
    let mut judged: HashMap<String, bool> = HashMap::new();
    let mut stale = Vec::new();
    for p in select(conn, db, "")? {
        let live = match judged.get(&p.job) {
            Some(&live) => live,
            None => {
                let live = alive(&p.job)?;
                judged.insert(p.job.clone(), live);
                live
            }
        };
        if !live {
            delete(conn, db, &p)?;
            stale.push(p);
        }
    }
    Ok(stale)
}

/// Records `ports` for the lease of `job` on `bridge` at `ip` (call after
/// [`drop_stale`]). A
/// host port another job's row holds is refused with that job's name and
/// runner's pid, as `holder` finds them: `None` if that job is dead after
/// all (its lease is on another bridge, not reclaimed yet), and then its
/// row is deleted and pushed to `stale`.
pub(super) fn claim(
    conn: &Connection,
    db: &Path,
    (job, bridge, ip): (&str, &str, Ipv4Addr),
    ports: &[Publish],
    mut holder: impl FnMut(&str) -> Result<Option<u32>, StateError>,
    stale: &mut Vec<PublishedPort>,
) -> Result<Vec<PublishedPort>, StateError> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let held = select(conn, db, "")?;
    let mut out = Vec::with_capacity(ports.len());
    for &port in ports {
        let key = (port.proto, port.host_port);
        if let Some(h) = held.iter().find(|h| (h.port.proto, h.port.host_port) == key) {
            match holder(&h.job)? {
                Some(pid) => return Err(StateError::PortTaken { port: port.host_side(), job: h.job.clone(), pid }),
                None => {
                    delete(conn, db, h)?;
                    stale.push(h.clone());
                }
            }
        }
        let p = PublishedPort { port, job: job.to_string(), bridge: bridge.to_string(), ip };
        insert(conn, db, &p)?;
        out.push(p);
    }
    Ok(out)
}

/// Every row.
pub(super) fn all(conn: &Connection, db: &Path) -> Result<Vec<PublishedPort>, StateError> {
    select(conn, db, "")
}

/// The host ports `job` publishes, as its sidecar records them.
pub(super) fn of_job(conn: &Connection, db: &Path, job: &str) -> Result<Vec<Publish>, StateError> {
    let mut ports: Vec<Publish> = select(conn, db, "")?.into_iter().filter(|p| p.job == job).map(|p| p.port).collect();
    ports.sort();
    Ok(ports)
}

/// Records the ports a live job's sidecar says it publishes (`rebuild`).
pub(super) fn restore(
    conn: &Connection,
    db: &Path,
    (job, bridge, ip): (&str, &str, Ipv4Addr),
    ports: &[Publish],
) -> Result<(), StateError> {
    for port in ports {
        insert(conn, db, &PublishedPort { port: *port, job: job.to_string(), bridge: bridge.to_string(), ip })?;
    }
    Ok(())
}

fn insert(conn: &Connection, db: &Path, p: &PublishedPort) -> Result<(), StateError> {
    let sql =
        "INSERT INTO published_ports (proto, host_port, job, bridge, ip, job_port) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    let values = params![p.port.proto.name(), p.port.host_port, p.job, p.bridge, p.ip.to_string(), p.port.job_port];
    schema::execute(conn, sql, values).map(drop).map_err(StateError::db(db))
}

fn delete(conn: &Connection, db: &Path, p: &PublishedPort) -> Result<(), StateError> {
    let sql = "DELETE FROM published_ports WHERE proto = ?1 AND host_port = ?2";
    schema::execute(conn, sql, params![p.port.proto.name(), p.port.host_port]).map(drop).map_err(StateError::db(db))
}

/// Deletes the rows of `job` on `bridge` (its release).
pub(super) fn release(conn: &Connection, db: &Path, job: &str, bridge: &str) -> Result<(), StateError> {
    let sql = "DELETE FROM published_ports WHERE job = ?1 AND bridge = ?2";
    schema::execute(conn, sql, params![job, bridge]).map(drop).map_err(StateError::db(db))
}

/// The rows `filter` (a WHERE clause, or nothing) selects.
fn select(conn: &Connection, db: &Path, filter: &str) -> Result<Vec<PublishedPort>, StateError> {
    let sql = format!("SELECT proto, host_port, job, bridge, ip, job_port FROM published_ports {filter}");
    let mut stmt = conn.prepare_cached(&sql).map_err(StateError::db(db))?;
    let rows = stmt
        .query_map([], |row| {
            let proto: String = row.get(0)?;
            let ip: String = row.get(4)?;
            let bad =
                |i, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::from(e));
            Ok(PublishedPort {
                port: Publish {
                    proto: Proto::from_name(&proto).ok_or_else(|| bad(0, format!("protocol {proto:?}")))?,
                    host_port: row.get(1)?,
                    job_port: row.get(5)?,
                },
                job: row.get(2)?,
                bridge: row.get(3)?,
                ip: ip.parse().map_err(|e: std::net::AddrParseError| bad(4, e.to_string()))?,
            })
        })
        .map_err(StateError::db(db))?;
    rows.collect::<Result<_, _>>().map_err(StateError::db(db))
}
