-- Lets /sync ask in one index probe whether any membership changed in a
-- stream window before computing device-list changes in detail.
CREATE INDEX room_members_stream ON room_members (stream_pos);
