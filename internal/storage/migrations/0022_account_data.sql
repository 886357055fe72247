-- Account data, filters, push rules, pushers and presence, owned by
-- internal/users.

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    -- '' = global account data
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    filter_id @ID,
    user_id TEXT NOT NULL,
    filter TEXT NOT NULL
);
CREATE INDEX filters_user ON filters (user_id);

-- A user's own push rules (kinds override, content, room, sender, underride).
-- ord orders rules within a kind; lower comes first.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    ord BIGINT NOT NULL,
    -- JSON: conditions array (override/underride) or NULL
    conditions TEXT,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- Changes a user made to a server-default rule; NULL keeps the default.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, rule_id)
);

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    -- the whole pusher as the client sent it (kind, data, lang, …)
    pusher TEXT NOT NULL,
    device_id TEXT NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app ON pushers (app_id, pushkey);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    presence TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL
);
