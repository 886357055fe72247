-- Presence changes take a position on the global stream so that /sync can
-- send them to users who share a room (presence.enabled only).
ALTER TABLE presence ADD COLUMN stream_pos BIGINT NOT NULL DEFAULT 0;
CREATE INDEX presence_stream ON presence (stream_pos);
