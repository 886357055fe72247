package roomserver

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage/storagetest"
)

// FuzzSendContent: whatever a client sends as content, Send either
// refuses it with a client error (4xx) and writes nothing, or stores an
// event whose content means the same JSON.
func FuzzSendContent(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"body":"hi","msgtype":"m.text"}`, `{"n":1.5e3}`, `{"a":[1,{"b":null}]}`, `{"big":12345678901234567890}`,
		`{"x":"\u0000\ud800"}`, `{"dup":1,"dup":2}`, `[]`, `"str"`, `{"m.relates_to":{"event_id":"$x","rel_type":"m.thread"}}`,
	} {
		f.Add([]byte(seed))
	}
	db := storagetest.Open(f, "sqlite:"+f.TempDir()+"/fuzz.db")
	s := newTestService(&testing.T{}, db)
	ctx := context.Background()
	res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		before, _ := db.StreamHead(ctx)
		id, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message", Content: content})
		if err != nil {
			if st := httputil.ToError(err).Status; st < 400 || st >= 500 {
				t.Fatalf("content %q: status %d (%v), want a client error", content, st, err)
			}
			if after, _ := db.StreamHead(ctx); after != before {
				t.Fatalf("refused content %q moved the stream", content)
			}
			return
		}
		var js string
		if err := db.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1`, id).Scan(&js); err != nil {
			t.Fatal(err)
		}
		var want, got any
		if json.Unmarshal(content, &want) != nil {
			t.Fatalf("accepted content %q that is not JSON", content)
		}
		if err := json.Unmarshal([]byte(gjson.Get(js, "content").Raw), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("content %q stored as %s", content, gjson.Get(js, "content").Raw)
		}
	})
}
