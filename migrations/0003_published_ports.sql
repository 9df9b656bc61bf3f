-- 0003: which job publishes which host port (`--publish`). See state-layout.md
-- ("published_ports"). Written in the lease transaction, so two runs asking
-- for one host port are decided under the state lock.

-- One row per published host port. A row whose job has no live lease is
-- stale: the next acquire or gc deletes it (and its nftables map element).
-- WITHOUT ROWID: the key is the table, one b-tree page written per change
-- instead of a table page and its key's index page.
CREATE TABLE published_ports (
    proto      TEXT    NOT NULL CHECK (proto IN ('tcp', 'udp')),
    host_port  INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
    job        TEXT    NOT NULL,               -- leases.job of the publisher
    bridge     TEXT    NOT NULL,               -- whose table holds the element
    ip         TEXT    NOT NULL,               -- the job's address, dotted quad
    job_port   INTEGER NOT NULL CHECK (job_port BETWEEN 1 AND 65535),
    PRIMARY KEY (proto, host_port)
) STRICT, WITHOUT ROWID;
