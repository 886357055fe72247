-- Admin API and audit log, owned by internal/admin.

-- The audit log is append-only and hash-chained: each row's hash covers the
-- previous row's hash and the row's own canonical content, so editing,
-- deleting or reordering a row breaks every later hash. seq numbers rows
-- without gaps (a deleted row leaves a hole verification sees).
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    -- user ID of the admin, or a pseudo-actor such as "shared-secret"
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    -- canonical JSON of the non-secret parameters (never passwords or tokens)
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- the practice the action concerns ('' for node-wide actions), so a
    -- practice admin can be shown only their practice's entries
    practice TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_practice ON audit_log (practice, seq);

-- The chain head: appenders take its row lock (UPDATE … RETURNING), so
-- concurrent admin actions on several processes append one after another
-- instead of forking the chain. It also records the last hash, so that
-- truncating the log's tail is detected.
CREATE TABLE audit_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (only_row, seq, hash) VALUES (TRUE, 0, '');

-- Nonces of shared-secret registration (/_synapse/admin/v1/register): kept
-- in the database so that a nonce fetched from one process can be used on
-- another; each works once and only for a short while.
CREATE TABLE admin_register_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);
