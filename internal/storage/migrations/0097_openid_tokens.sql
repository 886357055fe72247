-- OpenID tokens (client /user/{userId}/openid/request_token, checked by
-- third parties through federation /openid/userinfo), owned by
-- federation/query_openid.go. Only the SHA-256 of a token is stored.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
