-- The one global stream (ARCHITECTURE §1.3): every writer that produces
-- something a /sync, the federation sender or push must see takes its
-- position from this row as the last statement before commit.
CREATE TABLE stream_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    pos BIGINT NOT NULL
);
INSERT INTO stream_head (only_row, pos) VALUES (TRUE, 0);

-- Key/value facts about this node that must survive restarts.
CREATE TABLE server_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
