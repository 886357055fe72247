package federation_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"praxis/internal/hstest"
)

// hs2 goes down, hs1 keeps queueing, hs2 comes back and receives
// everything in order; meanwhile both sides also write concurrently, so
// the rooms fork and merge.
func TestPartnerOfflineCatchesUpInOrder(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testPartnerOfflineCatchesUpInOrder)
}

func testPartnerOfflineCatchesUpInOrder(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	mustInvite(t, alice, room, bob.UserID)
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	n.SetDown("hs2.test", true)
	const queued = 12
	for i := 0; i < queued; i++ {
		if _, err := alice.SendText(ctx, room, fmt.Sprintf("queued %02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// bob writes while cut off: his server's copy forks from alice's
	if _, err := bob.SendText(ctx, room, "written while offline"); err != nil {
		t.Fatal(err)
	}
	n.SetDown("hs2.test", false)

	waitFor(t, "everything on hs2", func() bool {
		return hasEvent(ctx, bob, room, event.EventMessage, "body", fmt.Sprintf("queued %02d", queued-1))
	})
	waitFor(t, "bob's offline message on hs1", func() bool {
		return hasEvent(ctx, alice, room, event.EventMessage, "body", "written while offline")
	})
	// hs2 shows alice's messages in the order she sent them
	resp, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		ev := resp.Chunk[i]
		if ev.Type == event.EventMessage && ev.Sender == alice.UserID {
			got = append(got, ev.Content.Raw["body"].(string))
		}
	}
	if len(got) != queued {
		t.Fatalf("hs2 has %d of alice's messages, want %d: %v", len(got), queued, got)
	}
	for i, body := range got {
		if want := fmt.Sprintf("queued %02d", i); body != want {
			t.Fatalf("message %d on hs2 is %q, want %q (order lost): %v", i, body, want, got)
		}
	}
	// after the fork, both servers converge on one head when someone writes
	if _, err := alice.SendText(ctx, room, "merge"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the merge on hs2", func() bool { return hasEvent(ctx, bob, room, event.EventMessage, "body", "merge") })
	if _, err := bob.SendText(ctx, room, "after merge"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's reply on hs1", func() bool { return hasEvent(ctx, alice, room, event.EventMessage, "body", "after merge") })
}
