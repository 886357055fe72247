package clientapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// TestCanonicalAliasValidation: PUT /state/m.room.canonical_alias answers
// 400 M_INVALID_PARAM for a malformed alias and 400 M_BAD_ALIAS for a local
// alias that does not exist or names another room (Complement
// TestRoomCanonicalAlias), and a refused event is not stored.
func TestCanonicalAliasValidation(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for alias, target := range map[id.RoomAlias]id.RoomID{"#empfang:hs1.test": room.RoomID, "#labor:hs1.test": other.RoomID} {
			if _, err := alice.CreateAlias(ctx, alias, target); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			name    string
			content map[string]any
			want    string
		}{
			{"own alias", map[string]any{"alias": "#empfang:hs1.test"}, ""},
			{"own alias as alt alias", map[string]any{"alias": "#empfang:hs1.test", "alt_aliases": []string{"#empfang:hs1.test"}}, ""},
			{"remote alias, syntax only", map[string]any{"alt_aliases": []string{"#wartezimmer:partner.example"}}, ""},
			{"no alias at all", map[string]any{}, ""},
			{"missing alias", map[string]any{"alias": "#nope:hs1.test"}, "M_BAD_ALIAS"},
			{"missing alt alias", map[string]any{"alt_aliases": []string{"#nope:hs1.test"}}, "M_BAD_ALIAS"},
			{"alias of another room", map[string]any{"alias": "#labor:hs1.test"}, "M_BAD_ALIAS"},
			{"alt alias of another room", map[string]any{"alt_aliases": []string{"#labor:hs1.test"}}, "M_BAD_ALIAS"},
			{"malformed alias", map[string]any{"alias": "%empfang:hs1.test"}, "M_INVALID_PARAM"},
			{"malformed alt alias", map[string]any{"alt_aliases": []string{"empfang"}}, "M_INVALID_PARAM"},
			{"alias not a string", map[string]any{"alias": 7}, "M_INVALID_PARAM"},
			{"alt_aliases not a list", map[string]any{"alt_aliases": "#empfang:hs1.test"}, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := alice.SendStateEvent(ctx, room.RoomID, event.StateCanonicalAlias, "", tc.content)
				if got := hstest.ErrCode(err); got != tc.want {
					t.Fatalf("errcode %q (%v), want %q", got, err, tc.want)
				}
			})
		}
		// The last accepted content is the current one: refusals stored nothing.
		var cur map[string]any
		if err := alice.StateEvent(ctx, room.RoomID, event.StateCanonicalAlias, "", &cur); err != nil || len(cur) != 0 {
			t.Errorf("current canonical alias %v, %v; want the empty content sent last", cur, err)
		}
	})
}
