-- Rooms, events and state, owned by roomserver (ARCHITECTURE §4).

CREATE TABLE rooms (
    room_nid @ID,
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    -- published in the local room directory (publicRooms)
    published BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL,
    -- state group of the room's current state; NULL until the create event
    current_state_group BIGINT,
    -- highest depth of any event, for building the next event
    max_depth BIGINT NOT NULL DEFAULT 0
);

-- Every event we hold. stream_pos orders events on the global stream (what
-- /sync tails); (depth, stream_pos) is the topological order /messages
-- pages through. Outliers (auth events fetched over federation, invites for
-- rooms we are not in) have stream_pos 0 and are never in a timeline.
CREATE TABLE events (
    event_nid @ID,
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL REFERENCES rooms(room_nid),
    type TEXT NOT NULL,
    -- NULL for message events; '' is a valid state key
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    -- the room state before this event (NULL for outliers)
    state_group_before BIGINT,
    -- the state after this event, when it is a state event
    state_group_after BIGINT,
    -- the exact signed JSON; redaction replaces it with the redacted form
    json TEXT NOT NULL,
    redacted_by TEXT,
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    rejected BOOLEAN NOT NULL DEFAULT FALSE,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    -- local sends: who sent it with which client txn ID (idempotency)
    txn_device TEXT,
    txn_id TEXT,
    -- m.relates_to, for /relations, /threads and bundled aggregations
    relates_to TEXT,
    rel_type TEXT
);
CREATE INDEX events_room_stream ON events (room_nid, stream_pos);
CREATE INDEX events_room_topo ON events (room_nid, depth, stream_pos);
CREATE INDEX events_stream ON events (stream_pos);
CREATE INDEX events_relates ON events (relates_to, rel_type);
CREATE UNIQUE INDEX events_txn ON events (sender, txn_device, txn_id);

-- prev_events edges; forward extremities are events no edge points to.
CREATE TABLE event_edges (
    event_nid BIGINT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_nid, prev_event_id)
);

CREATE TABLE forward_extremities (
    room_nid BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_nid, event_id)
);

-- State groups as delta chains: a group is its prev_group plus its own
-- entries (event_nid 0 removes a key). Every ~50 deltas a group is written
-- as a full snapshot (prev_group NULL) so reading state stays bounded.
CREATE TABLE state_groups (
    state_group @ID,
    room_nid BIGINT NOT NULL,
    prev_group BIGINT,
    chain_len BIGINT NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (state_group, type, state_key)
);

-- Materialised current state, updated in the same transaction as the event.
CREATE TABLE current_state (
    room_nid BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, type, state_key)
);

-- Materialised memberships (local and remote users) for hot reads: who is
-- in a room, which rooms a user is in, and since when (stream_pos of the
-- membership event).
CREATE TABLE room_members (
    room_nid BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    -- forgotten rooms disappear from the leave section of /sync
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id, membership);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
