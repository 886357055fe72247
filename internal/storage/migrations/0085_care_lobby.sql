-- A coupling code's lobby: the room ID its alias resolves to for clients
-- that look an alias up before they join (GET /directory/room/#couple-…).
-- The lobby is derived from the code; like the code, only its hash is
-- kept, so a copy of the database cannot redeem codes. NULL until the
-- code is first created or resolved (codes made before this migration).
ALTER TABLE care_codes ADD COLUMN lobby_hash TEXT;
CREATE UNIQUE INDEX care_codes_lobby ON care_codes (lobby_hash);
