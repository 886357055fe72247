package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// syncRaw runs GET /sync with the given query parameters and returns the
// raw response, so tests see exactly what a client would parse.
func syncRaw(t *testing.T, c *mautrix.Client, params map[string]string) gjson.Result {
	t.Helper()
	raw, err := syncErr(c, params)
	if err != nil {
		t.Fatalf("sync %v: %v", params, err)
	}
	return raw
}

func syncErr(c *mautrix.Client, params map[string]string) (gjson.Result, error) {
	if _, ok := params["timeout"]; !ok {
		params["timeout"] = "0"
	}
	u := c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, params)
	var raw json.RawMessage
	_, err := c.MakeRequest(context.Background(), "GET", u, nil, &raw)
	return gjson.ParseBytes(raw), err
}

func mustCreateRoom(t *testing.T, c *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := c.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return resp.RoomID
}

func mustSend(t *testing.T, c *mautrix.Client, room id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), room, text)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return resp.EventID
}

func mustJoin(t *testing.T, c *mautrix.Client, room id.RoomID) {
	t.Helper()
	if _, err := c.JoinRoomByID(context.Background(), room); err != nil {
		t.Fatalf("%s joins %s: %v", c.UserID, room, err)
	}
}

// bodies lists the m.room.message bodies of a timeline.
func bodies(tl gjson.Result) []string {
	var out []string
	for _, e := range tl.Get("events").Array() {
		if e.Get("type").String() == "m.room.message" {
			out = append(out, e.Get("content.body").String())
		}
	}
	return out
}

// stateKeys lists "type|state_key" of a state section, sorted.
func stateKeys(state gjson.Result) []string {
	var out []string
	for _, e := range state.Get("events").Array() {
		out = append(out, e.Get("type").String()+"|"+e.Get("state_key").String())
	}
	sort.Strings(out)
	return out
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func room(resp gjson.Result, section string, roomID id.RoomID) gjson.Result {
	return resp.Get("rooms." + section + "." + gjson.Escape(string(roomID)))
}

func TestSyncInitialAndIncremental(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Wartezimmer"})
		for i := range 3 {
			mustSend(t, alice, roomID, fmt.Sprintf("msg %d", i))
		}

		initial := syncRaw(t, alice, map[string]string{})
		if !strings.HasPrefix(initial.Get("next_batch").String(), "s") {
			t.Fatalf("next_batch = %q, want s<pos>", initial.Get("next_batch").String())
		}
		joined := room(initial, "join", roomID)
		if !joined.Exists() {
			t.Fatalf("initial sync has no join entry for %s: %s", roomID, initial.Raw)
		}
		if got, want := bodies(joined.Get("timeline")), []string{"msg 0", "msg 1", "msg 2"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("timeline bodies = %v, want %v", got, want)
		}
		// state and timeline together make up the room: the create event
		// and the name are somewhere in them
		all := stateKeys(joined.Get("state"))
		for _, e := range joined.Get("timeline.events").Array() {
			if e.Get("state_key").Exists() {
				all = append(all, e.Get("type").String()+"|"+e.Get("state_key").String())
			}
		}
		for _, k := range []string{"m.room.create|", "m.room.name|", "m.room.member|" + string(alice.UserID), "m.room.power_levels|"} {
			if !has(all, k) {
				t.Errorf("initial sync lacks %s in state+timeline: %v", k, all)
			}
		}
		if joined.Get("summary.m\\.joined_member_count").Int() != 1 {
			t.Errorf("summary = %s, want 1 joined member", joined.Get("summary").Raw)
		}
		if !joined.Get("unread_notifications.notification_count").Exists() {
			t.Errorf("no unread_notifications: %s", joined.Raw)
		}
		for _, e := range joined.Get("timeline.events").Array() {
			if e.Get("type").String() == "m.room.message" && e.Get("unsigned.transaction_id").String() == "" {
				t.Errorf("own message without transaction_id: %s", e.Raw)
			}
		}

		// nothing new: no rooms, same position
		since := initial.Get("next_batch").String()
		empty := syncRaw(t, alice, map[string]string{"since": since})
		if empty.Get("rooms.join").Exists() {
			t.Errorf("empty incremental sync has rooms: %s", empty.Get("rooms").Raw)
		}
		if got := empty.Get("next_batch").String(); got != since {
			t.Errorf("empty sync moved next_batch %s → %s", since, got)
		}

		mustSend(t, alice, roomID, "new")
		inc := syncRaw(t, alice, map[string]string{"since": since})
		joined = room(inc, "join", roomID)
		if got := bodies(joined.Get("timeline")); fmt.Sprint(got) != "[new]" {
			t.Errorf("incremental timeline = %v, want [new]", got)
		}
		if joined.Get("timeline.limited").Bool() {
			t.Error("incremental timeline of one event is limited")
		}
		if n := len(joined.Get("state.events").Array()); n != 0 {
			t.Errorf("incremental sync repeats %d state events", n)
		}

		// full_state sends the state again
		full := syncRaw(t, alice, map[string]string{"since": since, "full_state": "true"})
		if !has(stateKeys(room(full, "join", roomID).Get("state")), "m.room.name|") {
			t.Errorf("full_state lacks m.room.name: %s", room(full, "join", roomID).Get("state").Raw)
		}
	})
}

func TestSyncLongPollWakesOnSend(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()

		// a write in a room alice is not in must not end her long-poll
		other := mustCreateRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})

		type result struct {
			resp gjson.Result
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			r, err := syncErr(alice, map[string]string{"since": since, "timeout": "20000"})
			done <- result{r, err, time.Since(start)}
		}()
		time.Sleep(200 * time.Millisecond)
		mustSend(t, bob, other, "elsewhere")
		select {
		case r := <-done:
			t.Fatalf("long-poll returned for an unrelated room after %v: %s", r.took, r.resp.Raw)
		case <-time.After(200 * time.Millisecond):
		}
		sent := time.Now()
		mustSend(t, bob, roomID, "wake up")
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if lag := time.Since(sent); lag > 2*time.Second {
			t.Errorf("long-poll returned %v after the send, want it woken at once", lag)
		}
		if got := bodies(room(r.resp, "join", roomID).Get("timeline")); fmt.Sprint(got) != "[wake up]" {
			t.Errorf("woken sync timeline = %v, want [wake up]", got)
		}
	})
}

func TestSyncLongPollTimesOutEmpty(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
	start := time.Now()
	resp := syncRaw(t, alice, map[string]string{"since": since, "timeout": "300"})
	if took := time.Since(start); took < 250*time.Millisecond || took > 5*time.Second {
		t.Errorf("timeout=300 returned after %v: %s", took, resp.Raw)
	}
	if resp.Get("rooms.join").Exists() || resp.Get("next_batch").String() == "" || resp.Get("device_lists.changed").Exists() {
		t.Errorf("timed-out sync = %s, want empty with a next_batch", resp.Raw)
	}
}

func TestSyncLimitedTimelineAndPrevBatch(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
		for i := range 8 {
			mustSend(t, alice, roomID, fmt.Sprintf("m%d", i))
		}
		filter := `{"room":{"timeline":{"limit":3}}}`
		resp := syncRaw(t, alice, map[string]string{"since": since, "filter": filter})
		tl := room(resp, "join", roomID).Get("timeline")
		if got := bodies(tl); fmt.Sprint(got) != "[m5 m6 m7]" {
			t.Fatalf("limited timeline = %v, want [m5 m6 m7]", got)
		}
		if !tl.Get("limited").Bool() || tl.Get("prev_batch").String() == "" {
			t.Fatalf("timeline = %s, want limited with prev_batch", tl.Raw)
		}
		msgs, err := alice.Messages(ctx, roomID, tl.Get("prev_batch").String(), "", mautrix.DirectionBackward, nil, 2)
		if err != nil {
			t.Fatalf("/messages from prev_batch: %v", err)
		}
		var got []string
		for _, e := range msgs.Chunk {
			body, _ := e.Content.Raw["body"].(string)
			got = append(got, body)
		}
		if fmt.Sprint(got) != "[m4 m3]" {
			t.Errorf("/messages back from prev_batch = %v, want [m4 m3]", got)
		}

		// initial sync with limit 0: nothing in the timeline, but limited
		resp = syncRaw(t, alice, map[string]string{"filter": `{"room":{"timeline":{"limit":0}}}`})
		tl = room(resp, "join", roomID).Get("timeline")
		if len(tl.Get("events").Array()) != 0 || !tl.Get("limited").Bool() {
			t.Errorf("limit 0 timeline = %s, want empty and limited", tl.Raw)
		}
		if !has(stateKeys(room(resp, "join", roomID).Get("state")), "m.room.create|") {
			t.Errorf("limit 0: state lacks the create event")
		}
	})
}

func TestSyncStateChangeInLimitedGap(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "alt"})
	since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
	if _, err := alice.SendStateEvent(ctx, roomID, event.StateRoomName, "", map[string]string{"name": "neu"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustSend(t, alice, roomID, fmt.Sprintf("m%d", i))
	}
	resp := syncRaw(t, alice, map[string]string{"since": since, "filter": `{"room":{"timeline":{"limit":2}}}`})
	joined := room(resp, "join", roomID)
	state := joined.Get("state.events").Array()
	if len(state) != 1 || state[0].Get("type").String() != "m.room.name" || state[0].Get("content.name").String() != "neu" {
		t.Errorf("state of a limited incremental sync = %s, want only the new m.room.name", joined.Get("state").Raw)
	}
}

func TestSyncInviteAndLeave(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Befund"})
		bobSince := syncRaw(t, bob, map[string]string{}).Get("next_batch").String()
		if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		resp := syncRaw(t, bob, map[string]string{"since": bobSince})
		invite := room(resp, "invite", roomID)
		var sawInvite bool
		for _, e := range invite.Get("invite_state.events").Array() {
			if e.Get("type").String() == "m.room.member" && e.Get("state_key").String() == string(bob.UserID) &&
				e.Get("content.membership").String() == "invite" && e.Get("sender").String() == string(alice.UserID) {
				sawInvite = true
			}
			if e.Get("event_id").Exists() || e.Get("origin_server_ts").Exists() {
				t.Errorf("invite_state event is not stripped: %s", e.Raw)
			}
		}
		if !sawInvite {
			t.Fatalf("invite section lacks bob's invite: %s", resp.Get("rooms").Raw)
		}
		// the invitee sees none of the room's timeline
		if room(resp, "join", roomID).Exists() {
			t.Error("invited room also in join")
		}

		bobSince = resp.Get("next_batch").String()
		mustJoin(t, bob, roomID)
		mustSend(t, alice, roomID, "hallo")
		resp = syncRaw(t, bob, map[string]string{"since": bobSince})
		joined := room(resp, "join", roomID)
		// joined in the window: the whole state, not a delta
		all := stateKeys(joined.Get("state"))
		for _, e := range joined.Get("timeline.events").Array() {
			if e.Get("state_key").Exists() {
				all = append(all, e.Get("type").String()+"|"+e.Get("state_key").String())
			}
		}
		for _, k := range []string{"m.room.create|", "m.room.name|", "m.room.member|" + string(alice.UserID)} {
			if !has(all, k) {
				t.Errorf("sync after joining lacks %s: %v", k, all)
			}
		}
		if got := bodies(joined.Get("timeline")); fmt.Sprint(got) != "[hallo]" {
			t.Errorf("timeline after join = %v, want [hallo]", got)
		}

		bobSince = resp.Get("next_batch").String()
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		mustSend(t, alice, roomID, "after bob left")
		resp = syncRaw(t, bob, map[string]string{"since": bobSince})
		left := room(resp, "leave", roomID)
		evs := left.Get("timeline.events").Array()
		if len(evs) == 0 {
			t.Fatalf("leave section lacks the room: %s", resp.Get("rooms").Raw)
		}
		last := evs[len(evs)-1]
		if last.Get("type").String() != "m.room.member" || last.Get("content.membership").String() != "leave" {
			t.Errorf("left room's timeline ends with %s, want bob's leave", last.Raw)
		}
		if has(bodies(left.Get("timeline")), "after bob left") {
			t.Error("left room's timeline shows a message sent after leaving")
		}
		if room(resp, "join", roomID).Exists() {
			t.Error("left room still in join")
		}

		// initial syncs show left rooms only with include_leave
		if room(syncRaw(t, bob, map[string]string{}), "leave", roomID).Exists() {
			t.Error("initial sync without include_leave shows the left room")
		}
		if !room(syncRaw(t, bob, map[string]string{"filter": `{"room":{"include_leave":true}}`}), "leave", roomID).Exists() {
			t.Error("initial sync with include_leave lacks the left room")
		}
	})
}

func TestSyncLazyLoadMembers(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		mustJoin(t, carol, roomID)
		for i := range 5 {
			mustSend(t, bob, roomID, fmt.Sprintf("b%d", i))
		}
		lazy := `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":3}}}`
		resp := syncRaw(t, alice, map[string]string{"filter": lazy})
		joined := room(resp, "join", roomID)
		members := map[string]bool{}
		for _, e := range joined.Get("state.events").Array() {
			if e.Get("type").String() == "m.room.member" {
				members[e.Get("state_key").String()] = true
			}
		}
		if !members[string(bob.UserID)] || !members[string(alice.UserID)] || members[string(carol.UserID)] {
			t.Errorf("lazy-loaded members = %v, want alice and bob (the sender) but not carol", members)
		}
		if joined.Get("summary.m\\.joined_member_count").Int() != 3 {
			t.Errorf("summary = %s, want 3 joined", joined.Get("summary").Raw)
		}
		if n := len(joined.Get("summary.m\\.heroes").Array()); n != 2 {
			t.Errorf("heroes = %s, want bob and carol", joined.Get("summary").Raw)
		}

		// incremental: a new sender's member event comes with their message
		since := resp.Get("next_batch").String()
		mustSend(t, carol, roomID, "c")
		resp = syncRaw(t, alice, map[string]string{"since": since, "filter": lazy})
		members = map[string]bool{}
		for _, e := range room(resp, "join", roomID).Get("state.events").Array() {
			members[e.Get("state_key").String()] = true
		}
		if !members[string(carol.UserID)] {
			t.Errorf("incremental lazy sync lacks the new sender's member event: %s", room(resp, "join", roomID).Raw)
		}

		// without lazy loading every member is there
		resp = syncRaw(t, alice, map[string]string{"filter": `{"room":{"timeline":{"limit":3}}}`})
		if !has(stateKeys(room(resp, "join", roomID).Get("state")), "m.room.member|"+string(carol.UserID)) {
			t.Error("a full initial sync lacks carol's member event")
		}
	})
}

func TestSyncTypingAndReceipts(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, eve := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "eve")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		ev1 := mustSend(t, alice, roomID, "eins")
		mustSend(t, alice, roomID, "zwei")
		ev3 := mustSend(t, alice, roomID, "drei")

		bobInitial := syncRaw(t, bob, map[string]string{})
		if got := room(bobInitial, "join", roomID).Get("unread_notifications.notification_count").Int(); got != 3 {
			t.Errorf("bob's unread count = %d, want 3", got)
		}
		since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()

		if _, err := bob.UserTyping(ctx, roomID, true, 10*time.Second); err != nil {
			t.Fatalf("typing: %v", err)
		}
		if _, err := eve.UserTyping(ctx, roomID, true, 10*time.Second); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("typing in a room one is not in: err = %v, want M_FORBIDDEN", err)
		}
		resp := syncRaw(t, alice, map[string]string{"since": since})
		var typing []string
		for _, e := range room(resp, "join", roomID).Get("ephemeral.events").Array() {
			if e.Get("type").String() == "m.typing" {
				for _, u := range e.Get("content.user_ids").Array() {
					typing = append(typing, u.String())
				}
			}
		}
		if fmt.Sprint(typing) != fmt.Sprint([]string{string(bob.UserID)}) {
			t.Errorf("typing users = %v, want [bob]", typing)
		}

		since = resp.Get("next_batch").String()
		if err := bob.SendReceipt(ctx, roomID, ev3, event.ReceiptTypeRead, nil); err != nil {
			t.Fatalf("receipt: %v", err)
		}
		if err := bob.SendReceipt(ctx, roomID, ev1, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatalf("private receipt: %v", err)
		}
		resp = syncRaw(t, alice, map[string]string{"since": since})
		var receipt gjson.Result
		for _, e := range room(resp, "join", roomID).Get("ephemeral.events").Array() {
			if e.Get("type").String() == "m.receipt" {
				receipt = e
			}
		}
		path := gjson.Escape(string(ev3)) + ".m\\.read." + gjson.Escape(string(bob.UserID)) + ".ts"
		if !receipt.Get("content." + path).Exists() {
			t.Errorf("alice does not see bob's read receipt: %s", receipt.Raw)
		}
		if strings.Contains(receipt.Raw, "m.read.private") {
			t.Errorf("alice sees bob's private receipt: %s", receipt.Raw)
		}
		bobResp := syncRaw(t, bob, map[string]string{"since": bobInitial.Get("next_batch").String()})
		if !strings.Contains(room(bobResp, "join", roomID).Get("ephemeral").Raw, "m.read.private") {
			t.Errorf("bob does not see his own private receipt: %s", room(bobResp, "join", roomID).Get("ephemeral").Raw)
		}
		if got := room(bobResp, "join", roomID).Get("unread_notifications.notification_count").Int(); got != 0 {
			t.Errorf("bob's unread count after reading = %d, want 0", got)
		}
	})
}

func TestReceiptAndTypingErrors(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	ev := mustSend(t, alice, roomID, "x")
	post := func(c *mautrix.Client, path string, body any) error {
		parts := mautrix.ClientURLPath{"v3", "rooms", string(roomID)}
		for _, p := range strings.Split(path, "/") {
			parts = append(parts, p)
		}
		_, err := c.MakeRequest(ctx, "POST", c.BuildClientURL(parts...), body, nil)
		return err
	}
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"unknown receipt type", func() error { return post(alice, "receipt/m.unknown/"+string(ev), struct{}{}) }, "M_INVALID_PARAM"},
		{"unknown event", func() error { return post(alice, "receipt/m.read/$nope", struct{}{}) }, "M_NOT_FOUND"},
		{"fully_read with thread", func() error {
			return post(alice, "receipt/m.fully_read/"+string(ev), map[string]string{"thread_id": "main"})
		}, "M_INVALID_PARAM"},
		{"bad thread id", func() error {
			return post(alice, "receipt/m.read/"+string(ev), map[string]string{"thread_id": "nope"})
		}, "M_INVALID_PARAM"},
		{"receipt by non-member", func() error { return post(bob, "receipt/m.read/"+string(ev), struct{}{}) }, "M_FORBIDDEN"},
		{"read markers by non-member", func() error { return post(bob, "read_markers", map[string]string{"m.read": string(ev)}) }, "M_FORBIDDEN"},
		{"typing for someone else", func() error {
			_, err := alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "rooms", roomID, "typing", bob.UserID), map[string]any{"typing": true}, nil)
			return err
		}, "M_FORBIDDEN"},
		{"typing without typing", func() error {
			_, err := alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "rooms", roomID, "typing", alice.UserID), map[string]any{}, nil)
			return err
		}, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hstest.ErrCode(tc.do()); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReadMarkersFullyReadIsRoomAccountData(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	ev := mustSend(t, alice, roomID, "x")
	since := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
	if err := alice.SetReadMarkers(ctx, roomID, map[string]string{"m.fully_read": string(ev), "m.read": string(ev)}); err != nil {
		t.Fatalf("read_markers: %v", err)
	}
	resp := syncRaw(t, alice, map[string]string{"since": since})
	joined := room(resp, "join", roomID)
	var fully string
	for _, e := range joined.Get("account_data.events").Array() {
		if e.Get("type").String() == "m.fully_read" {
			fully = e.Get("content.event_id").String()
		}
	}
	if fully != string(ev) {
		t.Errorf("m.fully_read in room account data = %q, want %s (%s)", fully, ev, joined.Raw)
	}
	if !strings.Contains(joined.Get("ephemeral").Raw, `"m.read"`) {
		t.Errorf("read marker m.read did not become a receipt: %s", joined.Get("ephemeral").Raw)
	}
}

func TestSyncBadParameters(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	for _, tc := range []struct {
		name   string
		params map[string]string
		want   string
	}{
		{"malformed since", map[string]string{"since": "banana"}, "M_INVALID_PARAM"},
		{"negative timeout", map[string]string{"timeout": "-5"}, "M_INVALID_PARAM"},
		{"filter not JSON", map[string]string{"filter": `{"room":`}, "M_BAD_JSON"},
		{"filter wrong shape", map[string]string{"filter": `{"room":{"timeline":{"limit":"ten"}}}`}, "M_BAD_JSON"},
		{"unknown filter ID", map[string]string{"filter": "424242"}, "M_INVALID_PARAM"},
		{"bad full_state", map[string]string{"full_state": "yes"}, "M_INVALID_PARAM"},
		{"bad set_presence", map[string]string{"set_presence": "busy"}, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := syncErr(alice, tc.params)
			if got := hstest.ErrCode(err); got != tc.want {
				t.Errorf("errcode = %q (%v), want %s", got, err, tc.want)
			}
		})
	}
}

func TestSyncStoredFilter(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	for i := range 4 {
		mustSend(t, alice, roomID, fmt.Sprintf("m%d", i))
	}
	limit := 2
	f, err := alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: limit}}})
	if err != nil {
		t.Fatalf("create filter: %v", err)
	}
	resp := syncRaw(t, alice, map[string]string{"filter": f.FilterID})
	if got := bodies(room(resp, "join", roomID).Get("timeline")); fmt.Sprint(got) != "[m2 m3]" {
		t.Errorf("timeline with stored filter = %v, want [m2 m3]", got)
	}
	// mautrix parses the whole response
	var parsed mautrix.RespSync
	if err := json.Unmarshal([]byte(resp.Raw), &parsed); err != nil {
		t.Fatalf("mautrix cannot parse the sync response: %v", err)
	}
	if parsed.Rooms.Join[roomID] == nil {
		t.Error("mautrix sees no joined room")
	}
}

func TestSyncToDeviceDeliveredOnceAndAcknowledged(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		initial := syncRaw(t, alice, map[string]string{})
		if !initial.Get("device_one_time_keys_count").Exists() || !initial.Get("device_unused_fallback_key_types").IsArray() {
			t.Errorf("initial sync lacks the key counts: %s", initial.Raw)
		}
		since := initial.Get("next_batch").String()
		_, err := bob.SendToDevice(ctx, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{alice.UserID: {alice.DeviceID: {Raw: map[string]any{"n": 1}}}},
		})
		if err != nil {
			t.Fatalf("sendToDevice: %v", err)
		}
		resp := syncRaw(t, alice, map[string]string{"since": since, "timeout": "5000"})
		msgs := resp.Get("to_device.events").Array()
		if len(msgs) != 1 || msgs[0].Get("type").String() != "org.example.ping" || msgs[0].Get("sender").String() != string(bob.UserID) {
			t.Fatalf("to_device = %s, want bob's ping", resp.Get("to_device").Raw)
		}
		// a lost response: the client retries its old token and gets the
		// message again, because it never confirmed it
		retry := syncRaw(t, alice, map[string]string{"since": since})
		if n := len(retry.Get("to_device.events").Array()); n != 1 {
			t.Errorf("retry with the old token: %d to-device messages, want 1", n)
		}
		// syncing on from the new token acknowledges it: never again
		next := syncRaw(t, alice, map[string]string{"since": resp.Get("next_batch").String()})
		if n := len(next.Get("to_device.events").Array()); n != 0 {
			t.Errorf("to-device message delivered again after acknowledgement: %s", next.Get("to_device").Raw)
		}
	})
}

func TestSyncProfileChangeIsNotAJoin(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Flur"})
		aliceSince := syncRaw(t, alice, map[string]string{}).Get("next_batch").String()
		bobSince := syncRaw(t, bob, map[string]string{}).Get("next_batch").String()

		mustJoin(t, bob, roomID)
		if err := bob.SetDisplayName(ctx, "Bob B."); err != nil {
			t.Fatalf("set displayname: %v", err)
		}
		if err := alice.SetDisplayName(ctx, "Dr. Alice"); err != nil {
			t.Fatalf("set displayname: %v", err)
		}
		if membership(t, srv, roomID, bob.UserID) != "join" {
			t.Fatal("bob is not joined")
		}

		// alice only changed her name: a delta, no full state
		resp := syncRaw(t, alice, map[string]string{"since": aliceSince})
		renamed := false
		for _, e := range room(resp, "join", roomID).Get("timeline.events").Array() {
			renamed = renamed || (e.Get("state_key").String() == string(alice.UserID) && e.Get("content.displayname").String() == "Dr. Alice")
		}
		if !renamed {
			t.Fatalf("alice's rename is not in her timeline: %s", room(resp, "join", roomID).Raw)
		}
		if n := len(room(resp, "join", roomID).Get("state.events").Array()); n != 0 {
			t.Errorf("a profile change sent %d state events, want a plain delta", n)
		}
		// bob joined and then renamed himself: still the full state
		resp = syncRaw(t, bob, map[string]string{"since": bobSince})
		all := stateKeys(room(resp, "join", roomID).Get("state"))
		for _, e := range room(resp, "join", roomID).Get("timeline.events").Array() {
			if e.Get("state_key").Exists() {
				all = append(all, e.Get("type").String()+"|"+e.Get("state_key").String())
			}
		}
		if !has(all, "m.room.create|") || !has(all, "m.room.name|") {
			t.Errorf("join followed by a rename lost the full state: %v", all)
		}
	})
}

func TestSyncKnockSection(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Sprechstunde",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		since := syncRaw(t, bob, map[string]string{}).Get("next_batch").String()
		if _, err := bob.KnockRoom(ctx, string(roomID), &mautrix.ReqKnockRoom{}); err != nil {
			t.Fatalf("knock: %v", err)
		}
		resp := syncRaw(t, bob, map[string]string{"since": since})
		var sawKnock, sawName bool
		for _, e := range room(resp, "knock", roomID).Get("knock_state.events").Array() {
			sawKnock = sawKnock || (e.Get("type").String() == "m.room.member" && e.Get("content.membership").String() == "knock")
			sawName = sawName || e.Get("content.name").String() == "Sprechstunde"
		}
		if !sawKnock || !sawName {
			t.Errorf("knock section = %s, want the knock and the room name", resp.Get("rooms").Raw)
		}
		if room(resp, "join", roomID).Exists() || room(resp, "invite", roomID).Exists() {
			t.Error("knocked room appears in join or invite")
		}
	})
}

func TestSyncHistoryVisibility(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		for _, tc := range []struct {
			visibility string
			wantBefore bool
		}{
			{"joined", false},
			{"shared", true},
		} {
			t.Run(tc.visibility, func(t *testing.T) {
				roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat",
					InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": tc.visibility}}}}})
				mustSend(t, alice, roomID, "before bob")
				mustJoin(t, bob, roomID)
				mustSend(t, alice, roomID, "after bob")
				got := bodies(room(syncRaw(t, bob, map[string]string{}), "join", roomID).Get("timeline"))
				if has(got, "before bob") != tc.wantBefore || !has(got, "after bob") {
					t.Errorf("bob's timeline = %v; want the earlier message: %v", got, tc.wantBefore)
				}
			})
		}
	})
}

func TestSyncTypingExpiresAndWakesSyncers(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	mustJoin(t, bob, roomID)
	if _, err := bob.UserTyping(ctx, roomID, true, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	resp := syncRaw(t, alice, map[string]string{})
	if !strings.Contains(room(resp, "join", roomID).Get("ephemeral").Raw, string(bob.UserID)) {
		t.Fatalf("bob is not typing in the initial sync: %s", room(resp, "join", roomID).Get("ephemeral").Raw)
	}
	start := time.Now()
	resp = syncRaw(t, alice, map[string]string{"since": resp.Get("next_batch").String(), "timeout": "10000"})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("typing expiry woke the long-poll only after %v", took)
	}
	var typing gjson.Result
	for _, e := range room(resp, "join", roomID).Get("ephemeral.events").Array() {
		if e.Get("type").String() == "m.typing" {
			typing = e
		}
	}
	if !typing.Exists() || len(typing.Get("content.user_ids").Array()) != 0 {
		t.Errorf("after expiry m.typing = %s, want an empty user_ids", typing.Raw)
	}
}

func TestSyncEventFormatFederation(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	mustSend(t, alice, roomID, "x")
	resp := syncRaw(t, alice, map[string]string{"filter": `{"event_format":"federation","room":{"timeline":{"limit":1}}}`})
	ev := room(resp, "join", roomID).Get("timeline.events.0")
	if !ev.Get("signatures").Exists() || !ev.Get("hashes").Exists() {
		t.Errorf("federation format event lacks signatures/hashes: %s", ev.Raw)
	}
	resp = syncRaw(t, alice, map[string]string{"filter": `{"room":{"timeline":{"limit":1}}}`})
	ev = room(resp, "join", roomID).Get("timeline.events.0")
	if ev.Get("signatures").Exists() || !ev.Get("unsigned.age").Exists() {
		t.Errorf("client format event = %s, want no signatures and an age", ev.Raw)
	}
}

func TestSyncUnreadCounts(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	mustJoin(t, bob, roomID)
	first := mustSend(t, alice, roomID, "hallo")
	mustSend(t, alice, roomID, "are you there, "+string(bob.UserID)+"?")
	if _, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "bot says"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* hallo!",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "hallo!"}, "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": first}}); err != nil {
		t.Fatal(err)
	}
	mustSend(t, bob, roomID, "own messages do not count")
	counts := room(syncRaw(t, bob, map[string]string{}), "join", roomID).Get("unread_notifications")
	if counts.Get("notification_count").Int() != 2 || counts.Get("highlight_count").Int() != 1 {
		t.Errorf("unread_notifications = %s, want 2 notifications (no notice, no edit), 1 highlight", counts.Raw)
	}
}

func TestSyncFilters(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		shown := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "shown"})
		hidden := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "hidden"})
		mustSend(t, alice, shown, "text")
		if _, err := alice.UserTyping(ctx, shown, true, time.Minute); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			filter string
			check  func(t *testing.T, resp gjson.Result)
		}{
			{"not_rooms", `{"room":{"not_rooms":["` + string(hidden) + `"]}}`, func(t *testing.T, resp gjson.Result) {
				if room(resp, "join", hidden).Exists() || !room(resp, "join", shown).Exists() {
					t.Errorf("rooms = %v", resp.Get("rooms.join|@keys").Raw)
				}
			}},
			{"rooms", `{"room":{"rooms":["` + string(hidden) + `"]}}`, func(t *testing.T, resp gjson.Result) {
				if !room(resp, "join", hidden).Exists() || room(resp, "join", shown).Exists() {
					t.Errorf("rooms = %v", resp.Get("rooms.join|@keys").Raw)
				}
			}},
			{"timeline types", `{"room":{"timeline":{"types":["m.room.message"]}}}`, func(t *testing.T, resp gjson.Result) {
				for _, e := range room(resp, "join", shown).Get("timeline.events").Array() {
					if e.Get("type").String() != "m.room.message" {
						t.Errorf("timeline has %s", e.Get("type").String())
					}
				}
				if len(bodies(room(resp, "join", shown).Get("timeline"))) != 1 {
					t.Error("the message is missing")
				}
			}},
			{"state not_types", `{"room":{"state":{"not_types":["m.room.member"]},"timeline":{"limit":1}}}`, func(t *testing.T, resp gjson.Result) {
				keys := stateKeys(room(resp, "join", shown).Get("state"))
				if has(keys, "m.room.member|"+string(alice.UserID)) || !has(keys, "m.room.name|") {
					t.Errorf("state = %v", keys)
				}
			}},
			{"no ephemeral", `{"room":{"ephemeral":{"types":[]}}}`, func(t *testing.T, resp gjson.Result) {
				if n := len(room(resp, "join", shown).Get("ephemeral.events").Array()); n != 0 {
					t.Errorf("%d ephemeral events", n)
				}
			}},
			{"ephemeral kept", `{}`, func(t *testing.T, resp gjson.Result) {
				if n := len(room(resp, "join", shown).Get("ephemeral.events").Array()); n != 1 {
					t.Errorf("%d ephemeral events, want the typing one", n)
				}
			}},
			{"account data types", `{"account_data":{"not_types":["m.push_rules"]}}`, func(t *testing.T, resp gjson.Result) {
				if strings.Contains(resp.Get("account_data").Raw, "m.push_rules") {
					t.Error("m.push_rules not filtered out")
				}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.check(t, syncRaw(t, alice, map[string]string{"filter": tc.filter}))
			})
		}
	})
}

// TestMautrixSyncLoop runs mautrix's own sync loop (filter upload, initial
// sync, long-polls) the way a bot or app would.
func TestMautrixSyncLoop(t *testing.T) {
	srv := hstest.New(t)
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	mustJoin(t, bob, roomID)

	got := make(chan string, 10)
	syncer := alice.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		if evt.Sender == bob.UserID {
			got <- evt.Content.AsMessage().Body
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- alice.SyncWithContext(ctx) }()

	time.Sleep(300 * time.Millisecond) // let the loop reach its long-poll
	mustSend(t, bob, roomID, "über mautrix")
	select {
	case body := <-got:
		if body != "über mautrix" {
			t.Errorf("got %q", body)
		}
	case err := <-done:
		t.Fatalf("sync loop ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("mautrix's sync loop never delivered bob's message")
	}
	cancel()
	<-done
}

func TestSyncJoinedAndLeftInWindowGetsFullState(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "kurz"})
	since := syncRaw(t, bob, map[string]string{}).Get("next_batch").String()
	other := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "abgelehnt",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
	mustJoin(t, bob, roomID)
	for i := range 12 {
		mustSend(t, alice, roomID, fmt.Sprintf("m%d", i))
	}
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	// an invite bob rejects: he never saw the room, and gets no state
	if _, err := alice.InviteUser(ctx, other, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, other); err != nil {
		t.Fatal(err)
	}
	resp := syncRaw(t, bob, map[string]string{"since": since, "filter": `{"room":{"timeline":{"limit":3}}}`})
	left := room(resp, "leave", roomID)
	if !has(stateKeys(left.Get("state")), "m.room.name|") {
		t.Errorf("a room joined and left since the token lacks its state: %s", left.Get("state").Raw)
	}
	rejected := room(resp, "leave", other)
	if !rejected.Exists() {
		t.Fatalf("rejected invite not in leave: %s", resp.Get("rooms").Raw)
	}
	if n := len(rejected.Get("state.events").Array()); n != 0 {
		t.Errorf("a rejected invite leaks %d state events: %s", n, rejected.Get("state").Raw)
	}
	evs := rejected.Get("timeline.events").Array()
	if len(evs) == 0 || evs[len(evs)-1].Get("content.membership").String() != "leave" {
		t.Errorf("a rejected invite's timeline lacks bob's leave: %s", rejected.Get("timeline").Raw)
	}
	if has(stateKeys(rejected.Get("state")), "m.room.name|") {
		t.Errorf("a rejected invite leaks the room's state: %s", rejected.Get("state").Raw)
	}
}

func TestSyncUnreadThreadNotifications(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, bob, roomID)
		root := mustSend(t, alice, roomID, "root")
		var replies []id.EventID
		for i := range 2 {
			resp, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("reply %d", i),
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
			if err != nil {
				t.Fatal(err)
			}
			replies = append(replies, resp.EventID)
		}
		threads := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		counts := func(filter string) (int64, gjson.Result) {
			t.Helper()
			r := room(syncRaw(t, bob, map[string]string{"filter": filter}), "join", roomID)
			return r.Get("unread_notifications.notification_count").Int(), r.Get("unread_thread_notifications")
		}
		if main, _ := counts(`{}`); main != 3 {
			t.Errorf("without threads apart: %d unread, want 3", main)
		}
		main, th := counts(threads)
		if main != 1 || th.Get(gjson.Escape(string(root))+".notification_count").Int() != 2 {
			t.Errorf("threads apart: main %d, threads %s; want 1 and 2 in the thread", main, th.Raw)
		}
		// a receipt in the thread reads the thread, not the main timeline
		if err := bob.SendReceipt(ctx, roomID, replies[0], event.ReceiptTypeRead, map[string]string{"thread_id": string(root)}); err != nil {
			t.Fatal(err)
		}
		main, th = counts(threads)
		if main != 1 || th.Get(gjson.Escape(string(root))+".notification_count").Int() != 1 {
			t.Errorf("after a thread receipt: main %d, threads %s; want 1 and 1", main, th.Raw)
		}
		// without threads apart the one count still honours the thread's
		// receipt: the root and the second reply are unread
		if all, _ := counts(`{}`); all != 2 {
			t.Errorf("after a thread receipt, without threads apart: %d unread, want 2", all)
		}
		// a "main" receipt reads the main timeline only
		if err := bob.SendReceipt(ctx, roomID, root, event.ReceiptTypeRead, map[string]string{"thread_id": "main"}); err != nil {
			t.Fatal(err)
		}
		if all, _ := counts(`{}`); all != 1 {
			t.Errorf("after a main receipt on the root: %d unread, want 1 (the thread's second reply)", all)
		}
		// an unthreaded receipt reads everything up to it
		if err := bob.SendReceipt(ctx, roomID, replies[1], event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		main, th = counts(threads)
		if main != 0 || len(th.Map()) != 0 {
			t.Errorf("after an unthreaded receipt: main %d, threads %s; want nothing unread", main, th.Raw)
		}
	})
}

// Complement TestSync "Newly joined room has correct timeline in
// incremental sync": a room joined since the token has history the client
// never saw, so a timeline that leaves any of it out is limited.
func TestSyncNewlyJoinedRoomTimelineIsLimited(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		filter := `{"room":{"timeline":{"limit":10,"types":["m.room.message"]},"state":{"types":[]}}}`
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for i := range 4 {
			mustSend(t, alice, roomID, fmt.Sprintf("before %d", i))
		}
		since := syncRaw(t, bob, map[string]string{"filter": filter}).Get("next_batch").String()
		for i := range 4 {
			mustSend(t, alice, roomID, fmt.Sprintf("after %d", i))
		}
		mustJoin(t, bob, roomID)
		tl := room(syncRaw(t, bob, map[string]string{"since": since, "filter": filter}), "join", roomID).Get("timeline")
		got := bodies(tl)
		if len(got) != 8 || got[0] != "before 0" || got[7] != "after 3" {
			t.Errorf("timeline of a newly joined room = %v, want the 8 messages it holds", got)
		}
		// the state events before the messages were left out
		if !tl.Get("limited").Bool() {
			t.Errorf("timeline leaves out the room's creation but is not limited: %s", tl.Raw)
		}

		// a room created (and so joined) after the token: nothing left out
		since = syncRaw(t, bob, map[string]string{"filter": filter}).Get("next_batch").String()
		own := mustCreateRoom(t, bob, &mautrix.ReqCreateRoom{})
		mustSend(t, bob, own, "only")
		tl = room(syncRaw(t, bob, map[string]string{"since": since, "filter": `{"room":{"timeline":{"limit":50}}}`}), "join", own).Get("timeline")
		if tl.Get("limited").Bool() || tl.Get("events.0.type").String() != "m.room.create" {
			t.Errorf("timeline of a room created since the token: %s, want it whole and not limited", tl.Raw)
		}
	})
}

// unsigned.membership (spec v1.11, Complement TestMembershipOnEvents) on
// /sync timeline events: the syncing user's membership right after each.
func TestSyncTimelineMembershipOnEvents(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustSend(t, alice, roomID, "before bob")
		mustJoin(t, bob, roomID)
		mustSend(t, alice, roomID, "with bob")
		membership := func(tl gjson.Result) map[string]string {
			out := map[string]string{}
			for _, e := range tl.Get("events").Array() {
				key := e.Get("content.body").String()
				if e.Get("type").String() == "m.room.member" {
					key = e.Get("state_key").String() + " " + e.Get("content.membership").String()
				}
				out[key] = e.Get("unsigned.membership").String()
			}
			return out
		}
		initial := syncRaw(t, bob, map[string]string{})
		got := membership(room(initial, "join", roomID).Get("timeline"))
		want := map[string]string{"before bob": "leave", string(bob.UserID) + " join": "join", "with bob": "join"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("initial sync: unsigned.membership of %q = %q, want %q (all: %v)", k, got[k], v, got)
			}
		}
		if got := membership(room(syncRaw(t, alice, map[string]string{}), "join", roomID).Get("timeline")); got["before bob"] != "join" {
			t.Errorf("the creator's view: %v, want join everywhere", got)
		}

		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		inc := syncRaw(t, bob, map[string]string{"since": initial.Get("next_batch").String()})
		got = membership(room(inc, "leave", roomID).Get("timeline"))
		if got[string(bob.UserID)+" leave"] != "leave" {
			t.Errorf("bob's own leave: unsigned.membership = %v, want leave", got)
		}
	})
}
