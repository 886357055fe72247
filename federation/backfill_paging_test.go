package federation_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// A late joiner pages /messages back through far more history than one
// backfill request carries (a join backfills 100 events, a /backfill
// answer holds at most 100): every page that reaches the start of what
// hs2 holds backfills the next batch from hs1, down to the create event.
// Page sizes that divide the backfill batches (50, 100) end pages exactly
// where hs2's history ends, the case where a page is full but the next
// one is empty until the backfill runs.
func TestMessagesBackfillPaging(t *testing.T) {
	for _, limit := range []int{30, 50, 100} {
		t.Run(fmt.Sprint("limit", limit), func(t *testing.T) {
			eachNetwork(t, func(t *testing.T, n *hstest.Network) {
				const total = 250
				bob, room := lateJoiner(t, n, total)
				got, last := pageBack(t, bob, room, limit)
				if len(got) != total {
					t.Fatalf("bob paged through %d messages, want %d", len(got), total)
				}
				for i, body := range got {
					if want := fmt.Sprint("m", total-1-i); body != want {
						t.Fatalf("message %d is %q, want %q (newest first)", i, body, want)
					}
				}
				if last != event.StateCreate {
					t.Fatalf("the last event paged is %v, want the create event", last)
				}
			})
		})
	}
}

// A partner unreachable while a client pages back costs that page its
// older history, not the room: once the partner is back, the next paging
// backfills again.
func TestMessagesBackfillAfterOutage(t *testing.T) {
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	const total = 130
	bob, room := lateJoiner(t, n, total)
	n.SetDown("hs1.test", true)
	if got, _ := pageBack(t, bob, room, 50); len(got) >= total {
		t.Fatalf("with hs1 down bob paged through %d messages, more than hs2 holds", len(got))
	}
	n.SetDown("hs1.test", false)
	if got, last := pageBack(t, bob, room, 50); len(got) != total || last != event.StateCreate {
		t.Fatalf("after the outage bob pages through %d messages ending at %v, want %d ending at the create event", len(got), last, total)
	}
}

// lateJoiner has alice@hs1 write total messages into a public room that
// bob@hs2 joins afterwards; it returns bob and the room.
func lateJoiner(t *testing.T, n *hstest.Network, total int) (*mautrix.Client, id.RoomID) {
	t.Helper()
	ctx := context.Background()
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < total; i++ {
		if _, err := alice.SendText(ctx, created.RoomID, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	return bob, created.RoomID
}

// pageBack pages c's /messages backwards to the end and returns the
// message bodies, newest first, and the type of the last event paged.
func pageBack(t *testing.T, c *mautrix.Client, room id.RoomID, limit int) (bodies []string, last event.Type) {
	t.Helper()
	from := ""
	for page := 0; page < 200; page++ {
		resp, err := c.Messages(context.Background(), room, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			last = ev.Type
			if ev.Type == event.EventMessage {
				bodies = append(bodies, ev.Content.Raw["body"].(string))
			}
		}
		if resp.End == "" {
			return bodies, last
		}
		from = resp.End
	}
	t.Fatal("paging does not end")
	return nil, last
}
