package clientapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// A room muted by a room push rule stays muted after an upgrade: the rule
// follows to the replacement room for the upgrader (API upgrade or by
// hand, a createRoom naming the predecessor) and for members who join the
// replacement later (Complement TestPushRuleRoomUpgrade).
func TestRoomPushRuleFollowsUpgrade(t *testing.T) {
	for _, manual := range []bool{false, true} {
		name := "upgrade endpoint"
		if manual {
			name = "by hand"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			srv := hstest.New(t)
			alice, carol := srv.Register(t, "alice"), srv.Register(t, "carol")
			old := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
			mustJoin(t, carol, old)
			mute := map[string]any{"actions": []string{"dont_notify"}}
			for _, c := range []*mautrix.Client{alice, carol} {
				if _, err := c.MakeRequest(ctx, "PUT", c.BuildClientURL("v3", "pushrules", "global", "room", old), mute, nil); err != nil {
					t.Fatal(err)
				}
			}
			var replacement id.RoomID
			if manual {
				replacement = mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
					CreationContent: map[string]any{"predecessor": map[string]any{"room_id": old}}})
				if _, err := alice.SendStateEvent(ctx, old, event.StateTombstone, "", map[string]any{"body": "moved", "replacement_room": replacement}); err != nil {
					t.Fatal(err)
				}
			} else {
				var resp struct {
					Room id.RoomID `json:"replacement_room"`
				}
				if _, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "rooms", old, "upgrade"), map[string]any{"new_version": "11"}, &resp); err != nil {
					t.Fatal(err)
				}
				replacement = resp.Room
			}
			mustJoin(t, carol, replacement)
			for _, c := range []*mautrix.Client{alice, carol} {
				var rule struct {
					Actions []any `json:"actions"`
				}
				if _, err := c.MakeRequest(ctx, "GET", c.BuildClientURL("v3", "pushrules", "global", "room", replacement), nil, &rule); err != nil {
					t.Errorf("%s has no room rule for the replacement room: %v", c.UserID, err)
					continue
				}
				if len(rule.Actions) != 1 || rule.Actions[0] != "dont_notify" {
					t.Errorf("%s's rule for the replacement room: actions %v", c.UserID, rule.Actions)
				}
			}
		})
	}
}
