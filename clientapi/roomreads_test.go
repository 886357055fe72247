package clientapi_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// say sends a text message and returns its ID.
func say(t *testing.T, c *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatalf("%s says %q: %v", c.UserID, body, err)
	}
	return resp.EventID
}

func textBodies(events []*event.Event) []string {
	out := []string{}
	for _, e := range events {
		if e.Type == event.EventMessage {
			out = append(out, e.Content.Raw["body"].(string))
		}
	}
	return out
}

// get performs a raw authenticated GET and returns the errcode ("" on 2xx).
func get(t *testing.T, c *mautrix.Client, path ...any) string {
	t.Helper()
	_, err := c.MakeRequest(context.Background(), http.MethodGet, c.BuildClientURL(path...), nil, nil)
	return hstest.ErrCode(err)
}

func TestRoomReadsThroughClient(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Consultation", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		room := created.RoomID
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		var sent []string
		for i := range 12 {
			sent = append(sent, fmt.Sprint("msg ", i))
			say(t, []*mautrix.Client{alice, bob}[i%2], room, sent[i])
		}

		t.Run("messages paginate back and forth", func(t *testing.T) {
			var back []string
			var ids []id.EventID
			from := ""
			for range 50 {
				resp, err := bob.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 5)
				if err != nil {
					t.Fatalf("messages: %v", err)
				}
				back = append(back, textBodies(resp.Chunk)...)
				for _, e := range resp.Chunk {
					ids = append(ids, e.ID)
				}
				if resp.End == "" {
					break
				}
				from = resp.End
			}
			slices.Reverse(back)
			if !slices.Equal(back, sent) {
				t.Errorf("backwards pagination gave %v, want %v", back, sent)
			}
			if len(ids) != len(slices.Compact(slices.Clone(ids))) {
				t.Errorf("backwards pagination repeated events")
			}
			resp, err := bob.Messages(ctx, room, "", "", mautrix.DirectionForward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 100)
			if err != nil {
				t.Fatalf("messages forwards: %v", err)
			}
			if got := textBodies(resp.Chunk); !slices.Equal(got, sent) || resp.End != "" {
				t.Errorf("forwards with a types filter gave %v (end %q), want all messages and no end", got, resp.End)
			}
			lazy, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{LazyLoadMembers: true}, 2)
			if err != nil {
				t.Fatalf("messages lazy: %v", err)
			}
			if len(lazy.State) != 2 {
				t.Errorf("lazy-loaded state has %d member events, want alice's and bob's", len(lazy.State))
			}
		})

		t.Run("own transaction id is echoed", func(t *testing.T) {
			resp, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1)
			if err != nil || len(resp.Chunk) != 1 {
				t.Fatalf("messages: %v", err)
			}
			if resp.Chunk[0].Sender != bob.UserID {
				t.Fatalf("newest message is from %s", resp.Chunk[0].Sender)
			}
			resp, err = bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1)
			if err != nil || resp.Chunk[0].Unsigned.TransactionID == "" {
				t.Errorf("bob's own event carries no transaction_id: %v", err)
			}
		})

		t.Run("state, members, event, context", func(t *testing.T) {
			var name event.RoomNameEventContent
			if err := bob.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "Consultation" {
				t.Errorf("room name = %q, %v", name.Name, err)
			}
			full, err := bob.FullStateEvent(ctx, room, event.StateRoomName, "")
			if err != nil || full.ID == "" || full.Sender != alice.UserID {
				t.Errorf("state with format=event = %+v, %v", full, err)
			}
			state, err := bob.State(ctx, room)
			if err != nil || state[event.StateCreate] == nil || len(state[event.StateMember]) != 2 {
				t.Errorf("state: %d members, %v", len(state[event.StateMember]), err)
			}
			members, err := alice.Members(ctx, room, mautrix.ReqMembers{Membership: event.MembershipJoin})
			if err != nil || len(members.Chunk) != 2 {
				t.Errorf("joined members: %v, %v", members, err)
			}
			joined, err := alice.JoinedMembers(ctx, room)
			if err != nil || len(joined.Joined) != 2 {
				t.Errorf("joined_members: %v, %v", joined, err)
			}
			// Complement TestRoomState: both profile keys are always there,
			// null when the member event sets none.
			var raw struct {
				Joined map[string]map[string]any `json:"joined"`
			}
			if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "rooms", room, "joined_members"), nil, &raw); err != nil {
				t.Fatal(err)
			}
			for user, profile := range raw.Joined {
				for _, key := range []string{"display_name", "avatar_url"} {
					v, ok := profile[key]
					if _, isString := v.(string); !ok || (v != nil && !isString) {
						t.Errorf("joined_members %s: %s = %v (present %v), want a string or null", user, key, v, ok)
					}
				}
			}
			rooms, err := bob.JoinedRooms(ctx)
			if err != nil || !slices.Equal(rooms.JoinedRooms, []id.RoomID{room}) {
				t.Errorf("joined_rooms: %v, %v", rooms, err)
			}
			target := say(t, alice, room, "target")
			ev, err := bob.GetEvent(ctx, room, target)
			if err != nil || ev.ID != target || ev.RoomID != room {
				t.Errorf("event: %+v, %v", ev, err)
			}
			cx, err := bob.Context(ctx, room, target, nil, 4)
			if err != nil {
				t.Fatalf("context: %v", err)
			}
			if cx.Event.ID != target || len(cx.EventsBefore) != 2 || len(cx.EventsAfter) != 0 || cx.Start == "" || cx.End == "" || len(cx.State) == 0 {
				t.Errorf("context: event %s, %d before, %d after, start %q end %q, %d state", cx.Event.ID,
					len(cx.EventsBefore), len(cx.EventsAfter), cx.Start, cx.End, len(cx.State))
			}
			ts, err := bob.TimestampToEvent(ctx, room, time.Now().Add(time.Hour), mautrix.DirectionBackward)
			if err != nil || ts.EventID != target {
				t.Errorf("timestamp_to_event: %+v, %v", ts, err)
			}
		})

		t.Run("error codes", func(t *testing.T) {
			for _, tc := range []struct {
				name string
				c    *mautrix.Client
				path []any
				want string
			}{
				{"state for a stranger", carol, []any{"v3", "rooms", room, "state"}, "M_FORBIDDEN"},
				{"messages for a stranger", carol, []any{"v3", "rooms", room, "messages"}, "M_FORBIDDEN"},
				{"members for a stranger", carol, []any{"v3", "rooms", room, "members"}, "M_FORBIDDEN"},
				{"unknown room", bob, []any{"v3", "rooms", "!unknown:hs1.test", "state"}, "M_FORBIDDEN"},
				{"bad room id", bob, []any{"v3", "rooms", "not-a-room", "state"}, "M_INVALID_PARAM"},
				{"missing state", bob, []any{"v3", "rooms", room, "state", "m.room.topic", ""}, "M_NOT_FOUND"},
				{"unknown event", bob, []any{"v3", "rooms", room, "event", "$unknown"}, "M_NOT_FOUND"},
				{"event for a stranger", carol, []any{"v3", "rooms", room, "context", "$unknown"}, "M_NOT_FOUND"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if got := get(t, tc.c, tc.path...); got != tc.want {
						t.Errorf("errcode %q, want %q", got, tc.want)
					}
				})
			}
			for _, q := range []map[string]string{{"dir": "x"}, {"limit": "-1"}, {"from": "garbage"}, {"filter": "not json"}} {
				u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", room, "messages"}, q)
				_, err := bob.MakeRequest(ctx, http.MethodGet, u, nil, nil)
				if got := hstest.ErrCode(err); got != "M_INVALID_PARAM" {
					t.Errorf("messages %v: %q, want M_INVALID_PARAM", q, got)
				}
			}
			u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", room, "members"}, map[string]string{"membership": "joined"})
			if _, err := bob.MakeRequest(ctx, http.MethodGet, u, nil, nil); hstest.ErrCode(err) != "M_INVALID_PARAM" {
				t.Errorf("members?membership=joined: %v, want M_INVALID_PARAM", err)
			}
		})

		t.Run("a user who left reads the state as he left it", func(t *testing.T) {
			if _, err := bob.LeaveRoom(ctx, room); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Renamed"}); err != nil {
				t.Fatal(err)
			}
			after := say(t, alice, room, "after bob left")
			var name event.RoomNameEventContent
			if err := bob.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "Consultation" {
				t.Errorf("bob reads name %q, %v; want the name when he left", name.Name, err)
			}
			resp, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			if got := textBodies(resp.Chunk); slices.Contains(got, "after bob left") || !slices.Contains(got, "target") {
				t.Errorf("bob, departed, reads %v", got)
			}
			if _, err := bob.GetEvent(ctx, room, after); hstest.ErrCode(err) != "M_NOT_FOUND" {
				t.Errorf("bob reads an event after his departure: %v", err)
			}
			if _, err := bob.JoinedMembers(ctx, room); hstest.ErrCode(err) != "M_FORBIDDEN" {
				t.Errorf("joined_members after leaving: %v, want M_FORBIDDEN", err)
			}
		})

		t.Run("a user who forgot the room reads nothing of it", func(t *testing.T) {
			// Complement TestRoomForget: forgetting gives up the history.
			if _, err := bob.ForgetRoom(ctx, room); err != nil {
				t.Fatal(err)
			}
			for _, path := range [][]any{
				{"v3", "rooms", room, "messages"},
				{"v3", "rooms", room, "state"},
				{"v3", "rooms", room, "members"},
				{"v3", "rooms", room, "state", "m.room.name", ""},
			} {
				if got := get(t, bob, path...); got != "M_FORBIDDEN" {
					t.Errorf("GET %v after forget: %q, want M_FORBIDDEN", path[2:], got)
				}
			}
		})

		t.Run("ignored users' events are not served", func(t *testing.T) {
			if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{bob.UserID.String(): map[string]any{}}}); err != nil {
				t.Fatal(err)
			}
			resp, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.Chunk {
				if e.Sender == bob.UserID {
					t.Fatalf("alice ignores bob but gets his %s", e.Type)
				}
			}
			if got := textBodies(resp.Chunk); !slices.Contains(got, "msg 0") || slices.Contains(got, "msg 1") {
				t.Errorf("alice reads %v", got)
			}
		})
	})
}

func TestHistoryVisibilityThroughClient(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		for _, tc := range []struct {
			visibility event.HistoryVisibility
			want       []string
		}{
			{event.HistoryVisibilityJoined, []string{"after"}},
			{event.HistoryVisibilityInvited, []string{"invited", "after"}},
			{event.HistoryVisibilityShared, []string{"before", "invited", "after"}},
		} {
			t.Run(string(tc.visibility), func(t *testing.T) {
				created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
				if err != nil {
					t.Fatal(err)
				}
				room := created.RoomID
				if _, err := alice.SendStateEvent(ctx, room, event.StateHistoryVisibility, "",
					&event.HistoryVisibilityEventContent{HistoryVisibility: tc.visibility}); err != nil {
					t.Fatal(err)
				}
				say(t, alice, room, "before")
				if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
					t.Fatal(err)
				}
				say(t, alice, room, "invited")
				if _, err := bob.JoinRoomByID(ctx, room); err != nil {
					t.Fatal(err)
				}
				say(t, alice, room, "after")
				resp, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
				if err != nil {
					t.Fatal(err)
				}
				got := textBodies(resp.Chunk)
				slices.Reverse(got)
				if !slices.Equal(got, tc.want) {
					t.Errorf("bob sees %v, want %v", got, tc.want)
				}
			})
		}
	})
}

func TestRelationsAndThreadsThroughClient(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		root := say(t, alice, room, "root")
		for i := range 3 {
			content := &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprint("reply ", i)}
			content.RelatesTo = (&event.RelatesTo{}).SetThread(root, root)
			if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, content); err != nil {
				t.Fatal(err)
			}
		}
		rel, err := alice.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, Limit: 2})
		if err != nil {
			t.Fatalf("relations: %v", err)
		}
		if len(rel.Chunk) != 2 || rel.NextBatch == "" {
			t.Errorf("relations page: %d events, next %q", len(rel.Chunk), rel.NextBatch)
		}
		rel2, err := alice.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, Limit: 2, From: rel.NextBatch})
		if err != nil || len(rel2.Chunk) != 1 || rel2.NextBatch != "" {
			t.Errorf("relations page 2: %+v, %v", rel2, err)
		}
		threads, err := alice.GetThreads(ctx, room, &mautrix.ReqGetThreads{})
		if err != nil {
			t.Fatalf("threads: %v", err)
		}
		if len(threads.Chunk) != 1 || threads.Chunk[0].ID != root {
			t.Fatalf("threads: %+v", threads.Chunk)
		}
		summary := threads.Chunk[0].Unsigned.Relations
		if summary == nil || summary.Thread == nil || summary.Thread.Count != 3 || !summary.Thread.CurrentUserParticipated {
			t.Errorf("thread summary = %+v", summary)
		}
		edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "* root, edited", NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "root, edited"}}
		edit.SetEdit(root)
		editResp, err := alice.SendMessageEvent(ctx, room, event.EventMessage, edit)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := alice.GetEvent(ctx, room, root)
		if err != nil {
			t.Fatal(err)
		}
		if rel := ev.Unsigned.Relations; rel == nil || rel.Thread == nil || rel.Thread.Count != 3 || rel.LatestEdit == nil || rel.LatestEdit.ID != editResp.EventID {
			t.Errorf("bundled aggregations of the root in /event = %+v", rel)
		}
		msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		bundled := false
		for _, e := range msgs.Chunk {
			if e.ID == root {
				bundled = e.Unsigned.Relations != nil && e.Unsigned.Relations.Thread != nil && e.Unsigned.Relations.Thread.LatestEvent != nil
			}
		}
		if !bundled {
			t.Error("the root in /messages carries no thread bundle")
		}
	})
}

func TestDirectoryThroughClient(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		pub, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Front desk", RoomAliasName: "frontdesk"})
		if err != nil {
			t.Fatal(err)
		}
		priv, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, priv.RoomID); err != nil {
			t.Fatal(err)
		}

		res, err := carol.ResolveAlias(ctx, "#frontdesk:hs1.test")
		if err != nil || res.RoomID != pub.RoomID || !slices.Equal(res.Servers, []string{"hs1.test"}) {
			t.Errorf("resolve alias: %+v, %v", res, err)
		}
		if _, err := carol.ResolveAlias(ctx, "#nothing:hs1.test"); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("unknown alias: %v, want M_NOT_FOUND", err)
		}
		if got := get(t, carol, "v3", "directory", "room", "nothing"); got != "M_INVALID_PARAM" {
			t.Errorf("malformed alias: %q, want M_INVALID_PARAM", got)
		}
		aliases, err := alice.GetAliases(ctx, pub.RoomID)
		if err != nil || len(aliases.Aliases) != 1 {
			t.Errorf("aliases: %+v, %v", aliases, err)
		}
		if _, err := carol.GetAliases(ctx, priv.RoomID); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("aliases of a private room for a stranger: %v", err)
		}
		for room, want := range map[id.RoomID]mautrix.RoomDirectoryVisibility{pub.RoomID: "public", priv.RoomID: "private"} {
			if v, err := carol.GetRoomDirectoryVisibility(ctx, room); err != nil || v != want {
				t.Errorf("directory visibility %s = %q, %v; want %s", room, v, err, want)
			}
		}
		list, err := carol.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 10})
		if err != nil || len(list.Chunk) != 1 || list.Chunk[0].Name != "Front desk" || list.Chunk[0].NumJoinedMembers != 1 {
			t.Errorf("publicRooms GET: %+v, %v", list, err)
		}
		found, err := carol.PublicRooms(ctx, &mautrix.ReqPublicRooms{Filter: &mautrix.PublicRoomsFilter{GenericSearchTerm: "front"}})
		if err != nil || len(found.Chunk) != 1 {
			t.Errorf("publicRooms POST search: %+v, %v", found, err)
		}
		none, err := carol.PublicRooms(ctx, &mautrix.ReqPublicRooms{Filter: &mautrix.PublicRoomsFilter{GenericSearchTerm: "lab"}})
		if err != nil || len(none.Chunk) != 0 {
			t.Errorf("publicRooms POST search for nothing: %+v, %v", none, err)
		}

		summary, err := carol.GetRoomSummary(ctx, "#frontdesk:hs1.test")
		if err != nil || summary.RoomID != pub.RoomID || summary.Name != "Front desk" || summary.JoinRule != "public" {
			t.Errorf("room summary of the public room: %+v, %v", summary, err)
		}
		if _, err := carol.GetRoomSummary(ctx, priv.RoomID.String()); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("room summary of a private room for a stranger: %v, want M_NOT_FOUND", err)
		}
		if summary, err := bob.GetRoomSummary(ctx, priv.RoomID.String()); err != nil || summary.Membership != event.MembershipJoin {
			t.Errorf("room summary for a member: %+v, %v", summary, err)
		}

		users, err := bob.SearchUserDirectory(ctx, "ALI", 10)
		if err != nil || len(users.Results) != 1 || users.Results[0].UserID != alice.UserID {
			t.Errorf("bob finds alice: %+v, %v", users, err)
		}
		if users, err := carol.SearchUserDirectory(ctx, "bob", 10); err != nil || len(users.Results) != 0 {
			t.Errorf("carol shares no room with bob but finds %+v, %v", users, err)
		}
		if users, err := carol.SearchUserDirectory(ctx, "alice", 10); err != nil || len(users.Results) != 1 {
			t.Errorf("carol finds alice through the public room: %+v, %v", users, err)
		}
	})
}

// TestMembershipOnEventsThroughClient: timeline reads carry the reader's
// membership at each event in unsigned.membership (spec v1.11; Complement
// TestMembershipOnEvents checks the same on /sync).
func TestMembershipOnEventsThroughClient(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		pre := say(t, alice, room, "prejoin")
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		post := say(t, alice, room, "postjoin")
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}

		resp, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		got := map[id.EventID]event.Membership{}
		var bobJoin, bobLeave id.EventID
		for _, e := range resp.Chunk {
			got[e.ID] = e.Unsigned.Membership
			if e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String() {
				if e.Content.Raw["membership"] == "join" {
					bobJoin = e.ID
				} else {
					bobLeave = e.ID
				}
			}
		}
		for _, tc := range []struct {
			name string
			ev   id.EventID
			want event.Membership
		}{
			{"before bob joined", pre, event.MembershipLeave},
			{"bob's own join counts", bobJoin, event.MembershipJoin},
			{"while joined", post, event.MembershipJoin},
			{"bob's own leave counts", bobLeave, event.MembershipLeave},
		} {
			if got[tc.ev] != tc.want {
				t.Errorf("%s (%s): unsigned.membership %q, want %q", tc.name, tc.ev, got[tc.ev], tc.want)
			}
		}
		ev, err := alice.GetEvent(ctx, room, pre)
		if err != nil || ev.Unsigned.Membership != event.MembershipJoin {
			t.Errorf("alice's /event: %q, %v; want join", ev.Unsigned.Membership, err)
		}
	})
}
