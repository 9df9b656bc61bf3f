-- 0001: leases and the round-robin position. Applied by src/state/schema.rs
-- inside BEGIN IMMEDIATE when PRAGMA user_version < 1; see state-layout.md.

-- One row per job holding an address. The row is the allocator's view; the
-- truth about whether its runner is alive is the slot lock file
-- slots/{bridge}/{slot}.lock (see state-layout.md).
CREATE TABLE leases (
    job         TEXT    NOT NULL PRIMARY KEY,
    bridge      TEXT    NOT NULL,
    subnet      TEXT    NOT NULL,              -- canonical CIDR the ip was picked from
    ip          TEXT    NOT NULL UNIQUE,       -- dotted quad; unique across bridges
    gateway     TEXT    NOT NULL,
    slot        INTEGER NOT NULL CHECK (slot BETWEEN 0 AND 1022),
    iface       TEXT    NOT NULL,              -- host veth name, {bridge}-{slot}
    pid         INTEGER NOT NULL,
    start_time  INTEGER NOT NULL,              -- /proc/PID/stat field 22, clock ticks
    boot_id     TEXT    NOT NULL,
    command     TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,              -- RFC 3339, UTC
    UNIQUE (bridge, slot)
) STRICT;

-- Where round-robin allocation resumes on each bridge: the last address
-- handed out. Ignored when it is not inside the subnet of the request.
CREATE TABLE last_ip (
    bridge TEXT NOT NULL PRIMARY KEY,
    ip     TEXT NOT NULL
) STRICT;
