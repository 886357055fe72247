package roomserver

import "encoding/json"

// StoredEvent is an event row as read from the events table: enough to
// render it for clients without parsing the PDU again.
type StoredEvent struct {
	NID       int64
	EventID   string
	RoomID    string
	Type      string
	StateKey  *string
	Sender    string
	Depth     int64
	OriginTS  int64
	StreamPos int64
	// JSON is the exact stored (signed, possibly redacted) event.
	JSON      []byte
	TxnDevice string
	TxnID     string
	// RedactedBy is the ID of the redaction that stripped this event.
	RedactedBy string
}

// ClientEvent renders e in the client format of the spec (ClientEvent):
// the federation-only keys are dropped, room_id is always present, and
// unsigned carries age and, for the device that sent it, transaction_id.
// viewerDeviceID is the reader's device, or "" for none.
func ClientEvent(e *StoredEvent, viewerUserID, viewerDeviceID string, nowMS int64) json.RawMessage {
	return AppendClientEvent(make([]byte, 0, len(e.JSON)+64), e, viewerUserID, viewerDeviceID, nowMS)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
