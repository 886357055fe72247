package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/storage/storagetest"
)

// eachPresenceNetwork runs fn on a network of hs1.test and hs2.test on
// every engine, with presence.enabled on the servers named in on.
func eachPresenceNetwork(t *testing.T, on map[string]bool, fn func(t *testing.T, n *hstest.Network)) {
	names := []string{"hs1.test", "hs2.test"}
	for engine, dsn := range storagetest.Engines(t) {
		t.Run(engine, func(t *testing.T) {
			n := hstest.NewNetworkWith(t, nil)
			for _, name := range names {
				n.Add(t, name, names, hstest.WithDatabase(dsn(t)), hstest.WithConfig(func(c *config.Config) { c.Presence.Enabled = on[name] }))
			}
			fn(t, n)
		})
	}
}

// sharedRoom makes alice (hs1) create a public room and the others join
// it over federation.
func sharedRoom(t *testing.T, alice *mautrix.Client, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	ctx := context.Background()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		if _, err := o.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
			t.Fatalf("%s joins: %v", o.UserID, err)
		}
	}
	return created.RoomID
}

// presenceIn returns the content of user's m.presence event in resp.
func presenceIn(resp *mautrix.RespSync, user id.UserID) map[string]any {
	for _, ev := range resp.Presence.Events {
		if ev.Type == event.EphemeralEventPresence && ev.Sender == user {
			return ev.Content.Raw
		}
	}
	return nil
}

// Complement TestRemotePresence: a presence change of a user reaches the
// /sync of room mates on the partner server (status message included),
// both ways, and not users there who share no room with them.
func TestPresenceFederates(t *testing.T) {
	eachPresenceNetwork(t, map[string]bool{"hs1.test": true, "hs2.test": true}, testPresenceFederates)
}

func testPresenceFederates(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob, carol := hs1.Register(t, "alice"), hs2.Register(t, "bob"), hs2.Register(t, "carol")
	sharedRoom(t, alice, bob)
	since := map[*mautrix.Client]string{}
	for _, c := range []*mautrix.Client{alice, bob} {
		resp, err := c.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		since[c] = resp.NextBatch
	}
	for _, tc := range []struct {
		name       string
		from, to   *mautrix.Client
		presence   event.Presence
		statusMsg  string
		wantActive bool
	}{
		{"online with a status message", alice, bob, event.PresenceOnline, "Sprechstunde bis 12 Uhr", true},
		{"unavailable", alice, bob, event.PresenceUnavailable, "", false},
		{"the other way", bob, alice, event.PresenceOnline, "im Labor", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.from.SetPresence(ctx, mautrix.ReqPresence{Presence: tc.presence, StatusMsg: tc.statusMsg}); err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			waitFor(t, "the presence change on the partner", func() bool {
				resp, err := tc.to.SyncRequest(ctx, 0, since[tc.to], "", false, "")
				if err != nil {
					return false
				}
				since[tc.to] = resp.NextBatch
				if p := presenceIn(resp, tc.from.UserID); p != nil {
					got = p
				}
				// (a sync marks its user online, so an earlier online
				// without the status message may come first)
				msg, _ := got["status_msg"].(string)
				return got != nil && got["presence"] == string(tc.presence) && msg == tc.statusMsg
			})
			if active, _ := got["currently_active"].(bool); active != tc.wantActive {
				t.Errorf("currently_active = %v, want %v", active, tc.wantActive)
			}
			if ago, ok := got["last_active_ago"].(float64); !ok || ago < 0 || ago > 60_000 {
				t.Errorf("last_active_ago = %v, want a recent age", got["last_active_ago"])
			}
		})
	}
	// carol, on bob's server, shares no room with alice
	resp, err := carol.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if p := presenceIn(resp, alice.UserID); p != nil {
		t.Errorf("carol, who shares no room with alice, sees her presence: %v", p)
	}
}

// A new room mate on the partner learns the current presence of the
// members already there without waiting for their next change, and they
// learn the newcomer's.
func TestPresenceOnJoin(t *testing.T) {
	eachPresenceNetwork(t, map[string]bool{"hs1.test": true, "hs2.test": true}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
		alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
		for _, c := range []*mautrix.Client{alice, bob} {
			if err := c.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "vor dem Beitritt"}); err != nil {
				t.Fatal(err)
			}
		}
		// both changes are past each sender's EDU tail (sent to nobody:
		// no room is shared yet) before the join
		for _, srv := range []*hstest.Server{hs1, hs2} {
			head, err := srv.DB.StreamHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the EDU tail past the presence change", func() bool {
				var pos int64
				srv.DB.QueryRow(ctx, `SELECT sent_pos FROM federation_destinations WHERE server_name = '!edu-tailer'`).Scan(&pos)
				return pos >= head
			})
		}
		sharedRoom(t, alice, bob)
		for _, tc := range []struct {
			name   string
			viewer *mautrix.Client
			of     id.UserID
		}{
			{"the joiner sees the member already there", bob, alice.UserID},
			{"the member sees the joiner", alice, bob.UserID},
		} {
			t.Run(tc.name, func(t *testing.T) {
				since := ""
				var got map[string]any
				waitFor(t, "the presence on the partner", func() bool {
					resp, err := tc.viewer.SyncRequest(ctx, 0, since, "", false, event.PresenceUnavailable)
					if err != nil {
						return false
					}
					since = resp.NextBatch
					if p := presenceIn(resp, tc.of); p != nil {
						got = p
					}
					return got != nil && got["presence"] == "unavailable" && got["status_msg"] == "vor dem Beitritt"
				})
			})
		}
	})
}

// With presence.enabled off (the default) on either side, nothing
// crosses: the sender sends no m.presence, the receiver stores none.
func TestPresenceStaysHomeWhenDisabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		on   map[string]bool
	}{
		{"off at the sender", map[string]bool{"hs2.test": true}},
		{"off at the receiver", map[string]bool{"hs1.test": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachPresenceNetwork(t, tc.on, func(t *testing.T, n *hstest.Network) {
				ctx := context.Background()
				hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
				alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
				room := sharedRoom(t, alice, bob)
				if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "hier"}); err != nil {
					t.Fatal(err)
				}
				// typing is tailed after presence and delivered in order:
				// once hs2 shows it, a presence EDU would have arrived
				if _, err := alice.UserTyping(ctx, room, true, 20*time.Second); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "alice's typing on hs2", func() bool {
					var n int
					hs2.DB.QueryRow(ctx, `SELECT COUNT(*) FROM typing WHERE user_id = $1`, alice.UserID.String()).Scan(&n)
					return n > 0
				})
				var rows int
				hs2.DB.QueryRow(ctx, `SELECT COUNT(*) FROM presence WHERE user_id = $1`, alice.UserID.String()).Scan(&rows)
				if rows != 0 {
					t.Errorf("hs2 stored alice's presence with presence off on one side")
				}
			})
		})
	}
}

// An inbound m.presence entry is taken only about the origin's own user,
// with a known presence, who shares a room with one of our users whose
// server ACL admits the origin; a refused entry leaves the others alone.
func TestPresenceEDUChecks(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetworkWith(t, []string{"hs1.test", "hs2.test"}, hstest.WithConfig(func(c *config.Config) { c.Presence.Enabled = true }))
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice := hs1.Register(t, "alice")
	bob, dave, erin, frank := hs2.Register(t, "bob"), hs2.Register(t, "dave"), hs2.Register(t, "erin"), hs2.Register(t, "frank")
	hs2.Register(t, "carol")
	sharedRoom(t, alice, bob, dave, frank)
	denied := sharedRoom(t, alice, erin)
	if _, err := alice.SendStateEvent(ctx, denied, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"hs2.test"}}); err != nil {
		t.Fatal(err)
	}

	stored := func(user string) (presence, msg string, lastActive int64) {
		var m *string
		hs1.DB.QueryRow(ctx, `SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = $1`, user).Scan(&presence, &m, &lastActive)
		if m != nil {
			msg = *m
		}
		return
	}
	for i, tc := range []struct {
		name  string
		entry map[string]any
		want  string // stored presence, "" for none
	}{
		{"a room mate of ours", map[string]any{"user_id": "@bob:hs2.test", "presence": "unavailable", "status_msg": "vom Test", "last_active_ago": 60_000}, "unavailable"},
		{"another server's user", map[string]any{"user_id": "@alice:hs1.test", "presence": "offline"}, ""},
		{"a user of a third server", map[string]any{"user_id": "@mallory:hs3.test", "presence": "online"}, ""},
		{"a user sharing no room with ours", map[string]any{"user_id": "@carol:hs2.test", "presence": "online"}, ""},
		{"an unknown presence", map[string]any{"user_id": "@dave:hs2.test", "presence": "busy"}, ""},
		{"only in a room whose ACL denies the origin", map[string]any{"user_id": "@erin:hs2.test", "presence": "online"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := tc.entry["user_id"].(string)
			before, _, _ := stored(user)
			// the refused entry travels with a good one, which must still land
			good := map[string]any{"user_id": "@frank:hs2.test", "presence": "online", "status_msg": fmt.Sprint("case ", i)}
			body, _ := json.Marshal(map[string]any{"origin": "hs2.test", "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
				"edus": []any{map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{tc.entry, good}}}}})
			if _, err := hs1.Fed.Txn.Process(ctx, "hs2.test", fmt.Sprintf("presence-check-%d", i), body); err != nil {
				t.Fatal(err)
			}
			got, msg, lastActive := stored(user)
			switch {
			case tc.want == "" && got != before:
				t.Errorf("stored %s's presence %q (was %q), want it refused", user, got, before)
			case tc.want != "" && got != tc.want:
				t.Errorf("%s's presence = %q, want %q", user, got, tc.want)
			case tc.want != "":
				if msg != tc.entry["status_msg"] {
					t.Errorf("status_msg = %q, want %q", msg, tc.entry["status_msg"])
				}
				// last_active_ago is turned into a time on our clock
				if ago := time.Now().UnixMilli() - lastActive; ago < 59_000 || ago > 70_000 {
					t.Errorf("last active %d ms ago, want about 60000", ago)
				}
			}
			if p, m, _ := stored("@frank:hs2.test"); p != "online" || m != fmt.Sprint("case ", i) {
				t.Errorf("the good entry beside it was not stored: %q %q", p, m)
			}
		})
	}
}
