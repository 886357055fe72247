package clientapi_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"praxis/internal/hstest"
	"praxis/roomserver"
)

// BenchmarkSync measures the sync targets on SQLite: an initial
// sync of 100 rooms with 20 messages each (target ≤ 100 ms) and an empty
// incremental sync (target ≤ 2 ms).
func BenchmarkSync(b *testing.B) {
	srv := hstest.New(b)
	ctx := context.Background()
	alice := srv.Register(b, "alice")
	for r := range 100 {
		res, err := srv.Rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{Creator: string(alice.UserID), RoomVersion: "10",
			Preset: roomserver.PresetPrivateChat})
		if err != nil {
			b.Fatal(err)
		}
		for i := range 20 {
			if _, err := srv.Rooms.Send(ctx, roomserver.SendRequest{RoomID: res.RoomID, Sender: string(alice.UserID),
				Type: "m.room.message", Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"room %d message %d"}`, r, i))}); err != nil {
				b.Fatal(err)
			}
		}
	}
	tb := &testing.T{}
	_ = tb
	var since string
	b.Run("initial-100x20", func(b *testing.B) {
		for b.Loop() {
			resp, err := syncErr(alice, map[string]string{"filter": `{"room":{"timeline":{"limit":20}}}`})
			if err != nil {
				b.Fatal(err)
			}
			if n := len(resp.Get("rooms.join").Map()); n != 100 {
				b.Fatalf("%d rooms", n)
			}
			since = resp.Get("next_batch").String()
		}
	})
	b.Run("empty-incremental", func(b *testing.B) {
		for b.Loop() {
			if _, err := syncErr(alice, map[string]string{"since": since}); err != nil {
				b.Fatal(err)
			}
		}
	})
	_ = time.Second
}
