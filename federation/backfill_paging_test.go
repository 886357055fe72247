package federation_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

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
	for _, limit := range []int{40, 50, 100} {
		t.Run(fmt.Sprint("limit", limit), func(t *testing.T) {
			eachNetwork(t, func(t *testing.T, n *hstest.Network) { testMessagesBackfillPaging(t, n, limit) })
		})
	}
}

func testMessagesBackfillPaging(t *testing.T, n *hstest.Network, limit int) {
	ctx := context.Background()
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	const total = 250
	for i := 0; i < total; i++ {
		if _, err := alice.SendText(ctx, room, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	var got []string
	var types []event.Type
	from := ""
	for page := 0; page < 200; page++ {
		resp, err := bob.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			types = append(types, ev.Type)
			if ev.Type == event.EventMessage {
				got = append(got, ev.Content.Raw["body"].(string))
			}
		}
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	if len(got) != total {
		t.Fatalf("bob paged through %d messages, want %d", len(got), total)
	}
	for i, body := range got {
		if want := fmt.Sprint("m", total-1-i); body != want {
			t.Fatalf("message %d is %q, want %q (newest first)", i, body, want)
		}
	}
	if len(types) == 0 || types[len(types)-1] != event.StateCreate {
		t.Fatalf("the last event paged is %v, want the create event", types[len(types)-1:])
	}
}

// A partner unreachable while a client pages back costs that page its
// older history, not the room: once the partner is back, the next paging
// backfills again.
func TestMessagesBackfillAfterOutage(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	const total = 130
	for i := 0; i < total; i++ {
		if _, err := alice.SendText(ctx, room, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	pageAll := func() (msgs int, last event.Type) {
		from := ""
		for page := 0; page < 100; page++ {
			resp, err := bob.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				last = ev.Type
				if ev.Type == event.EventMessage {
					msgs++
				}
			}
			if resp.End == "" {
				return msgs, last
			}
			from = resp.End
		}
		t.Fatal("paging does not end")
		return 0, event.Type{}
	}
	n.SetDown("hs1.test", true)
	if got, _ := pageAll(); got >= total {
		t.Fatalf("with hs1 down bob paged through %d messages, more than hs2 holds", got)
	}
	n.SetDown("hs1.test", false)
	if got, last := pageAll(); got != total || last != event.StateCreate {
		t.Fatalf("after the outage bob pages through %d messages ending at %v, want %d ending at the create event", got, last, total)
	}
}
