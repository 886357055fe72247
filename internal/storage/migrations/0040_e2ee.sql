-- End-to-end encryption, owned by crypto/keyserver, crypto/todevice and
-- crypto/backup. The server stores public keys, signatures, opaque
-- to-device payloads and encrypted backups; it never holds anything that
-- could decrypt a message. Every *_json column holds the exact bytes the
-- client uploaded (signed JSON must never be re-encoded).

CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    -- the identity keys, to refuse a silent identity change on re-upload
    ed25519 TEXT NOT NULL,
    curve25519 TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm, replaced on upload and
-- marked used (not deleted) when handed out.
CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- key_type: master, self_signing, user_signing.
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the
-- target object when it is served. target_key is a device ID or a
-- cross-signing public key.
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key, signer_user_id, signer_key_id)
);

-- The device-list stream: one row per change of a user's devices or
-- cross-signing keys, at the change's stream position.
CREATE TABLE device_list_changes (
    id @ID,
    user_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX device_list_changes_pos ON device_list_changes (stream_pos);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_pos);

-- To-device inbox. Each message has its own stream position so that a
-- capped /sync can resume exactly after the last message it returned.
CREATE TABLE to_device_messages (
    id @ID,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX to_device_messages_inbox ON to_device_messages (user_id, device_id, stream_pos);

-- Sent to-device transactions, so a retried PUT delivers nothing twice.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Server-side key backup. Versions are numbered per user and never
-- reused; a deleted version keeps its row (deleted = TRUE) so the next
-- version number stays higher.
CREATE TABLE backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    -- bumped on every change of the version's keys
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
