package todevice

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tidwall/gjson"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

const alice, bob = "@alice:hs.test", "@bob:hs.test"

func TestSendDeliverAck(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		n := streams.NewNotifier(0)
		s := New(db, n, "hs.test")
		for _, d := range []string{"B1", "B2", "B3"} {
			if _, err := db.Exec(ctx, `INSERT INTO devices (user_id, device_id, created_ts, last_seen_ts) VALUES ($1, $2, 0, 0)`, bob, d); err != nil {
				t.Fatal(err)
			}
		}
		msg := map[string]map[string]json.RawMessage{bob: {"*": json.RawMessage(`{"n":1}`)}}
		if err := s.Send(ctx, alice, "A1", "m.test", "txn1", msg); err != nil {
			t.Fatal(err)
		}
		// The retried transaction delivers nothing new.
		if err := s.Send(ctx, alice, "A1", "m.test", "txn1", msg); err != nil {
			t.Fatal(err)
		}
		head, _ := db.StreamHead(ctx)
		if n.Position() != head {
			t.Fatalf("notifier at %d, stream head %d", n.Position(), head)
		}
		for _, d := range []string{"B1", "B2", "B3"} {
			msgs, next, err := s.ToDevice(ctx, bob, d, 0, head, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 1 || next != head {
				t.Fatalf("%s: %d messages next %d, want 1 message next %d", d, len(msgs), next, head)
			}
			m := gjson.ParseBytes(msgs[0])
			if m.Get("sender").String() != alice || m.Get("type").String() != "m.test" || m.Get("content.n").Int() != 1 {
				t.Fatalf("%s: message = %s", d, msgs[0])
			}
		}
		// A capped read returns the oldest first and resumes after them.
		since := head
		for i := 0; i < 5; i++ {
			if err := s.Send(ctx, alice, "A1", "m.test", fmt.Sprintf("t%d", i), map[string]map[string]json.RawMessage{bob: {"B1": json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}}); err != nil {
				t.Fatal(err)
			}
		}
		head, _ = db.StreamHead(ctx)
		msgs, next, err := s.ToDevice(ctx, bob, "B1", since, head, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 3 || next >= head || gjson.GetBytes(msgs[2], "content.i").Int() != 2 {
			t.Fatalf("capped read: %d messages next %d (head %d)", len(msgs), next, head)
		}
		// Not acknowledged yet: reading from the old position again gets them again.
		again, _, _ := s.ToDevice(ctx, bob, "B1", since, head, 3)
		if len(again) != 3 {
			t.Fatalf("re-read before ack: %d messages", len(again))
		}
		if err := s.AckToDevice(ctx, bob, "B1", next); err != nil {
			t.Fatal(err)
		}
		rest, next2, _ := s.ToDevice(ctx, bob, "B1", 0, head, 10)
		if len(rest) != 2 || next2 != head || gjson.GetBytes(rest[0], "content.i").Int() != 3 {
			t.Fatalf("after ack: %d messages next %d", len(rest), next2)
		}
		// A device that does not exist gets nothing stored.
		if err := s.Send(ctx, alice, "A1", "m.test", "ghost", map[string]map[string]json.RawMessage{bob: {"GHOST": json.RawMessage(`{}`)}, "@nobody:hs.test": {"*": json.RawMessage(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		var ghosts int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM to_device_messages WHERE device_id = 'GHOST' OR user_id = '@nobody:hs.test'`).Scan(&ghosts)
		if ghosts != 0 {
			t.Fatalf("%d messages stored for devices that do not exist", ghosts)
		}
		// Deleting a device drops its inbox.
		if err := db.Transact(ctx, func(tx *storage.DB) error { return s.DeleteDevices(ctx, tx, bob, []string{"B2"}) }); err != nil {
			t.Fatal(err)
		}
		if gone, _, _ := s.ToDevice(ctx, bob, "B2", 0, head, 10); len(gone) != 0 {
			t.Fatalf("deleted device still has %d messages", len(gone))
		}
	})
}

func TestSendRejectsBadInput(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, nil, "hs.test")
		for _, tc := range []struct {
			name string
			msgs map[string]map[string]json.RawMessage
		}{
			{"not a user", map[string]map[string]json.RawMessage{"bob": {"B1": json.RawMessage(`{}`)}}},
			{"content not an object", map[string]map[string]json.RawMessage{bob: {"B1": json.RawMessage(`"x"`)}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := s.Send(ctx, alice, "A1", "m.test", tc.name, tc.msgs); err == nil {
					t.Fatal("accepted")
				}
				var n int
				db.QueryRow(ctx, `SELECT COUNT(*) FROM to_device_messages`).Scan(&n)
				if n != 0 {
					t.Fatalf("%d messages stored", n)
				}
			})
		}
	})
}
