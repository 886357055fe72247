package federation_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"praxis/internal/hstest"
)

// Typing notifications and read receipts cross to the partner server.
func TestTypingAndReceiptsFederate(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatal(err)
	}
	msg, err := bob.SendText(ctx, room, "hello")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's message on hs1", func() bool { return hasEvent(ctx, alice, room, event.EventMessage, "body", "hello") })

	if _, err := alice.UserTyping(ctx, room, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendReceipt(ctx, room, msg.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	var sawTyping, sawReceipt bool
	waitFor(t, "alice's typing and receipt on hs2", func() bool {
		resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			return false
		}
		joined, ok := resp.Rooms.Join[room]
		if !ok {
			return false
		}
		for _, ev := range joined.Ephemeral.Events {
			_ = ev.Content.ParseRaw(ev.Type)
			switch ev.Type {
			case event.EphemeralEventTyping:
				for _, u := range ev.Content.AsTyping().UserIDs {
					sawTyping = sawTyping || u == alice.UserID
				}
			case event.EphemeralEventReceipt:
				for evID, byType := range *ev.Content.AsReceipt() {
					if _, ok := byType[event.ReceiptTypeRead][alice.UserID]; ok && evID == msg.EventID {
						sawReceipt = true
					}
				}
			}
		}
		return sawTyping && sawReceipt
	})
}
