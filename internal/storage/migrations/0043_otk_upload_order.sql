-- One-time keys are handed out oldest first (the order of upload), so a
-- client that uploads a fresh batch before the old one ran out does not
-- see its newest keys used while older ones linger.
ALTER TABLE one_time_keys ADD COLUMN uploaded_ts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX one_time_keys_age ON one_time_keys (user_id, device_id, algorithm, uploaded_ts, key_id);
