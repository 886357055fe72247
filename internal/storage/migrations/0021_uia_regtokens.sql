-- User-interactive auth sessions and registration tokens, owned by
-- internal/users. UIA sessions live in the database so that a client's
-- retry reaching another process still finds its session (ARCHITECTURE §1.5).

CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    -- what the session authorises: register, password, deactivate, delete_devices, …
    purpose TEXT NOT NULL,
    -- the authenticated user for purposes other than register; '' otherwise
    user_id TEXT NOT NULL DEFAULT '',
    -- JSON array of completed stage types
    completed TEXT NOT NULL DEFAULT '[]',
    -- the registration token a register session has reserved, if any
    reg_token TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    -- NULL = unlimited
    uses_allowed BIGINT,
    -- registrations that completed the token stage but not yet the registration
    pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    -- milliseconds since the epoch; NULL = never expires
    expiry_time BIGINT
);
