-- Keys of other servers' users, cached by federation/e2ee_cache.go so
-- that a partner that is briefly offline does not stop local clients
-- from encrypting to its users' known devices. Kept current with the
-- partner's m.device_list_update / m.signing_key_update EDUs; a gap in
-- their prev_id (or a failed update) triggers a resync via /user/devices.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    -- the partner's device-list stream_id we are at; 0 when unknown
    -- (the cache was filled by /user/keys/query)
    stream_id BIGINT NOT NULL,
    stale BOOLEAN NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- The exact signed JSON the partner sent.
CREATE TABLE remote_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    -- master | self_signing
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
