-- The care domain, owned by internal/care: practices, staff, coupling
-- codes, couplings, the request board and absence notices. Nothing but
-- routing data: no message content, no health data.

CREATE TABLE care_practices (
    -- short slug chosen by the admin ("mueller"); the service account is
    -- @praxis-<practice_id>:<server>
    practice_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    emergency_phone TEXT NOT NULL DEFAULT '',
    bsnr TEXT NOT NULL DEFAULT '',
    logo_url TEXT NOT NULL DEFAULT '',
    service_user TEXT NOT NULL UNIQUE,
    -- the staff-only request board room
    board_room TEXT NOT NULL DEFAULT '',
    -- JSON: {"mon": [["08:00","12:00"], ...], ...}; '' = always open
    opening_hours TEXT NOT NULL DEFAULT '',
    timezone TEXT NOT NULL DEFAULT 'Europe/Berlin',
    created_ts BIGINT NOT NULL
);

CREATE TABLE care_staff (
    user_id TEXT PRIMARY KEY,
    practice_id TEXT NOT NULL REFERENCES care_practices (practice_id),
    -- admin | doctor | assistant
    role TEXT NOT NULL,
    -- on-duty staff are invited into new coupling rooms
    on_duty BOOLEAN NOT NULL DEFAULT TRUE,
    added_ts BIGINT NOT NULL
);
CREATE INDEX care_staff_practice ON care_staff (practice_id);

-- Coupling codes are stored as SHA-256 hashes: the code in the QR is a
-- credential (a one-time code identifies a patient), a database dump must
-- not hand it out. code_id is a short non-secret handle for listing.
CREATE TABLE care_codes (
    code_hash TEXT PRIMARY KEY,
    code_id TEXT NOT NULL UNIQUE,
    practice_id TEXT NOT NULL REFERENCES care_practices (practice_id),
    -- patient (single use, verified) | practice (reusable, unverified)
    kind TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- 0 = never expires
    expires_ts BIGINT NOT NULL DEFAULT 0,
    uses BIGINT NOT NULL DEFAULT 0,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX care_codes_practice ON care_codes (practice_id);

-- One row per coupling room: a patient and a practice; never shared by
-- several patients.
CREATE TABLE care_couplings (
    room_id TEXT PRIMARY KEY,
    practice_id TEXT NOT NULL REFERENCES care_practices (practice_id),
    patient TEXT NOT NULL,
    verified BOOLEAN NOT NULL,
    -- patient_code | practice_code
    method TEXT NOT NULL,
    code_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    verified_ts BIGINT NOT NULL DEFAULT 0,
    verified_by TEXT NOT NULL DEFAULT '',
    -- set when the patient leaves (un-couples); 0 = active
    ended_ts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX care_couplings_patient ON care_couplings (patient, practice_id);
CREATE INDEX care_couplings_practice ON care_couplings (practice_id);

-- The request board: one entry per coupling room with an open, claimed or
-- closed request. The first claim wins (UPDATE … WHERE status = 'open').
CREATE TABLE care_requests (
    room_id TEXT PRIMARY KEY REFERENCES care_couplings (room_id),
    practice_id TEXT NOT NULL,
    -- open | claimed | closed
    status TEXT NOT NULL,
    claimed_by TEXT NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL,
    claimed_ts BIGINT NOT NULL DEFAULT 0,
    closed_ts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX care_requests_practice ON care_requests (practice_id, status);

-- Absences (holidays, training days): the practice is closed between
-- start_ts and end_ts whatever its opening hours say.
CREATE TABLE care_absences (
    absence_id @ID,
    practice_id TEXT NOT NULL REFERENCES care_practices (practice_id),
    start_ts BIGINT NOT NULL,
    end_ts BIGINT NOT NULL,
    -- shown to patients ("Urlaub"); no health data
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX care_absences_practice ON care_absences (practice_id, end_ts);

-- Closed-period notices already sent: one per coupling room and closed
-- period (period = the time the practice opens again).
CREATE TABLE care_notices (
    room_id TEXT NOT NULL,
    reopens_ts BIGINT NOT NULL,
    sent_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, reopens_ts)
);
