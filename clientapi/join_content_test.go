package clientapi_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"praxis/internal/hstest"
)

// Keys a client adds to its join body go into its member event; the
// server's own keys (membership, a restricted join's authoriser) cannot
// be set that way (Complement TestRoomMembers "join … with custom
// content"). A body the event cannot carry is refused, and nothing
// changes.
func TestJoinBodyContent(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for _, tc := range []struct {
			name     string
			body     map[string]any
			wantCode string
			check    func(t *testing.T, c map[string]any)
		}{
			{"custom keys kept", map[string]any{"foo": "bar", "n": 42, "reason": "Sprechstunde"}, "", func(t *testing.T, c map[string]any) {
				if c["foo"] != "bar" || c["n"] != float64(42) || c["reason"] != "Sprechstunde" || c["membership"] != "join" {
					t.Errorf("member content = %v", c)
				}
			}},
			{"server keys not settable", map[string]any{"membership": "leave", "join_authorised_via_users_server": "@evil:hs1.test"}, "", func(t *testing.T, c map[string]any) {
				if c["membership"] != "join" || c["join_authorised_via_users_server"] != nil {
					t.Errorf("member content = %v", c)
				}
			}},
			{"reason not a string", map[string]any{"reason": 5}, "M_BAD_JSON", nil},
			{"float", map[string]any{"x": 1.5}, "M_BAD_JSON", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				bob := srv.Register(t, fmt.Sprintf("bob%d", len(tc.name)))
				_, err := bob.MakeRequest(ctx, "POST", bob.BuildClientURL("v3", "join", room), tc.body, nil)
				if tc.wantCode != "" {
					if hstest.ErrCode(err) != tc.wantCode {
						t.Fatalf("join = %v, want %s", err, tc.wantCode)
					}
					var c map[string]any
					if err := alice.StateEvent(ctx, room, event.StateMember, bob.UserID.String(), &c); hstest.ErrCode(err) != "M_NOT_FOUND" {
						t.Errorf("refused join left a member event: %v %v", c, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var c map[string]any
				if err := alice.StateEvent(ctx, room, event.StateMember, bob.UserID.String(), &c); err != nil {
					t.Fatal(err)
				}
				tc.check(t, c)
			})
		}
	})
}
