-- A coupling code given at registration (the m.login.registration_token
-- stage), kept with its register session until the account it admits
-- exists and is coupled. Only the code's hash, as everywhere.
CREATE TABLE care_registration_codes (
    session_id TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL REFERENCES care_codes (code_hash),
    created_ts BIGINT NOT NULL
);
