package clientapi_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// Deleting an alias takes it out of the room's canonical alias (main and
// alternative), so that clients stop showing a name that no longer
// resolves; other aliases stay.
func TestDeletedAliasLeavesCanonicalAlias(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for _, a := range []string{"#haupt:hs1.test", "#neben:hs1.test", "#bleibt:hs1.test"} {
			if _, err := alice.CreateAlias(ctx, id.RoomAlias(a), room); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", map[string]any{
			"alias": "#haupt:hs1.test", "alt_aliases": []string{"#neben:hs1.test", "#bleibt:hs1.test"}}); err != nil {
			t.Fatal(err)
		}
		canonical := func() map[string]any {
			var c map[string]any
			if err := alice.StateEvent(ctx, room, event.StateCanonicalAlias, "", &c); err != nil {
				t.Fatal(err)
			}
			return c
		}
		for _, tc := range []struct {
			del  string
			want string
		}{
			{"#haupt:hs1.test", `map[alt_aliases:[#neben:hs1.test #bleibt:hs1.test]]`},
			{"#neben:hs1.test", `map[alt_aliases:[#bleibt:hs1.test]]`},
			{"#bleibt:hs1.test", `map[]`},
		} {
			if _, err := alice.DeleteAlias(ctx, id.RoomAlias(tc.del)); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(canonical()); got != tc.want {
				t.Errorf("after deleting %s: canonical alias %s, want %s", tc.del, got, tc.want)
			}
		}
	})
}
