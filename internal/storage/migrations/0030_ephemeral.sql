-- Typing notifications and read receipts, owned by internal/ephemeral.
-- Both live in the database (ARCHITECTURE §1.5) so that every process of a
-- deployment sees the same set, and both take positions on the global
-- stream so that /sync and the federation sender see changes in order.

-- One row per (room, user) that is or recently was typing. Stopping (or
-- expiring) keeps the row with expires_ts 0 and a new stream position, so
-- a syncing client learns that the user stopped.
CREATE TABLE typing (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- unix ms at which the notification lapses; 0 = not typing
    expires_ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX typing_stream ON typing (stream_pos);

-- The latest receipt of each type per (room, user, thread). thread_id is ''
-- for an unthreaded receipt. event_stream_pos is the receipted event's
-- position, which unread counts compare against without a join.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_pos BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_pos);
CREATE INDEX receipts_user ON receipts (user_id, room_id);
