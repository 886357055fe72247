package roomserver

import (
	"encoding/json"
	"testing"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

// Send looks a client transaction up only inside the commit (or when
// building fails), not before building: a retry must still answer with its
// own first event where building a new one would fail or find other state.
func TestSendRetryAnswersWithTheFirstEvent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, bob, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		empty := ""
		send := func(sender, evType string, stateKey *string, content, txn string) (string, error) {
			return s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: sender, Type: evType, StateKey: stateKey,
				Content: json.RawMessage(content), TxnDevice: "D", TxnID: txn})
		}

		msg, err := send(bob, "m.room.message", nil, `{"msgtype":"m.text","body":"bye"}`, "m1")
		if err != nil {
			t.Fatal(err)
		}
		topic1, err := send(alice, "m.room.topic", &empty, `{"topic":"A"}`, "t1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := send(alice, "m.room.topic", &empty, `{"topic":"B"}`, "t2"); err != nil {
			t.Fatal(err)
		}
		topic3, err := send(alice, "m.room.topic", &empty, `{"topic":"A"}`, "t3")
		if err != nil {
			t.Fatal(err)
		}
		if topic3 == topic1 {
			t.Fatalf("topic A set again after B returned the first event")
		}
		if err := s.Leave(ctx, bob, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}

		for _, tc := range []struct {
			name                string
			sender, evType, txn string
			stateKey            *string
			content, want       string
		}{
			{"message retried after the sender left", bob, "m.room.message", "m1", nil, `{"msgtype":"m.text","body":"bye"}`, msg},
			{"state retried when the same content is current again", alice, "m.room.topic", "t1", &empty, `{"topic":"A"}`, topic1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := send(tc.sender, tc.evType, tc.stateKey, tc.content, tc.txn)
				if err != nil {
					t.Fatalf("retry: %v, want the first event %s", err, tc.want)
				}
				if got != tc.want {
					t.Errorf("retry answered %s, want the first event %s", got, tc.want)
				}
			})
		}
	})
}
