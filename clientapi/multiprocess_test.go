package clientapi_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/storage/storagetest"
)

// TestSyncWakesAcrossProcesses is the README's promise for several
// processes on one PostgreSQL database: a /sync long-poll on one process
// wakes when another process commits an event, through LISTEN/NOTIFY and
// not only through the one-second safety poll. Every one of the sends must
// arrive well within that second; by polling alone all of them would do so
// by chance with a probability of about 0.4 %.
func TestSyncWakesAcrossProcesses(t *testing.T) {
	if os.Getenv(storagetest.EnvPostgres) == "" {
		t.Skipf("needs PostgreSQL: %s not set", storagetest.EnvPostgres)
	}
	ctx := context.Background()
	dsn := storagetest.FreshPostgres(t)
	a := hstest.New(t, hstest.WithDatabase(dsn))
	b := hstest.New(t, hstest.WithDatabase(dsn), hstest.WithConfig(func(c *config.Config) {
		c.SigningKey = a.Config.SigningKey // one node: one server name, one key
	}))
	alice := a.Register(t, "alice")
	a.Register(t, "bob")
	bob := b.Login(t, "bob") // bob's session lives on the other process

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join through the second process: %v", err)
	}
	first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	since := first.NextBatch
	var worst time.Duration
	for i := range 8 {
		type result struct {
			ids  []id.EventID
			next string
			err  error
		}
		got := make(chan result, 1)
		go func() {
			resp, err := bob.SyncRequest(ctx, 10000, since, "", false, "")
			if err != nil {
				got <- result{err: err}
				return
			}
			var r result
			r.next = resp.NextBatch
			if j := resp.Rooms.Join[room.RoomID]; j != nil {
				for _, e := range j.Timeline.Events {
					if e.Type == event.EventMessage {
						r.ids = append(r.ids, e.ID)
					}
				}
			}
			got <- r
		}()
		time.Sleep(150 * time.Millisecond) // let the long-poll start waiting
		start := time.Now()
		sent, err := alice.SendText(ctx, room.RoomID, "wake up")
		if err != nil {
			t.Fatal(err)
		}
		r := <-got
		took := time.Since(start)
		if r.err != nil {
			t.Fatalf("sync %d: %v", i, r.err)
		}
		if !slices.Contains(r.ids, sent.EventID) {
			t.Fatalf("sync %d returned without the message sent on the other process (got %v)", i, r.ids)
		}
		worst = max(worst, took)
		since = r.next
	}
	if worst > 500*time.Millisecond {
		t.Fatalf("slowest cross-process wake-up took %v: the long-poll waited for the safety poll, not NOTIFY", worst)
	}
	t.Logf("slowest cross-process wake-up: %v", worst)
}
