-- Dehydrated devices (MSC3814), owned by crypto/keyserver: one per user,
-- an offline device whose private keys the client stored encrypted (with
-- a key only the user holds) in device_data. Other clients encrypt room
-- keys to it like to any device; the user's next login rehydrates it and
-- reads its to-device inbox. The server cannot open device_data.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL
);
