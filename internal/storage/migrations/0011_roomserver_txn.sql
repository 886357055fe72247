-- Client transaction IDs are scoped to the endpoint, and the room is part
-- of the endpoint's path: the same txnId sent into two rooms is two events.
DROP INDEX events_txn;
CREATE UNIQUE INDEX events_txn_room ON events (room_nid, sender, txn_device, txn_id);
