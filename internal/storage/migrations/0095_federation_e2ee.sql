-- Federation side of E2EE, owned by federation/e2ee.go: how far along the
-- global stream our users' device-list changes have been queued as
-- m.device_list_update EDUs for the servers sharing rooms with them.
CREATE TABLE federation_device_list_outbound (
    name TEXT PRIMARY KEY,
    pos BIGINT NOT NULL
);
