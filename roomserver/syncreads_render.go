package roomserver

import (
	"encoding/json"
	"strconv"

	"github.com/tidwall/gjson"
)

// AppendClientEvent appends to dst what ClientEvent returns for e, built in
// one pass over the stored JSON instead of one sjson edit (and re-parse)
// per key: an initial /sync renders thousands of events, and this is its
// hottest loop. TestAppendClientEventMatchesClientEvent keeps the two
// identical.
func AppendClientEvent(dst []byte, e *StoredEvent, viewerUserID, viewerDeviceID string, nowMS int64) []byte {
	var content, redacts, contentRedacts, unsigned gjson.Result
	gjson.ParseBytes(e.JSON).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "content":
			content = v
		case "redacts":
			redacts = v
		case "unsigned":
			unsigned = v
		}
		return true
	})
	dst = append(dst, `{"content":`...)
	if content.Exists() {
		dst = append(dst, content.Raw...)
		if e.Type == "m.room.redaction" && !redacts.Exists() {
			contentRedacts = content.Get("redacts")
		}
	} else {
		dst = append(dst, `{}`...)
	}
	dst = append(dst, `,"event_id":`...)
	dst = appendJSONString(dst, e.EventID)
	dst = append(dst, `,"origin_server_ts":`...)
	dst = strconv.AppendInt(dst, e.OriginTS, 10)
	dst = append(dst, `,"room_id":`...)
	dst = appendJSONString(dst, e.RoomID)
	dst = append(dst, `,"sender":`...)
	dst = appendJSONString(dst, e.Sender)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, e.Type)
	if e.StateKey != nil {
		dst = append(dst, `,"state_key":`...)
		dst = appendJSONString(dst, *e.StateKey)
	}
	if redacts.Exists() {
		dst = append(dst, `,"redacts":`...)
		dst = append(dst, redacts.Raw...)
	} else if contentRedacts.Exists() {
		dst = append(dst, `,"redacts":`...)
		dst = append(dst, contentRedacts.Raw...)
	}
	dst = append(dst, `,"unsigned":{`...)
	first := true
	key := func(k string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
	}
	if unsigned.IsObject() {
		seen := map[string]bool{}
		unsigned.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "prev_content", "replaces_state", "invite_room_state", "knock_room_state", "prev_sender":
				if !seen[k.Str] {
					seen[k.Str] = true
					key(k.Str)
					dst = append(dst, v.Raw...)
				}
			}
			return true
		})
	}
	if nowMS > 0 {
		key("age")
		dst = strconv.AppendInt(dst, max(nowMS-e.OriginTS, 0), 10)
	}
	if e.TxnID != "" && viewerDeviceID != "" && e.Sender == viewerUserID && e.TxnDevice == viewerDeviceID {
		key("transaction_id")
		dst = appendJSONString(dst, e.TxnID)
	}
	if e.RedactedBy != "" {
		key("redacted_because")
		dst = append(dst, `{"event_id":`...)
		dst = appendJSONString(dst, e.RedactedBy)
		dst = append(dst, '}')
	}
	return append(dst, `}}`...)
}

// appendJSONString appends s as a JSON string: printable ASCII directly,
// anything else through encoding/json (which also repairs invalid UTF-8).
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
