package roomserver

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

func TestAppendClientEventMatchesReference(t *testing.T) {
	sk, empty := "@bob:hs", ""
	for _, tc := range []struct {
		name string
		e    StoredEvent
		user string
		dev  string
		now  int64
	}{
		{"message", StoredEvent{EventID: "$a", RoomID: "!r:hs", Type: "m.room.message", Sender: "@alice:hs", OriginTS: 1000,
			JSON: []byte(`{"content":{"body":"hi \"there\"","msgtype":"m.text"},"hashes":{},"signatures":{},"depth":3}`)}, "", "", 0},
		{"own message with txn", StoredEvent{EventID: "$a", RoomID: "!r:hs", Type: "m.room.message", Sender: "@alice:hs", OriginTS: 1000,
			TxnDevice: "DEV", TxnID: "t1", JSON: []byte(`{"content":{"body":"x"}}`)}, "@alice:hs", "DEV", 5000},
		{"other device sees no txn", StoredEvent{EventID: "$a", RoomID: "!r:hs", Type: "m.room.message", Sender: "@alice:hs", OriginTS: 1000,
			TxnDevice: "DEV", TxnID: "t1", JSON: []byte(`{"content":{"body":"x"}}`)}, "@alice:hs", "OTHER", 5000},
		{"state with unsigned", StoredEvent{EventID: "$m", RoomID: "!r:hs", Type: "m.room.member", StateKey: &sk, Sender: "@bob:hs", OriginTS: 7,
			JSON: []byte(`{"content":{"membership":"join"},"unsigned":{"prev_content":{"membership":"invite"},"replaces_state":"$p","secret":1,"invite_room_state":[{"type":"m.room.name"}]}}`)}, "", "", 9},
		{"empty state key, no content", StoredEvent{EventID: "$c", RoomID: "!r:hs", Type: "m.room.create", StateKey: &empty, Sender: "@a:hs", JSON: []byte(`{}`)}, "", "", 0},
		{"redaction v11", StoredEvent{EventID: "$x", RoomID: "!r:hs", Type: "m.room.redaction", Sender: "@a:hs",
			JSON: []byte(`{"content":{"redacts":"$t","reason":"r"}}`)}, "", "", 0},
		{"redaction v1", StoredEvent{EventID: "$x", RoomID: "!r:hs", Type: "m.room.redaction", Sender: "@a:hs",
			JSON: []byte(`{"content":{},"redacts":"$t"}`)}, "", "", 0},
		{"redacted", StoredEvent{EventID: "$x", RoomID: "!r:hs", Type: "m.room.message", Sender: "@a:hs", RedactedBy: "$red",
			JSON: []byte(`{"content":{}}`)}, "", "", 0},
		{"unicode and control characters", StoredEvent{EventID: "$ü\n", RoomID: "!r:hs", Type: "m.room.message", Sender: "@ä:hs",
			JSON: []byte(`{"content":{"body":"😀"}}`)}, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := referenceClientEvent(&tc.e, tc.user, tc.dev, tc.now)
			got := AppendClientEvent(nil, &tc.e, tc.user, tc.dev, tc.now)
			var w, g any
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("AppendClientEvent produced invalid JSON %s: %v", got, err)
			}
			if !reflect.DeepEqual(w, g) {
				t.Errorf("AppendClientEvent = %s\nreference         = %s", got, want)
			}
		})
	}
}

func BenchmarkClientEvent(b *testing.B) {
	e := &StoredEvent{EventID: "$abcdefghijklmnopqrstuvwxyz", RoomID: "!room:hs1.test", Type: "m.room.message", Sender: "@alice:hs1.test", OriginTS: 1000,
		JSON: []byte(`{"auth_events":["$a","$b","$c"],"content":{"body":"hello there","msgtype":"m.text"},"depth":12,"hashes":{"sha256":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"origin_server_ts":1000,"prev_events":["$p"],"room_id":"!room:hs1.test","sender":"@alice:hs1.test","signatures":{"hs1.test":{"ed25519:a":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}},"type":"m.room.message"}`)}
	b.Run("reference", func(b *testing.B) {
		for b.Loop() {
			referenceClientEvent(e, "", "", 2000)
		}
	})
	b.Run("AppendClientEvent", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendClientEvent(buf[:0], e, "", "", 2000)
		}
	})
}

// referenceClientEvent is the first, key-by-key rendering of a client
// event (one sjson edit per key): slow, but plainly what the spec says,
// so the fast renderer is checked against it.
// It renders e in the client format of the spec (ClientEvent):
// the federation-only keys are dropped, room_id is always present, and
// unsigned carries age and, for the device that sent it, transaction_id.
// viewerDevice is "user_id|device_id" of the reader, or "" for none.
func referenceClientEvent(e *StoredEvent, viewerUserID, viewerDeviceID string, nowMS int64) json.RawMessage {
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
