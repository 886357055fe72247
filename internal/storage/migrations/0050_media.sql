-- Media repository, owned by internal/media.

-- One row per stored file. Files live on disk under media/content, named by
-- the hex SHA-256 of their bytes, so identical uploads share one file. The
-- row is the lock that serialises "is this file still referenced?" with
-- uploads of the same bytes.
CREATE TABLE media_content (
    content_hash TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- One row per media ID. origin is our server name for local media; remote
-- media cached over federation will use the remote server's name.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    content_type TEXT NOT NULL DEFAULT '',
    upload_name TEXT NOT NULL DEFAULT '',
    -- NULL while an asynchronous upload (POST /create) is still pending
    content_hash TEXT,
    size BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT NOT NULL DEFAULT 0,
    -- a pending ID that is not uploaded by then is forgotten
    unused_expires_ts BIGINT NOT NULL DEFAULT 0,
    last_access_ts BIGINT NOT NULL DEFAULT 0,
    quarantined_by TEXT,
    quarantined_ts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_user ON media (user_id, created_ts);
CREATE INDEX media_hash ON media (content_hash);
CREATE INDEX media_created ON media (created_ts);
CREATE INDEX media_last_access ON media (last_access_ts);

-- Thumbnails, generated on first request and kept; their bytes are stored
-- content-addressed like the originals.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_hash ON media_thumbnails (content_hash);
