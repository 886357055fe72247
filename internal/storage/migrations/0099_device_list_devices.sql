-- Which device each device-list change was about, so that the
-- m.device_list_update EDUs to partners can name it, and say when it was
-- deleted (otherwise partners keep encrypting to a device that is gone).
-- device_id '' is a change of the user as a whole: cross-signing keys or
-- signatures on them, or a remote user's update recorded for local /sync.
-- Rows from before this migration are '' too.
ALTER TABLE device_list_changes ADD COLUMN device_id TEXT NOT NULL DEFAULT '';
ALTER TABLE device_list_changes ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE;
