//! Connections to state.db and its schema migrations.
//!
//! Migrations are the SQL files in `migrations/`, embedded at build time and
//! applied in order; `PRAGMA user_version` counts how many have run. They
//! run inside BEGIN IMMEDIATE (and under the state lock, see `StateDir::open`)
//! so that two first runs cannot both see version 0 and both apply 0001.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Params, Row, Transaction, TransactionBehavior};

use super::error::StateError;

const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../../migrations/0001_init.sql")),
    ("0002_generation.sql", include_str!("../../migrations/0002_generation.sql")),
    ("0003_published_ports.sql", include_str!("../../migrations/0003_published_ports.sql")),
    ("0004_named.sql", include_str!("../../migrations/0004_named.sql")),
];

/// The `user_version` of a database with every migration applied.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Writers wait for each other under the state lock, so SQLite's own busy
/// wait only covers readers that run without it and checkpoints: generous,
/// because giving up means a failed job.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages after which a commit checkpoints: a job writes about ten (its
/// lease and its release), so about one job in ten pays the checkpoint's
/// fsyncs, and a lone opener re-reads at most ~100 pages of WAL.
const WAL_AUTOCHECKPOINT: i64 = 100;

/// The WAL file is cut back to this size after a checkpoint if it grew
/// past it (a long `repeatr leases` read can hold a restart off): about
/// what WAL_AUTOCHECKPOINT pages of 4 KiB take, so the WAL stays near
/// 0.4 MiB whatever the number of jobs (state-layout.md, "Sizing").
const JOURNAL_SIZE_LIMIT: i64 = WAL_AUTOCHECKPOINT * 4096;

/// Prepared statements a connection keeps (rusqlite's default is 16).
const STATEMENT_CACHE: usize = 32;

/// Opens a connection with the settings every user needs. Only `open` and
/// `rebuild` pass `create`: anywhere else a missing file means someone
/// removed it, which must not silently yield an empty allocator.
pub(crate) fn connect(db: &Path, create: bool) -> Result<Connection, StateError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    } else if !db.try_exists().map_err(StateError::io("look up", db))? {
        return Err(StateError::Corrupt { path: db.to_path_buf(), detail: "the file is missing".into() });
    }
    let err = StateError::db;
    let conn = Connection::open_with_flags(db, flags).map_err(err(db))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err(db))?;
    // A lease and its release run about 15 distinct statements, all
    // prepared through the cache: a connection that leases more than once
    // (`lease_hold`, `lease_bench`, the tests) parses each once. Parsing
    // them for every lease was a sixth of `lease_bench`'s CPU (perf).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // WAL + NORMAL: a commit costs no fsync. A power cut may lose the last
    // commits, which is harmless here: every lease of the old boot is stale.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err(db))?;
    // Every runner is a short-lived process, so its connection is usually
    // the last one to close. By default that close checkpoints the WAL into
    // the database (two fsyncs) and deletes -wal and -shm, and the next
    // runner creates them again (two more fsyncs, of the WAL header and the
    // directory): four fsyncs on every job's path. Closing without a
    // checkpoint keeps the files; commits checkpoint instead, every
    // WAL_AUTOCHECKPOINT pages. That also bounds what a runner that opens
    // the database alone re-reads from the WAL to rebuild its index.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(err(db))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT).map_err(err(db))?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT).map_err(err(db))?;
    if !create {
        let version = user_version(&conn, db)?;
        if version != SCHEMA_VERSION {
            check_version(db, version)?;
            // Older than this binary's: `open` would have migrated it, so
            // the file was replaced behind our back.
            let detail = format!("schema version {version}, expected {SCHEMA_VERSION}");
            return Err(StateError::Corrupt { path: db.to_path_buf(), detail });
        }
    }
    Ok(conn)
}

/// Puts the database in WAL mode and applies the migrations it lacks.
/// Reading the header is also what exposes a file that is no database.
///
/// Only a `fresh` file (0 bytes when repeatr opened it) is switched to WAL:
/// every other one was switched when it was made, so a header that says
/// otherwise was cut short or replaced. Switching it would need SQLite's
/// exclusive lock, which the live runners' open connections keep it from
/// getting: every command would wait out the busy timeout, then blame a
/// lock for what is damage.
pub(crate) fn migrate(conn: &mut Connection, db: &Path, fresh: bool) -> Result<(), StateError> {
    let err = StateError::db;
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).map_err(err(db))?;
    if !fresh && !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::Corrupt {
            path: db.to_path_buf(),
            detail: format!(
                "its header says journal mode {mode}, not the WAL repeatr set: it was cut short or replaced"
            ),
        });
    }
    // A file in WAL mode already (every open but the first) needs no switch.
    let mode = if mode.eq_ignore_ascii_case("wal") {
        mode
    } else {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)).map_err(err(db))?
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::Corrupt {
            path: db.to_path_buf(),
            detail: format!("cannot switch it to WAL mode (still {mode}); keep the state dir on a local filesystem"),
        });
    }
    if user_version(conn, db)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = write_tx(conn, db)?;
    // Read again inside the write transaction: another first run may have
    // migrated between the check above and BEGIN IMMEDIATE.
    let version = user_version(&tx, db)?;
    check_version(db, version)?;
    for (_name, sql) in MIGRATIONS.iter().skip(usize::try_from(version).unwrap_or(0)) {
        tx.execute_batch(sql).map_err(err(db))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err(db))?;
    tx.commit().map_err(err(db))
}

/// A WAL above this size is cut by the release that leaves no lease: below
/// it, the checkpoint would cost more than the space it frees (a lone job
/// writes a few pages per start).
pub(crate) const QUIET_WAL_LIMIT: i64 = 64 << 10;

/// Copies the whole WAL into the database and cuts the WAL to 0 bytes.
/// For the release that leaves no lease behind: then no other runner is in
/// the middle of an operation (the caller holds the state lock, which every
/// reader takes too), and the WAL of a quiet host takes no space. A failure
/// costs only the space: it is logged.
pub(crate) fn checkpoint(conn: &Connection, db: &Path) {
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
    match done {
        Ok(0) => {}
        Ok(_) => log::debug!("{}: WAL checkpoint blocked by a reader; the WAL is cut later", db.display()),
        Err(e) => log::warn!("{}: WAL checkpoint failed: {e}", db.display()),
    }
}

/// `sql`'s one row, through the connection's statement cache: every
/// statement of a lease and its release goes through here or [`execute`],
/// so a connection parses each once (see [`STATEMENT_CACHE`]).
pub(crate) fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Runs `sql` through the statement cache (see [`query_row`]); returns the
/// number of rows it changed.
pub(crate) fn execute(conn: &Connection, sql: &str, params: impl Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// BEGIN IMMEDIATE: takes SQLite's write lock up front, because in WAL mode
/// a transaction that read first and writes later fails with SQLITE_BUSY
/// instead of waiting when another writer got in between.
pub(crate) fn write_tx<'c>(conn: &'c mut Connection, db: &Path) -> Result<Transaction<'c>, StateError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StateError::db(db))
}

fn user_version(conn: &Connection, db: &Path) -> Result<i64, StateError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(StateError::db(db))
}

fn check_version(db: &Path, found: i64) -> Result<(), StateError> {
    if found > SCHEMA_VERSION {
        return Err(StateError::SchemaTooNew { path: db.to_path_buf(), found, known: SCHEMA_VERSION });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (name, _)) in MIGRATIONS.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)), "{name} out of order");
        }
    }

    /// A fresh, migrated state.db in `dir`.
    fn migrated(dir: &tempfile::TempDir) -> (std::path::PathBuf, Connection) {
        let db = dir.path().join("state.db");
        let mut conn = connect(&db, true).unwrap();
        migrate(&mut conn, &db, true).unwrap();
        (db, conn)
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut conn) = migrated(&dir);
        migrate(&mut conn, &db, true).unwrap();
        assert_eq!(user_version(&conn, &db).unwrap(), SCHEMA_VERSION);
        drop(conn);
        connect(&db, false).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut conn) = migrated(&dir);
        conn.pragma_update(None, "user_version", 99).unwrap();
        let e = migrate(&mut conn, &db, false).unwrap_err().to_string();
        assert!(e.contains("schema version 99") && e.contains("upgrade repeatr"), "{e}");
    }
}
