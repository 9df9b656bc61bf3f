-- 0002: a write counter, so that an allocation can trust the rows without
-- reading every sidecar. See state-layout.md ("state.gen").

-- One row per key; 'generation' counts the lease-changing commits made
-- through repeatr. The same number is written to the file state.gen after
-- each of them; a database whose count differs from the file's is not the
-- one the runners last wrote (restored from a copy, replaced), or a runner
-- died between its commit and the file write: the next allocation then
-- compares every sidecar with the rows before it trusts them.
CREATE TABLE meta (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

INSERT INTO meta (key, value) VALUES ('generation', 0);
