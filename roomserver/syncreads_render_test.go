package roomserver

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAppendClientEventMatchesClientEvent(t *testing.T) {
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
			want := ClientEvent(&tc.e, tc.user, tc.dev, tc.now)
			got := AppendClientEvent(nil, &tc.e, tc.user, tc.dev, tc.now)
			var w, g any
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("AppendClientEvent produced invalid JSON %s: %v", got, err)
			}
			if !reflect.DeepEqual(w, g) {
				t.Errorf("AppendClientEvent = %s\nClientEvent       = %s", got, want)
			}
		})
	}
}

func BenchmarkClientEvent(b *testing.B) {
	e := &StoredEvent{EventID: "$abcdefghijklmnopqrstuvwxyz", RoomID: "!room:hs1.test", Type: "m.room.message", Sender: "@alice:hs1.test", OriginTS: 1000,
		JSON: []byte(`{"auth_events":["$a","$b","$c"],"content":{"body":"hello there","msgtype":"m.text"},"depth":12,"hashes":{"sha256":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"origin_server_ts":1000,"prev_events":["$p"],"room_id":"!room:hs1.test","sender":"@alice:hs1.test","signatures":{"hs1.test":{"ed25519:a":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}},"type":"m.room.message"}`)}
	b.Run("ClientEvent", func(b *testing.B) {
		for b.Loop() {
			ClientEvent(e, "", "", 2000)
		}
	})
	b.Run("AppendClientEvent", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendClientEvent(buf[:0], e, "", "", 2000)
		}
	})
}
