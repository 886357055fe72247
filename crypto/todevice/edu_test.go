package todevice

import (
	"context"
	"encoding/json"
	"testing"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func TestDirectToDeviceEDU(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, nil, "hs.test")
		if _, err := db.Exec(ctx, `INSERT INTO devices (user_id, device_id, created_ts, last_seen_ts) VALUES ($1, 'B1', 0, 0)`, bob); err != nil {
			t.Fatal(err)
		}
		edu := json.RawMessage(`{"sender":"@r:remote.test","type":"m.room.encrypted","message_id":"m1",
			"messages":{"@bob:hs.test":{"*":{"ciphertext":"x"}},"@other:elsewhere.test":{"*":{}}}}`)
		for i := 0; i < 2; i++ { // a retried transaction
			if err := s.HandleDirectToDeviceEDU(ctx, "remote.test", edu); err != nil {
				t.Fatal(err)
			}
		}
		head, _ := db.StreamHead(ctx)
		msgs, _, err := s.ToDevice(ctx, bob, "B1", 0, head, 10)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("delivered %d messages (%v), want 1", len(msgs), err)
		}
		if err := s.HandleDirectToDeviceEDU(ctx, "evil.test", edu); err == nil {
			t.Fatal("a server sent to-device messages as another server's user")
		}
	})
}
