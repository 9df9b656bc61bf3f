-- 0004: whether a lease's job was named by its user (`--name`). Only named
-- jobs go into the /etc/hosts of the jobs started after them on their
-- bridge (state-layout.md, acquire step 6), and they are read through the
-- partial index below, which holds nothing else: a start next to 1000
-- anonymous jobs reads none of their rows (reading them all was 3% of the
-- host's CPU in a burst of 1000), and their random ids no longer fill every
-- job's /etc/hosts. Rows from before this migration stay listed, as they were.
ALTER TABLE leases ADD COLUMN named INTEGER NOT NULL DEFAULT 1 CHECK (named IN (0, 1));

-- Covering: the peers' query reads this index and no table row.
CREATE INDEX leases_named ON leases (bridge, slot, job, ip) WHERE named = 1;
