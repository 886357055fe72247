package clientapi_test

import (
	"context"
	"testing"

	"github.com/tidwall/gjson"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// Complement TestRoomForget "Leave for forgotten room shows up in v2
// incremental /sync": forgetting a room right after leaving it must not
// hide the leave from a sync whose token predates it; older forgotten
// rooms stay out even with include_leave.
func TestSyncForgottenRoomLeaveShowsOnce(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		mustSend(t, alice, roomID, "hello")
		filter := `{"room":{"include_leave":true}}`
		before := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
		if _, err := alice.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.ForgetRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		mustSend(t, bob, roomID, "after")
		resp := syncRaw(t, alice, map[string]string{"since": before, "filter": filter})
		evs := room(resp, "leave", roomID).Get("timeline.events").Array()
		if len(evs) == 0 || evs[len(evs)-1].Get("content.membership").String() != "leave" {
			t.Fatalf("leave of a forgotten room missing from the incremental sync: %s", resp.Get("rooms").Raw)
		}
		for _, e := range evs {
			if e.Get("content.body").String() == "after" {
				t.Errorf("a left room's timeline runs past the leave: %s", e.Raw)
			}
		}
		next := resp.Get("next_batch").String()
		if r := room(syncRaw(t, alice, map[string]string{"since": next, "filter": filter}), "leave", roomID); r.Exists() {
			t.Errorf("forgotten room shows again after its leave was sent: %s", r.Raw)
		}
		if r := room(syncRaw(t, alice, map[string]string{"filter": filter}), "leave", roomID); r.Exists() {
			t.Errorf("forgotten room in an initial sync with include_leave: %s", r.Raw)
		}
	})
}

// TestSyncHiddenStateIsNotLost: under "invited" history visibility a
// joiner cannot see events from before their invite, but state changes
// among them (here the room becoming encrypted) must still reach the
// client, or it would send plaintext into an encrypted room. The timeline
// therefore starts after the last hidden event and the state section
// covers everything before it.
func TestSyncHiddenStateIsNotLost(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "invited"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]string{"topic": "Befunde"}); err != nil {
			t.Fatal(err)
		}
		first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		invited, err := bob.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		joined, err := bob.SyncRequest(ctx, 0, invited.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		jr, ok := joined.Rooms.Join[room.RoomID]
		if !ok {
			t.Fatal("joined room missing from sync")
		}
		seen := map[string]bool{}
		for _, e := range append(jr.State.Events, jr.Timeline.Events...) {
			if e.StateKey != nil {
				seen[e.Type.Type] = true
			}
		}
		for _, want := range []event.Type{event.StateEncryption, event.StateTopic, event.StateHistoryVisibility} {
			if !seen[want.Type] {
				t.Errorf("%s is in neither state nor timeline of the newly joined room", want.Type)
			}
		}
	})
}

// Complement TestRoomsInvite "Can reject invite for empty room": when no
// server of the room can take the rejection (here everyone left), it is
// recorded locally as an out-of-band leave, and the room shows under
// leave with that event in its timeline.
func TestSyncRejectInviteToEmptyRoom(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		before := syncRaw(t, bob, map[string]string{})
		if !room(before, "invite", roomID).Exists() {
			t.Fatalf("bob's invite missing: %s", before.Get("rooms").Raw)
		}
		if _, err := bob.LeaveRoom(ctx, roomID, &mautrix.ReqLeave{Reason: "nein danke"}); err != nil {
			t.Fatalf("rejecting the invite: %v", err)
		}
		resp := syncRaw(t, bob, map[string]string{"since": before.Get("next_batch").String()})
		if room(resp, "invite", roomID).Exists() {
			t.Errorf("the invite is still shown after rejecting it")
		}
		evs := room(resp, "leave", roomID).Get("timeline.events").Array()
		if len(evs) == 0 {
			t.Fatalf("rejected room without a leave timeline: %s", resp.Get("rooms").Raw)
		}
		last := evs[len(evs)-1]
		if last.Get("type").String() != "m.room.member" || last.Get("state_key").String() != bob.UserID.String() ||
			last.Get("content.membership").String() != "leave" || last.Get("content.reason").String() != "nein danke" {
			t.Errorf("last leave timeline event = %s, want bob's leave with the reason", last.Raw)
		}
	})
}

// Complement TestArchivedRoomsHistory "timeline is empty": with a
// timeline limit of 0, a left room's state section is the state at the
// leave — the leave included, nothing from after it.
func TestSyncLeftRoomEmptyTimelineState(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		setKey := func(v string) {
			if _, err := alice.SendStateEvent(ctx, roomID, event.NewEventType("de.praxis.test"), "", map[string]string{"my_key": v}); err != nil {
				t.Fatal(err)
			}
		}
		setKey("before")
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		setKey("after")
		resp := syncRaw(t, bob, map[string]string{"filter": `{"room":{"timeline":{"limit":0},"include_leave":true}}`})
		left := room(resp, "leave", roomID)
		if n := len(left.Get("timeline.events").Array()); n != 0 {
			t.Errorf("timeline with limit 0 has %d events", n)
		}
		var sawLeave, sawKey bool
		for _, e := range left.Get("state.events").Array() {
			switch {
			case e.Get("type").String() == "de.praxis.test":
				sawKey = true
				if v := e.Get("content.my_key").String(); v != "before" {
					t.Errorf("state from after the leave: my_key = %q", v)
				}
			case e.Get("type").String() == "m.room.member" && e.Get("state_key").String() == bob.UserID.String():
				sawLeave = e.Get("content.membership").String() == "leave"
			}
		}
		if !sawLeave || !sawKey {
			t.Errorf("state section lacks bob's leave (%v) or the room's state (%v): %s", sawLeave, sawKey, left.Raw)
		}
	})
}

// Ignored users (m.ignored_user_list): their invites and messages stay out
// of /sync; their state events still arrive, or the room's state would
// be wrong (Complement TestInviteFromIgnoredUsersDoesNotAppearInSync).
func TestSyncHidesIgnoredUsers(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, chris := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "chris")
		shared := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, shared)
		if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{bob.UserID.String(): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
		bobRoom := mustCreateRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})
		chrisRoom := mustCreateRoom(t, chris, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})
		mustSend(t, bob, shared, "von bob")
		if err := bob.SetDisplayName(ctx, "Bob Neu"); err != nil { // a member event: state
			t.Fatal(err)
		}
		for _, resp := range []gjson.Result{syncRaw(t, alice, map[string]string{"since": since}), syncRaw(t, alice, map[string]string{})} {
			if room(resp, "invite", bobRoom).Exists() {
				t.Errorf("invite from an ignored user shown")
			}
			if !room(resp, "invite", chrisRoom).Exists() {
				t.Errorf("invite from chris missing")
			}
			var sawTopic bool
			for _, e := range room(resp, "join", shared).Get("timeline.events").Array() {
				if e.Get("content.body").String() == "von bob" {
					t.Errorf("message of an ignored user in the timeline")
				}
				sawTopic = sawTopic || e.Get("content.displayname").String() == "Bob Neu"
			}
			if !sawTopic {
				t.Errorf("state event of an ignored user missing from the timeline")
			}
		}
	})
}

// MSC4102: an unthreaded and a threaded receipt of one user on one event
// both reach /sync (the receipt map has room for one per user, so they
// travel in separate m.receipt events, the unthreaded one first).
func TestSyncKeepsUnthreadedAndThreadedReceiptOnOneEvent(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		root := mustSend(t, alice, roomID, "root")
		reply, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "reply",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SendReceipt(ctx, roomID, reply.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if err := alice.SendReceipt(ctx, roomID, reply.EventID, event.ReceiptTypeRead, map[string]string{"thread_id": string(root)}); err != nil {
			t.Fatal(err)
		}
		var threads []string
		for _, e := range room(syncRaw(t, alice, map[string]string{}), "join", roomID).Get("ephemeral.events").Array() {
			if e.Get("type").String() != "m.receipt" {
				continue
			}
			r := e.Get("content." + gjson.Escape(string(reply.EventID)) + ".m\\.read." + gjson.Escape(alice.UserID.String()))
			if r.Exists() {
				threads = append(threads, r.Get("thread_id").String())
			}
		}
		if len(threads) != 2 || threads[0] != "" || threads[1] != string(root) {
			t.Errorf("alice's receipts on the reply, by thread: %q; want the unthreaded one, then the thread's", threads)
		}
	})
}
