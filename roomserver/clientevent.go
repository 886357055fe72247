package roomserver

import (
	"encoding/json"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

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
// viewerDevice is "user_id|device_id" of the reader, or "" for none.
func ClientEvent(e *StoredEvent, viewerUserID, viewerDeviceID string, nowMS int64) json.RawMessage {
	out := []byte(`{}`)
	src := gjson.ParseBytes(e.JSON)
	set := func(key string, raw string) {
		out, _ = sjson.SetRawBytes(out, key, []byte(raw))
	}
	set("content", rawOr(src.Get("content"), "{}"))
	out, _ = sjson.SetBytes(out, "event_id", e.EventID)
	out, _ = sjson.SetBytes(out, "origin_server_ts", e.OriginTS)
	out, _ = sjson.SetBytes(out, "room_id", e.RoomID)
	out, _ = sjson.SetBytes(out, "sender", e.Sender)
	out, _ = sjson.SetBytes(out, "type", e.Type)
	if e.StateKey != nil {
		out, _ = sjson.SetBytes(out, "state_key", *e.StateKey)
	}
	if r := src.Get("redacts"); r.Exists() {
		set("redacts", r.Raw)
	} else if r := src.Get("content.redacts"); r.Exists() && e.Type == "m.room.redaction" {
		// v11+ moved redacts into content; older clients read the top level.
		set("redacts", r.Raw)
	}
	unsigned := []byte(`{}`)
	if u := src.Get("unsigned"); u.IsObject() {
		u.ForEach(func(k, v gjson.Result) bool {
			// only the keys the spec defines for clients
			switch k.String() {
			case "prev_content", "replaces_state", "invite_room_state", "knock_room_state", "prev_sender":
				unsigned, _ = sjson.SetRawBytes(unsigned, k.String(), []byte(v.Raw))
			}
			return true
		})
		if rs := src.Get("unsigned.replaces_state"); rs.Exists() && e.StateKey != nil {
			unsigned, _ = sjson.SetRawBytes(unsigned, "replaces_state", []byte(rs.Raw))
		}
	}
	if nowMS > 0 {
		unsigned, _ = sjson.SetBytes(unsigned, "age", max(nowMS-e.OriginTS, 0))
	}
	if e.TxnID != "" && viewerDeviceID != "" && e.Sender == viewerUserID && e.TxnDevice == viewerDeviceID {
		unsigned, _ = sjson.SetBytes(unsigned, "transaction_id", e.TxnID)
	}
	if e.RedactedBy != "" {
		unsigned, _ = sjson.SetRawBytes(unsigned, "redacted_because", mustJSON(map[string]string{"event_id": e.RedactedBy}))
	}
	set("unsigned", string(unsigned))
	return out
}

func rawOr(r gjson.Result, def string) string {
	if !r.Exists() {
		return def
	}
	return r.Raw
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
