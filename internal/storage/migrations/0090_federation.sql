-- Federation tables, owned by federation/keyring, federation/txn and
-- federation/sender (ARCHITECTURE §1.5: whatever a retry or a second
-- process could see lives in the database).

-- Other servers' verify keys as fetched (directly or through a notary).
-- A key is usable for signatures made up to valid_until_ts; a retired key
-- (old_verify_keys) has expired_ts set and verifies only what was signed
-- before it.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- unpadded base64 ed25519 public key
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    -- 0 while the key is current
    expired_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- Inbound transactions already processed, so that a retried PUT /send with
-- the same (origin, txn_id) gets the first answer and changes nothing.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    -- the JSON response sent the first time
    response TEXT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);

-- One row per destination the sender has ever sent to: how far along the
-- global stream it has delivered, its retry state and which process holds
-- it (several praxis processes on one Postgres must not double-send).
CREATE TABLE federation_destinations (
    server_name TEXT PRIMARY KEY,
    -- every event/EDU with a stream position ≤ sent_pos has been delivered
    sent_pos BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    -- unix ms before which no attempt is made (exponential backoff)
    retry_at_ts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until_ts BIGINT NOT NULL DEFAULT 0
);

-- EDUs waiting for one destination (typing, receipts, to-device, device
-- list updates), in the order they were queued. Rows go when delivered.
CREATE TABLE federation_outbound_edus (
    edu_nid @ID,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX federation_outbound_edus_dest ON federation_outbound_edus (destination, stream_pos);

-- Runtime changes to the partner allowlist (praxisctl federation
-- allow|deny). They override federation.allowed_servers from the config.
CREATE TABLE federation_allowlist (
    server_name TEXT PRIMARY KEY,
    allowed BOOLEAN NOT NULL,
    changed_by TEXT NOT NULL,
    changed_ts BIGINT NOT NULL
);
