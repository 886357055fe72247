package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// ephemeralOf is the ephemeral events of a joined room in c's initial
// sync, as JSON.
func ephemeralOf(t *testing.T, c *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	resp, err := c.SyncRequest(context.Background(), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if jr := resp.Rooms.Join[room]; jr != nil {
		for _, ev := range jr.Ephemeral.Events {
			b, _ := json.Marshal(ev)
			out = append(out, string(b))
		}
	}
	return out
}

func aclJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func timelineHas(c *mautrix.Client, room id.RoomID, eventID id.EventID) bool {
	resp, err := c.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		return false
	}
	for _, ev := range resp.Chunk {
		if ev.ID == eventID {
			return true
		}
	}
	return false
}

// A room's m.room.server_acl shuts a denied server out: the other servers
// drop its PDUs and EDUs for that room (and only that room) and refuse its
// requests on the room's federation endpoints.
func TestServerACLOverFederation(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test", "hs3.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs2 := n.Server("hs2.test")
		alice := n.Server("hs1.test").Register(t, "alice")
		bob, charlie := hs2.Register(t, "bob"), n.Server("hs3.test").Register(t, "charlie")

		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "acl"})
		if err := joinVia(bob, room, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		sentinel := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "sentinel"})
		for _, c := range []*mautrix.Client{bob, charlie} {
			if err := joinVia(c, sentinel, "hs1.test"); err != nil {
				t.Fatal(err)
			}
		}

		acl, err := alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{
			"allow": []string{"*"}, "allow_ip_literals": true, "deny": []string{"hs2.test"},
		})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the ACL on hs2", func() bool { return timelineHas(bob, room, acl.EventID) })
		if err := joinVia(charlie, room, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, alice, room, charlie.UserID, "join")

		blocked, err := bob.SendText(ctx, room, "I should be blocked")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.UserTyping(ctx, room, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := bob.SendReceipt(ctx, room, acl.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		visible, err := bob.SendText(ctx, sentinel, "I should be visible")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.UserTyping(ctx, sentinel, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := bob.SendReceipt(ctx, sentinel, visible.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}

		// hs2 learns of charlie's join only from hs1, which sends it
		// nothing of the room now: hand hs3 the denied traffic directly.
		blockedJSON, err := hs2.Rooms.EventJSON(ctx, room.String(), blocked.EventID.String())
		if err != nil {
			t.Fatal(err)
		}
		res, err := hs2.Fed.Client.SendTransaction(ctx, gomatrixserverlib.Transaction{
			TransactionID: "acl-1", Origin: "hs2.test", Destination: "hs3.test", OriginServerTS: spec.AsTimestamp(time.Now()),
			PDUs: []json.RawMessage{blockedJSON},
			EDUs: []gomatrixserverlib.EDU{{Type: "m.typing", Origin: "hs2.test", Content: aclJSON(t, map[string]any{
				"room_id": room, "user_id": bob.UserID, "typing": true,
			})}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if r := res.PDUs[blocked.EventID.String()]; r.Error == "" {
			t.Errorf("hs3 accepted a PDU of the denied server: %+v", res.PDUs)
		}

		for _, c := range []*mautrix.Client{alice, charlie} {
			// hs2's sentinel traffic arrived, so its denied traffic was sent too
			waitFor(t, "hs2's sentinel message, typing and receipt as "+string(c.UserID)+" sees them", func() bool {
				eph := strings.Join(ephemeralOf(t, c, sentinel), "\n")
				return timelineHas(c, sentinel, visible.EventID) && strings.Contains(eph, `"m.typing"`) && strings.Contains(eph, `"m.receipt"`)
			})
			if timelineHas(c, room, blocked.EventID) {
				t.Errorf("%s sees the message of the denied server", c.UserID)
			}
			if eph := ephemeralOf(t, c, room); len(eph) != 0 {
				t.Errorf("%s sees ephemeral events of the denied server: %v", c.UserID, eph)
			}
		}

		// The room's federation endpoints refuse hs2; the sentinel's serve it.
		for _, tc := range []struct {
			name string
			call func(room id.RoomID) error
		}{
			{"make_join", func(r id.RoomID) error {
				_, err := hs2.Fed.Client.MakeJoin(ctx, "hs2.test", "hs1.test", r.String(), bob.UserID.String())
				return err
			}},
			{"state_ids", func(r id.RoomID) error {
				_, err := hs2.Fed.Client.LookupStateIDs(ctx, "hs2.test", "hs1.test", r.String(), acl.EventID.String())
				if r == sentinel {
					return nil // acl's event is not in the sentinel room
				}
				return err
			}},
			{"backfill", func(r id.RoomID) error {
				_, err := hs2.Fed.Client.Backfill(ctx, "hs2.test", "hs1.test", r.String(), 10, []string{acl.EventID.String()})
				if r == sentinel {
					return nil
				}
				return err
			}},
		} {
			if code, errcode := remoteErrcode(tc.call(room)); code != http.StatusForbidden || errcode != "M_FORBIDDEN" {
				t.Errorf("%s from the denied server: %d %s, want 403 M_FORBIDDEN", tc.name, code, errcode)
			}
			if err := tc.call(sentinel); err != nil {
				t.Errorf("%s in a room without ACL: %v", tc.name, err)
			}
		}
	})
}
