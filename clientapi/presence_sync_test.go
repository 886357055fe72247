package clientapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
)

// presenceOf returns the content of sender's m.presence event in a /sync
// response, or a non-existing result.
func presenceOf(resp gjson.Result, sender id.UserID) gjson.Result {
	for _, e := range resp.Get("presence.events").Array() {
		if e.Get("type").String() == "m.presence" && e.Get("sender").String() == sender.String() {
			return e.Get("content")
		}
	}
	return gjson.Result{}
}

func TestPresenceInSync(t *testing.T) {
	enabled := hstest.WithConfig(func(c *config.Config) { c.Presence.Enabled = true })
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		aliceFirst := syncRaw(t, alice, map[string]string{})
		carolFirst := syncRaw(t, carol, map[string]string{})

		// A long-poll is woken by a room mate's presence change.
		woke := make(chan gjson.Result, 1)
		go func() {
			woke <- syncRaw(t, alice, map[string]string{"since": aliceFirst.Get("next_batch").String(), "timeout": "10000"})
		}()
		time.Sleep(100 * time.Millisecond)
		if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "in der Sprechstunde"}); err != nil {
			t.Fatal(err)
		}
		var resp gjson.Result
		select {
		case resp = <-woke:
		case <-time.After(8 * time.Second):
			t.Fatal("alice's long-poll did not wake for bob's presence")
		}
		if p := presenceOf(resp, bob.UserID); p.Get("presence").String() != "unavailable" || p.Get("status_msg").String() != "in der Sprechstunde" ||
			p.Get("currently_active").Bool() || !p.Get("last_active_ago").Exists() {
			t.Errorf("bob's presence in alice's sync = %s", resp.Get("presence").Raw)
		}

		// Nobody outside bob's rooms learns it.
		resp = syncRaw(t, carol, map[string]string{"since": carolFirst.Get("next_batch").String()})
		if presenceOf(resp, bob.UserID).Exists() {
			t.Errorf("carol, who shares no room with bob, sees his presence: %s", resp.Get("presence").Raw)
		}

		// Joining a room brings the room mates' current presence, both
		// ways, though it was set before the window.
		carolNext := syncRaw(t, carol, map[string]string{}).Get("next_batch").String()
		aliceNext := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
		mustJoin(t, carol, roomID)
		if p := presenceOf(syncRaw(t, carol, map[string]string{"since": carolNext}), bob.UserID); p.Get("presence").String() != "unavailable" {
			t.Errorf("carol joined bob's room but gets no presence of his: %s", p.Raw)
		}
		if p := presenceOf(syncRaw(t, alice, map[string]string{"since": aliceNext}), carol.UserID); p.Get("presence").String() != "online" {
			t.Errorf("carol joined alice's room but alice gets no presence of hers: %s", p.Raw)
		}

		// An initial sync carries the current presence of room mates; a
		// presence filter can leave them out.
		resp = syncRaw(t, alice, map[string]string{})
		if presenceOf(resp, bob.UserID).Get("presence").String() != "unavailable" {
			t.Errorf("initial sync lacks bob's presence: %s", resp.Get("presence").Raw)
		}
		resp = syncRaw(t, alice, map[string]string{"filter": `{"presence":{"not_senders":["` + bob.UserID.String() + `"]}}`})
		if presenceOf(resp, bob.UserID).Exists() {
			t.Errorf("presence filter not applied: %s", resp.Get("presence").Raw)
		}

		// Syncing marks a user online (set_presence defaults to online);
		// set_presence=offline does not.
		bobFirst := syncRaw(t, bob, map[string]string{"set_presence": "offline"})
		if p := presenceOf(bobFirst, bob.UserID); p.Get("presence").String() != "unavailable" {
			t.Errorf("set_presence=offline changed bob's own presence: %s", p.Raw)
		}
		syncRaw(t, bob, map[string]string{"since": bobFirst.Get("next_batch").String()})
		resp = syncRaw(t, alice, map[string]string{"since": aliceFirst.Get("next_batch").String()})
		if p := presenceOf(resp, bob.UserID); p.Get("presence").String() != "online" || !p.Get("currently_active").Bool() ||
			p.Get("status_msg").String() != "in der Sprechstunde" {
			t.Errorf("after bob's sync, alice sees %s, want online with the status kept", p.Raw)
		}
	}, enabled)
}

// With presence off (the default) nothing about other users' presence
// reaches /sync, whatever they set.
func TestPresenceOffByDefault(t *testing.T) {
	ctx := context.Background()
	srv := hstest.New(t)
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	mustJoin(t, bob, roomID)
	if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "da"}); err != nil {
		t.Fatal(err)
	}
	syncRaw(t, bob, map[string]string{})
	if resp := syncRaw(t, alice, map[string]string{}); len(resp.Get("presence.events").Array()) != 0 {
		t.Errorf("presence events with presence off: %s", resp.Get("presence").Raw)
	}
}
