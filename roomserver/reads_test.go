package roomserver

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

const (
	carol = "@carol:hs1.test"
	dave  = "@dave:hs1.test"
)

// readFixture is a room with helpers that fail the test on error.
type readFixture struct {
	t    *testing.T
	s    *Service
	db   *storage.DB
	room string
}

func newReadFixture(t *testing.T, db *storage.DB, req CreateRoomRequest) *readFixture {
	t.Helper()
	s := newTestService(t, db)
	if req.Creator == "" {
		req.Creator = alice
	}
	res, err := s.CreateRoom(t.Context(), req)
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return &readFixture{t: t, s: s, db: db, room: res.RoomID}
}

func (f *readFixture) say(sender, body string) string {
	f.t.Helper()
	id, err := f.s.Send(f.t.Context(), SendRequest{RoomID: f.room, Sender: sender, Type: "m.room.message",
		Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))})
	if err != nil {
		f.t.Fatalf("%s says %q: %v", sender, body, err)
	}
	return id
}

func (f *readFixture) send(sender, typ, content string) string {
	f.t.Helper()
	id, err := f.s.Send(f.t.Context(), SendRequest{RoomID: f.room, Sender: sender, Type: typ, Content: json.RawMessage(content)})
	if err != nil {
		f.t.Fatalf("%s sends %s: %v", sender, typ, err)
	}
	return id
}

func (f *readFixture) state(sender, typ, key, content string) string {
	f.t.Helper()
	id, err := f.s.Send(f.t.Context(), SendRequest{RoomID: f.room, Sender: sender, Type: typ, StateKey: &key, Content: json.RawMessage(content)})
	if err != nil {
		f.t.Fatalf("%s sets %s/%s: %v", sender, typ, key, err)
	}
	return id
}

func (f *readFixture) invite(sender, target string) {
	f.t.Helper()
	if _, err := f.s.Invite(f.t.Context(), MembershipRequest{RoomID: f.room, Sender: sender, Target: target}); err != nil {
		f.t.Fatalf("invite %s: %v", target, err)
	}
}

func (f *readFixture) join(user string) {
	f.t.Helper()
	if _, err := f.s.Join(f.t.Context(), user, f.room, ""); err != nil {
		f.t.Fatalf("join %s: %v", user, err)
	}
}

func (f *readFixture) leave(user string) {
	f.t.Helper()
	if err := f.s.Leave(f.t.Context(), user, f.room, ""); err != nil {
		f.t.Fatalf("leave %s: %v", user, err)
	}
}

// bodies returns the bodies of the m.room.message events among events.
func bodies(events []*StoredEvent) []string {
	out := []string{}
	for _, e := range events {
		if e.Type == "m.room.message" {
			out = append(out, gjson.GetBytes(e.JSON, "content.body").String())
		}
	}
	return out
}

func TestStateAtResolvesDeltaChains(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		// Written directly: a snapshot, a delta that removes and adds, and
		// a delta on top of it. NIDs are arbitrary; StateAt does not load events.
		for _, q := range []string{
			`INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len) VALUES (101, 1, NULL, 0)`,
			`INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len) VALUES (102, 1, 101, 1)`,
			`INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len) VALUES (103, 1, 102, 2)`,
			`INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len) VALUES (104, 1, 102, 2)`,
			`INSERT INTO state_group_entries VALUES (101, 'm.room.create', '', 1)`,
			`INSERT INTO state_group_entries VALUES (101, 'm.room.member', '@a:x', 2)`,
			`INSERT INTO state_group_entries VALUES (101, 'm.room.name', '', 3)`,
			`INSERT INTO state_group_entries VALUES (102, 'm.room.name', '', 0)`,
			`INSERT INTO state_group_entries VALUES (102, 'm.room.member', '@b:x', 4)`,
			`INSERT INTO state_group_entries VALUES (103, 'm.room.member', '@a:x', 5)`,
			`INSERT INTO state_group_entries VALUES (104, 'm.room.topic', '', 6)`,
		} {
			if _, err := db.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		s := newTestService(t, db)
		type m = map[[2]string]int64
		create, ma, mb, name, topic := [2]string{"m.room.create", ""}, [2]string{"m.room.member", "@a:x"},
			[2]string{"m.room.member", "@b:x"}, [2]string{"m.room.name", ""}, [2]string{"m.room.topic", ""}
		for _, tc := range []struct {
			group int64
			want  m
		}{
			{0, m{}},
			{999, m{}},
			{101, m{create: 1, ma: 2, name: 3}},
			{102, m{create: 1, ma: 2, mb: 4}},
			{103, m{create: 1, ma: 5, mb: 4}},
			{104, m{create: 1, ma: 2, mb: 4, topic: 6}},
		} {
			got, err := s.StateAt(ctx, tc.group)
			if err != nil {
				t.Fatalf("StateAt(%d): %v", tc.group, err)
			}
			if diff := cmpDiff(tc.want, got); diff != "" {
				t.Errorf("StateAt(%d) (-want +got):\n%s", tc.group, diff)
			}
		}
		// Several groups and a key filter in one read.
		got, err := s.statesAt(ctx, []int64{101, 103, 104}, &stateFilter{keys: [][2]string{ma, topic}})
		if err != nil {
			t.Fatal(err)
		}
		want := map[int64]m{101: {ma: 2}, 103: {ma: 5}, 104: {ma: 2, topic: 6}}
		if diff := cmpDiff(want, got); diff != "" {
			t.Errorf("statesAt with filter (-want +got):\n%s", diff)
		}
		got, err = s.statesAt(ctx, []int64{103}, &stateFilter{types: []string{"m.room.member"}})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmpDiff(map[int64]m{103: {ma: 5, mb: 4}}, got); diff != "" {
			t.Errorf("statesAt by type (-want +got):\n%s", diff)
		}
	})
}

func TestStateAtMatchesCurrentStateAcrossSnapshots(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		// more state events than a delta chain may hold, so a snapshot is
		// taken in the middle
		for i := range snapshotEvery + 5 {
			f.state(alice, "m.praxis.test", fmt.Sprint(i%7), fmt.Sprintf(`{"n":%d}`, i))
		}
		ctx := t.Context()
		cur, err := f.s.CurrentState(ctx, f.room)
		if err != nil {
			t.Fatal(err)
		}
		r, err := f.s.readRoom(ctx, f.room)
		if err != nil {
			t.Fatal(err)
		}
		at, err := f.s.StateAt(ctx, r.currentGroup)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmpDiff(cur, at); diff != "" {
			t.Errorf("StateAt(current group) differs from current_state (-current +stateAt):\n%s", diff)
		}
		events, err := f.s.EventsByNID(ctx, slices.Collect(maps.Values(at)))
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != len(at) {
			t.Errorf("EventsByNID returned %d events for %d NIDs", len(events), len(at))
		}
		byID, err := f.s.EventsByID(ctx, []string{events[0].EventID, "$unknown", events[1].EventID})
		if err != nil {
			t.Fatal(err)
		}
		if len(byID) != 2 || byID[0].EventID != events[0].EventID || byID[1].EventID != events[1].EventID {
			t.Errorf("EventsByID kept order and skipped unknown: got %d events", len(byID))
		}
	})
}

// paginateAll follows /messages from "" in one direction until end is
// omitted and returns the event IDs in the order received.
func paginateAll(t *testing.T, s *Service, user, room, from string, backward bool, limit int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < 1000; i++ {
		pg, err := s.Messages(t.Context(), user, room, MessagesQuery{From: from, Backward: backward, Limit: limit})
		if err != nil {
			t.Fatalf("messages from %q: %v", from, err)
		}
		if len(pg.Chunk) > limit {
			t.Fatalf("chunk of %d events for limit %d", len(pg.Chunk), limit)
		}
		for _, e := range pg.Chunk {
			ids = append(ids, e.EventID)
		}
		if pg.End == "" {
			return ids
		}
		from = pg.End
	}
	t.Fatal("pagination did not end")
	return nil
}

func TestMessagesPaginationRoundTrips(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		f.join(bob)
		for i := range 23 {
			f.say([]string{alice, bob}[i%2], fmt.Sprint("m", i))
		}
		all, err := f.s.EventsByID(t.Context(), nil)
		if err != nil || len(all) != 0 {
			t.Fatalf("EventsByID(nil) = %v, %v", all, err)
		}
		for _, limit := range []int{1, 4, 7, 100} {
			t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
				back := paginateAll(t, f.s, bob, f.room, "", true, limit)
				fwd := paginateAll(t, f.s, bob, f.room, "", false, limit)
				if len(back) < 23+4 {
					t.Fatalf("backwards pagination returned %d events, want all of the room's", len(back))
				}
				if len(back) != len(uniqueOf(back)) {
					t.Errorf("backwards pagination repeated events: %v", back)
				}
				rev := slices.Clone(fwd)
				slices.Reverse(rev)
				if diff := cmpDiff(back, rev); diff != "" {
					t.Errorf("backwards is not forwards reversed (-back +reversed fwd):\n%s", diff)
				}
			})
		}
		// b then f from b's end returns exactly what b returned, reversed
		ctx := t.Context()
		pg, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{Backward: true, Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(pg.Chunk); !slices.Equal(got, []string{"m22", "m21", "m20", "m19", "m18"}) {
			t.Fatalf("latest five = %v", got)
		}
		fw, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{From: pg.End, To: pg.Start, Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(fw.Chunk); !slices.Equal(got, []string{"m18", "m19", "m20", "m21", "m22"}) {
			t.Errorf("forwards from end to start = %v, want m18..m22", got)
		}
		if fw.End != "" && len(fw.Chunk) == 5 {
			// to was reached: a further page must be empty
			more, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{From: fw.End, To: pg.Start, Limit: 50})
			if err != nil || len(more.Chunk) != 0 {
				t.Errorf("page past to: %d events, %v", len(more.Chunk), err)
			}
		}
		// a sync token names the point after the last event at or before it
		head, err := db.StreamHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{From: fmt.Sprint("s", head), Backward: true, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(st.Chunk); !slices.Equal(got, []string{"m22", "m21"}) {
			t.Errorf("from sync token = %v, want m22 m21", got)
		}
		st, err = f.s.Messages(ctx, bob, f.room, MessagesQuery{From: fmt.Sprint("s", head-1), Backward: true, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(st.Chunk); !slices.Equal(got, []string{"m21"}) {
			t.Errorf("from sync token head-1 = %v, want m21", got)
		}
	})
}

func TestMessagesFilterAndErrors(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		f.join(bob)
		f.say(alice, "a1")
		f.send(bob, "m.reaction.test", `{}`)
		f.say(bob, "b1")
		f.say(alice, "a2")
		f.send(alice, "m.praxis.note", `{"url":"mxc://hs1.test/x"}`)
		ctx := t.Context()
		yes := true
		for _, tc := range []struct {
			name   string
			filter EventFilter
			want   []string // types of the chunk, newest first
		}{
			{"types", EventFilter{Types: []string{"m.room.message"}}, []string{"m.room.message", "m.room.message", "m.room.message"}},
			{"wildcard types", EventFilter{Types: []string{"m.praxis.*", "m.reaction.*"}}, []string{"m.praxis.note", "m.reaction.test"}},
			{"senders", EventFilter{Senders: []string{bob}, NotTypes: []string{"m.room.member"}}, []string{"m.room.message", "m.reaction.test"}},
			{"not_senders and not_types", EventFilter{NotSenders: []string{alice}, NotTypes: []string{"m.room.*"}}, []string{"m.reaction.test"}},
			{"contains_url", EventFilter{ContainsURL: &yes}, []string{"m.praxis.note"}},
			{"empty types match nothing", EventFilter{Types: []string{}}, []string{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pg, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{Backward: true, Limit: 50, Filter: &tc.filter})
				if err != nil {
					t.Fatal(err)
				}
				got := []string{}
				for _, e := range pg.Chunk {
					got = append(got, e.Type)
				}
				if diff := cmpDiff(tc.want, got); diff != "" {
					t.Errorf("chunk types (-want +got):\n%s", diff)
				}
			})
		}
		pg, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{Backward: true, Limit: 2,
			Filter: &EventFilter{LazyLoadMembers: true, Types: []string{"m.room.message"}}})
		if err != nil {
			t.Fatal(err)
		}
		var members []string
		for _, e := range pg.State {
			members = append(members, *e.StateKey)
		}
		if !slices.Equal(members, []string{alice, bob}) {
			t.Errorf("lazy-loaded members = %v, want alice and bob", members)
		}
		for _, tc := range []struct {
			name, user, room, from, want string
		}{
			{"not a member", carol, f.room, "", "M_FORBIDDEN"},
			{"unknown room", bob, "!nope:hs1.test", "", "M_FORBIDDEN"},
			{"bad room id", bob, "nope", "", "M_INVALID_PARAM"},
			{"bad token", bob, f.room, "x12", "M_INVALID_PARAM"},
			{"bad topological token", bob, f.room, "t1", "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := f.s.Messages(ctx, tc.user, tc.room, MessagesQuery{From: tc.from, Backward: true, Limit: 5})
				if got := errCode(err); got != tc.want {
					t.Errorf("errcode = %q (%v), want %s", got, err, tc.want)
				}
			})
		}
	})
}

func TestHistoryVisibility(t *testing.T) {
	// alice talks before bob is invited, while he is invited, while he is
	// joined, and after he left; charlie never joins.
	for _, tc := range []struct {
		visibility string
		bob        []string
		carol      []string // nil: 403
	}{
		{"joined", []string{"joined"}, nil},
		{"invited", []string{"invited", "joined"}, nil},
		{"shared", []string{"before", "invited", "joined"}, nil},
		{"world_readable", []string{"before", "invited", "joined"}, []string{"before", "invited", "joined", "after"}},
	} {
		t.Run(tc.visibility, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T, db *storage.DB) {
				f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPrivateChat})
				f.state(alice, "m.room.history_visibility", "", fmt.Sprintf(`{"history_visibility":%q}`, tc.visibility))
				f.say(alice, "before")
				f.invite(alice, bob)
				f.say(alice, "invited")
				f.join(bob)
				f.say(alice, "joined")
				f.leave(bob)
				f.say(alice, "after")
				ctx := t.Context()
				for _, who := range []struct {
					user string
					want []string
				}{{bob, tc.bob}, {carol, tc.carol}, {alice, []string{"before", "invited", "joined", "after"}}} {
					pg, err := f.s.Messages(ctx, who.user, f.room, MessagesQuery{Limit: 100})
					if who.want == nil {
						if errCode(err) != "M_FORBIDDEN" {
							t.Errorf("%s: err = %v, want M_FORBIDDEN", who.user, err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("%s: %v", who.user, err)
					}
					if diff := cmpDiff(who.want, bodies(pg.Chunk)); diff != "" {
						t.Errorf("%s sees (-want +got):\n%s", who.user, diff)
					}
				}
			})
		})
	}
}

func TestFilterVisibleForJoinedUsers(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		f.state(alice, "m.room.history_visibility", "", `{"history_visibility":"joined"}`)
		early := f.say(alice, "early")
		f.join(bob)
		late := f.say(alice, "late")
		f.state(alice, "m.room.history_visibility", "", `{"history_visibility":"shared"}`)
		shared := f.say(alice, "shared")
		f.join(carol)
		ctx := t.Context()
		events, err := f.s.EventsByID(ctx, []string{early, late, shared})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			user string
			want []string
		}{
			{alice, []string{"early", "late", "shared"}},
			{bob, []string{"late", "shared"}},
			// carol joined after the switch to shared: she sees what was
			// shared, but not what was sent under joined before her
			{carol, []string{"shared"}},
			{dave, []string{}},
		} {
			got, err := f.s.FilterVisible(ctx, tc.user, events)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmpDiff(tc.want, bodies(got)); diff != "" {
				t.Errorf("%s sees (-want +got):\n%s", tc.user, diff)
			}
		}
		// under "joined", a late joiner sees his own join but nothing sent
		// under "joined" before it (what was sent under "shared" stays visible)
		f2 := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		f2.state(alice, "m.room.history_visibility", "", `{"history_visibility":"joined"}`)
		f2.say(alice, "hidden")
		f2.join(dave)
		f2.say(alice, "seen")
		pg, err := f2.s.Messages(ctx, dave, f2.room, MessagesQuery{Backward: true, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(pg.Chunk); !slices.Equal(got, []string{"seen"}) {
			t.Errorf("dave sees messages %v, want only the one after his join", got)
		}
		if e := pg.Chunk[1]; e.Type != "m.room.member" || *e.StateKey != dave {
			t.Errorf("second newest event dave sees is %s, want his join", e.Type)
		}
		if e := pg.Chunk[2]; e.Type != "m.room.history_visibility" {
			t.Errorf("third newest event dave sees is %s, want the history visibility change", e.Type)
		}
	})
}

func TestStateAndMembers(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat, Name: ptr("First")})
		ctx := t.Context()
		f.join(bob)
		f.join(dave)
		f.leave(bob)
		f.state(alice, "m.room.name", "", `{"name":"Second"}`)
		f.invite(alice, carol)

		name := func(user string) (string, string) {
			e, err := f.s.RoomStateEvent(ctx, user, f.room, "m.room.name", "")
			if err != nil {
				return "", errCode(err)
			}
			return gjson.GetBytes(e.JSON, "content.name").String(), ""
		}
		if n, code := name(alice); n != "Second" {
			t.Errorf("alice reads name %q (%s), want Second", n, code)
		}
		if n, code := name(bob); n != "First" {
			t.Errorf("bob, who left, reads name %q (%s), want the name when he left", n, code)
		}
		if _, code := name(carol); code != "M_FORBIDDEN" {
			t.Errorf("carol (invited) reads name: %s, want M_FORBIDDEN", code)
		}
		if _, err := f.s.RoomStateEvent(ctx, alice, f.room, "m.room.topic", ""); errCode(err) != "M_NOT_FOUND" {
			t.Errorf("missing state event: %v, want M_NOT_FOUND", err)
		}
		st, err := f.s.RoomState(ctx, bob, f.room)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range st {
			if e.Type == "m.room.member" && *e.StateKey == carol {
				t.Errorf("bob's state after leaving includes carol's later invite")
			}
			if e.Type == "m.room.member" && *e.StateKey == bob && membershipOf(e.JSON) != "leave" {
				t.Errorf("bob's own membership in his state = %s, want leave", membershipOf(e.JSON))
			}
		}

		memberMap := func(user string, q MembersQuery) map[string]string {
			t.Helper()
			events, err := f.s.Members(ctx, user, f.room, q)
			if err != nil {
				t.Fatalf("members %+v: %v", q, err)
			}
			out := map[string]string{}
			for _, e := range events {
				out[*e.StateKey] = membershipOf(e.JSON)
			}
			return out
		}
		type mm = map[string]string
		for _, tc := range []struct {
			name string
			user string
			q    MembersQuery
			want mm
		}{
			{"all", alice, MembersQuery{}, mm{alice: "join", bob: "leave", dave: "join", carol: "invite"}},
			{"joined", alice, MembersQuery{Membership: "join"}, mm{alice: "join", dave: "join"}},
			{"not left", alice, MembersQuery{NotMembership: "leave"}, mm{alice: "join", dave: "join", carol: "invite"}},
			{"departed user sees members when he left", bob, MembersQuery{}, mm{alice: "join", bob: "leave", dave: "join"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if diff := cmpDiff(tc.want, memberMap(tc.user, tc.q)); diff != "" {
					t.Errorf("members (-want +got):\n%s", diff)
				}
			})
		}
		// at: a token from before dave joined
		pg, err := f.s.Messages(ctx, alice, f.room, MessagesQuery{Backward: true, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		// newest first: invite carol, name, leave bob, join dave → end is before dave's join
		if diff := cmpDiff(mm{alice: "join", bob: "join"}, memberMap(alice, MembersQuery{At: pg.End})); diff != "" {
			t.Errorf("members at a token before dave joined (-want +got):\n%s", diff)
		}

		joined, err := f.s.JoinedMembers(ctx, alice, f.room)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmpDiff(map[string]MemberProfile{alice: {DisplayName: "Name of " + alice}, dave: {DisplayName: "Name of " + dave}}, joined); diff != "" {
			t.Errorf("joined members (-want +got):\n%s", diff)
		}
		if _, err := f.s.JoinedMembers(ctx, bob, f.room); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("joined_members for a departed user: %v, want M_FORBIDDEN", err)
		}
		rooms, err := f.s.JoinedRooms(ctx, dave)
		if err != nil || !slices.Equal(rooms, []string{f.room}) {
			t.Errorf("dave's joined rooms = %v, %v", rooms, err)
		}
		if rooms, _ := f.s.JoinedRooms(ctx, bob); len(rooms) != 0 {
			t.Errorf("bob left but has joined rooms %v", rooms)
		}
		if m, err := f.s.Membership(ctx, f.room, carol); err != nil || m != "invite" {
			t.Errorf("Membership(carol) = %q, %v", m, err)
		}
	})
}

func TestEventAndContext(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		f.state(alice, "m.room.history_visibility", "", `{"history_visibility":"joined"}`)
		hidden := f.say(alice, "hidden")
		f.join(bob)
		var ids []string
		for i := range 9 {
			ids = append(ids, f.say(alice, fmt.Sprint("c", i)))
		}
		other := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		otherEvent := other.say(alice, "elsewhere")
		ctx := t.Context()
		for _, tc := range []struct {
			name, user, room, event, want string
		}{
			{"visible", bob, f.room, ids[0], ""},
			{"before join", bob, f.room, hidden, "M_NOT_FOUND"},
			{"unknown", bob, f.room, "$nope", "M_NOT_FOUND"},
			{"other room", alice, f.room, otherEvent, "M_NOT_FOUND"},
			{"not a member", carol, f.room, ids[0], "M_NOT_FOUND"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := f.s.Event(ctx, tc.user, tc.room, tc.event)
				if got := errCode(err); got != tc.want {
					t.Errorf("Event: %q (%v), want %q", got, err, tc.want)
				}
				_, err = f.s.EventContext(ctx, tc.user, tc.room, tc.event, 4, nil)
				if got := errCode(err); got != tc.want {
					t.Errorf("EventContext: %q (%v), want %q", got, err, tc.want)
				}
			})
		}
		res, err := f.s.EventContext(ctx, bob, f.room, ids[4], 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := bodies(res.Before), []string{"c3", "c2"}; !slices.Equal(got, want) {
			t.Errorf("events_before = %v, want %v", got, want)
		}
		if got, want := bodies(res.After), []string{"c5", "c6"}; !slices.Equal(got, want) {
			t.Errorf("events_after = %v, want %v", got, want)
		}
		if len(res.State) == 0 {
			t.Error("context has no state")
		}
		// start and end continue the timeline on both sides
		back, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{From: res.Start, Backward: true, Limit: 2, Filter: &EventFilter{Types: []string{"m.room.message"}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(back.Chunk); !slices.Equal(got, []string{"c1", "c0"}) {
			t.Errorf("backwards from context start = %v, want c1 c0", got)
		}
		fwd, err := f.s.Messages(ctx, bob, f.room, MessagesQuery{From: res.End, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(fwd.Chunk); !slices.Equal(got, []string{"c7", "c8"}) {
			t.Errorf("forwards from context end = %v, want c7 c8", got)
		}
		lazy, err := f.s.EventContext(ctx, bob, f.room, ids[4], 2, &EventFilter{LazyLoadMembers: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(lazy.State) != 1 || *lazy.State[0].StateKey != alice {
			t.Errorf("lazy context state has %d events, want alice's member event", len(lazy.State))
		}
	})
}

func TestTimestampToEvent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		// after the room's creation events, which carry the real time
		base := time.Now().Add(24 * time.Hour).UnixMilli()
		clock := base
		f.s.now = func() time.Time { return time.UnixMilli(clock) }
		var ids []string
		for i := range 3 {
			clock += 1000
			ids = append(ids, f.say(alice, fmt.Sprint("t", i)))
		}
		ctx := t.Context()
		for _, tc := range []struct {
			ts       int64
			backward bool
			want     string
		}{
			{base + 1500, false, ids[1]},
			{base + 1500, true, ids[0]},
			{base + 2000, true, ids[1]},
			{base + 3001, true, ids[2]},
			{base + 3001, false, ""},
		} {
			e, err := f.s.TimestampToEvent(ctx, alice, f.room, tc.ts, tc.backward)
			if tc.want == "" {
				if errCode(err) != "M_NOT_FOUND" {
					t.Errorf("ts %d backward=%v: %v, want M_NOT_FOUND", tc.ts, tc.backward, err)
				}
				continue
			}
			if err != nil || e.EventID != tc.want {
				t.Errorf("ts %d backward=%v: got %v (%v), want %s", tc.ts, tc.backward, e, err, tc.want)
			}
		}
		if _, err := f.s.TimestampToEvent(ctx, carol, f.room, base, false); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("non-member: %v, want M_FORBIDDEN", err)
		}
	})
}

func TestRelationsAndThreads(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		f := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		f.join(bob)
		root := f.say(alice, "root")
		thread := func(sender, body string) string {
			return f.send(sender, "m.room.message", fmt.Sprintf(`{"msgtype":"m.text","body":%q,"m.relates_to":{"rel_type":"m.thread","event_id":%q}}`, body, root))
		}
		r1 := thread(bob, "r1")
		f.send(alice, "m.reaction", fmt.Sprintf(`{"m.relates_to":{"rel_type":"m.annotation","event_id":%q,"key":"👍"}}`, root))
		thread(alice, "r2")
		r3 := thread(bob, "r3")
		f.send(alice, "m.reaction", fmt.Sprintf(`{"m.relates_to":{"rel_type":"m.annotation","event_id":%q,"key":"👍"}}`, r1))
		root2 := f.say(bob, "root2")
		f.send(alice, "m.room.message", fmt.Sprintf(`{"msgtype":"m.text","body":"s1","m.relates_to":{"rel_type":"m.thread","event_id":%q}}`, root2))
		ctx := t.Context()

		count := func(q RelationsQuery) []string {
			t.Helper()
			pg, err := f.s.Relations(ctx, bob, f.room, root, q)
			if err != nil {
				t.Fatalf("relations %+v: %v", q, err)
			}
			var out []string
			for _, e := range pg.Chunk {
				out = append(out, e.Type)
			}
			return out
		}
		if got := count(RelationsQuery{Backward: true, Limit: 50}); len(got) != 4 {
			t.Errorf("all relations of root: %v, want 4", got)
		}
		if got := count(RelationsQuery{RelType: "m.thread", Backward: true, Limit: 50}); len(got) != 3 {
			t.Errorf("thread relations: %v, want 3", got)
		}
		if got := count(RelationsQuery{RelType: "m.annotation", EventType: "m.reaction", Backward: true, Limit: 50}); len(got) != 1 {
			t.Errorf("annotation relations: %v, want 1", got)
		}
		if got := count(RelationsQuery{Backward: true, Limit: 50, Recurse: true}); len(got) != 5 {
			t.Errorf("recursive relations: %v, want 5", got)
		}
		// paging one at a time meets every relation once
		var seen []string
		from := ""
		for range 10 {
			pg, err := f.s.Relations(ctx, bob, f.room, root, RelationsQuery{RelType: "m.thread", Backward: true, Limit: 1, From: from})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range pg.Chunk {
				seen = append(seen, e.EventID)
			}
			if pg.NextBatch == "" {
				break
			}
			from = pg.NextBatch
		}
		if len(seen) != 3 || seen[0] != r3 || seen[2] != r1 {
			t.Errorf("paged thread relations = %v", seen)
		}
		if _, err := f.s.Relations(ctx, bob, f.room, "$nope", RelationsQuery{Limit: 5}); errCode(err) != "M_NOT_FOUND" {
			t.Errorf("relations of unknown event: %v", err)
		}

		tp, err := f.s.Threads(ctx, bob, f.room, ThreadsQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(tp.Chunk) != 2 || tp.Chunk[0].Root.EventID != root2 || tp.Chunk[1].Root.EventID != root {
			t.Fatalf("threads = %+v, want root2 then root", tp.Chunk)
		}
		if th := tp.Chunk[1]; th.Count != 3 || th.Latest == nil || th.Latest.EventID != r3 || !th.Participated {
			t.Errorf("thread summary = count %d latest %v participated %v", th.Count, th.Latest, th.Participated)
		}
		if tp.Chunk[0].Participated != true { // bob sent root2
			t.Errorf("bob participated in his own thread root")
		}
		part, err := f.s.Threads(ctx, alice, f.room, ThreadsQuery{Include: "participated", Limit: 10})
		if err != nil || len(part.Chunk) != 2 {
			t.Errorf("alice participated threads: %d, %v", len(part.Chunk), err)
		}
		page1, err := f.s.Threads(ctx, bob, f.room, ThreadsQuery{Limit: 1})
		if err != nil || len(page1.Chunk) != 1 || page1.NextBatch == "" {
			t.Fatalf("threads page 1: %+v, %v", page1, err)
		}
		page2, err := f.s.Threads(ctx, bob, f.room, ThreadsQuery{Limit: 1, From: page1.NextBatch})
		if err != nil || len(page2.Chunk) != 1 || page2.Chunk[0].Root.EventID != root {
			t.Errorf("threads page 2: %+v, %v", page2, err)
		}

		// bundles: the thread, the latest edit by the sender, references
		edit := func(sender, body string) string {
			return f.send(sender, "m.room.message", fmt.Sprintf(`{"msgtype":"m.text","body":"* x","m.new_content":{"msgtype":"m.text","body":%q},"m.relates_to":{"rel_type":"m.replace","event_id":%q}}`, body, root))
		}
		edit(alice, "first edit")
		latestEdit := edit(alice, "second edit")
		edit(bob, "not allowed to edit") // only the original sender's edits count
		ref := f.send(bob, "m.praxis.ack", fmt.Sprintf(`{"m.relates_to":{"rel_type":"m.reference","event_id":%q}}`, root))
		events, err := f.s.EventsByID(ctx, []string{root, root2, r1})
		if err != nil {
			t.Fatal(err)
		}
		aggs, err := f.s.BundledAggregations(ctx, bob, events)
		if err != nil {
			t.Fatal(err)
		}
		a := aggs[root]
		if a == nil || a.Thread == nil || a.Thread.Count != 3 || a.Thread.Latest.EventID != r3 || !a.Thread.Participated {
			t.Fatalf("root's thread bundle = %+v", a)
		}
		if a.Replace == nil || a.Replace.EventID != latestEdit {
			t.Errorf("root's edit bundle = %v, want the latest edit by alice", a.Replace)
		}
		if !slices.Equal(a.References, []string{ref}) {
			t.Errorf("root's references = %v, want [%s]", a.References, ref)
		}
		if a := aggs[root2]; a == nil || a.Thread == nil || a.Thread.Count != 1 || a.Thread.Participated != true {
			t.Errorf("root2's bundle = %+v", a)
		}
		if a := aggs[r1]; a != nil {
			t.Errorf("r1 has only a reaction but gets a bundle %+v", a)
		}
		rendered := WithAggregations(ClientEvent(events[0], bob, "DEV", 0), aggs[root], bob, "DEV", 0)
		for path, want := range map[string]string{
			`unsigned.m\.relations.m\.thread.count`:                     "3",
			`unsigned.m\.relations.m\.thread.latest_event.event_id`:     r3,
			`unsigned.m\.relations.m\.replace.event_id`:                 latestEdit,
			`unsigned.m\.relations.m\.reference.chunk.0.event_id`:       ref,
			`unsigned.m\.relations.m\.thread.current_user_participated`: "true",
		} {
			if got := gjson.GetBytes(rendered, path).String(); got != want {
				t.Errorf("%s = %q, want %q", path, got, want)
			}
		}
	})
}

func TestDirectoryReads(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		pub, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat, Visibility: "public",
			Name: ptr("Waiting room"), Topic: ptr("Ask us anything"), RoomAliasName: "waiting"})
		if err != nil {
			t.Fatal(err)
		}
		priv, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPrivateChat, Invite: []string{bob}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, bob, priv.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, dave, pub.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		// carol is alone in a private room: nobody may find her
		if _, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: carol, Preset: PresetPrivateChat}); err != nil {
			t.Fatal(err)
		}
		second, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: carol, Preset: PresetPublicChat, Visibility: "public", Name: ptr("Lab")})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Leave(ctx, carol, second.RoomID, ""); err != nil {
			t.Fatal(err)
		}

		roomID, servers, err := s.ResolveAlias(ctx, "#waiting:hs1.test")
		if err != nil || roomID != pub.RoomID || !slices.Equal(servers, []string{"hs1.test"}) {
			t.Errorf("ResolveAlias = %s %v %v", roomID, servers, err)
		}
		for alias, want := range map[string]string{"#unknown:hs1.test": "M_NOT_FOUND", "waiting": "M_INVALID_PARAM"} {
			if _, _, err := s.ResolveAlias(ctx, alias); errCode(err) != want {
				t.Errorf("ResolveAlias(%s): %v, want %s", alias, err, want)
			}
		}
		aliases, err := s.RoomAliases(ctx, dave, pub.RoomID)
		if err != nil || !slices.Equal(aliases, []string{"#waiting:hs1.test"}) {
			t.Errorf("RoomAliases = %v, %v", aliases, err)
		}
		if _, err := s.RoomAliases(ctx, carol, priv.RoomID); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("RoomAliases for a non-member: %v", err)
		}
		for room, want := range map[string]string{pub.RoomID: "public", priv.RoomID: "private"} {
			if v, err := s.DirectoryVisibility(ctx, room); err != nil || v != want {
				t.Errorf("DirectoryVisibility = %s, %v; want %s", v, err, want)
			}
		}
		if _, err := s.DirectoryVisibility(ctx, "!unknown:hs1.test"); errCode(err) != "M_NOT_FOUND" {
			t.Errorf("DirectoryVisibility(unknown): %v", err)
		}

		pr, err := s.PublicRooms(ctx, PublicRoomsQuery{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		want := PublicRoom{RoomID: pub.RoomID, Name: "Waiting room", Topic: "Ask us anything", CanonicalAlias: "#waiting:hs1.test",
			NumJoinedMembers: 2, JoinRule: "public"}
		if pr.Total != 2 || len(pr.Chunk) != 1 || pr.NextBatch == "" {
			t.Fatalf("public rooms page 1 = %+v", pr)
		}
		if diff := cmpDiff(want, pr.Chunk[0]); diff != "" {
			t.Errorf("public room (-want +got):\n%s", diff)
		}
		pr2, err := s.PublicRooms(ctx, PublicRoomsQuery{Limit: 1, Since: pr.NextBatch})
		if err != nil || len(pr2.Chunk) != 1 || pr2.Chunk[0].RoomID != second.RoomID || pr2.NextBatch != "" || pr2.PrevBatch == "" {
			t.Errorf("public rooms page 2 = %+v, %v", pr2, err)
		}
		if found, _ := s.PublicRooms(ctx, PublicRoomsQuery{Search: "WAITING"}); len(found.Chunk) != 1 {
			t.Errorf("search for WAITING found %d rooms", len(found.Chunk))
		}
		if _, err := s.PublicRooms(ctx, PublicRoomsQuery{Since: "bogus"}); errCode(err) != "M_INVALID_PARAM" {
			t.Errorf("bad since: %v", err)
		}

		for _, tc := range []struct {
			name, user, room, wantErr, wantMembership string
		}{
			{"public room for a stranger", carol, pub.RoomID, "", ""},
			{"public room by alias, anonymous", "", "#waiting:hs1.test", "", ""},
			{"private room for a member", bob, priv.RoomID, "", "join"},
			{"private room for a stranger", carol, priv.RoomID, "M_NOT_FOUND", ""},
			{"private room, anonymous", "", priv.RoomID, "M_NOT_FOUND", ""},
			{"unknown room", carol, "!nope:hs1.test", "M_NOT_FOUND", ""},
			{"unknown alias", carol, "#nope:hs1.test", "M_NOT_FOUND", ""},
			{"malformed", carol, "nope", "M_INVALID_PARAM", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p, err := s.RoomPreview(ctx, tc.user, tc.room)
				if got := errCode(err); got != tc.wantErr {
					t.Fatalf("RoomPreview: %q (%v), want %q", got, err, tc.wantErr)
				}
				if err == nil && (p.Membership != tc.wantMembership || p.RoomVersion == "") {
					t.Errorf("preview = %+v, want membership %q", p, tc.wantMembership)
				}
			})
		}
		if p, err := s.RoomPreview(ctx, bob, priv.RoomID); err != nil || p.Encryption != megolm || p.NumJoinedMembers != 2 {
			t.Errorf("private room preview = %+v, %v", p, err)
		}

		if err := s.PropagateProfile(ctx, bob, "Adam", ""); err != nil {
			t.Fatal(err)
		}
		search := func(searcher, term string, limit int) ([]string, bool) {
			t.Helper()
			res, limited, err := s.SearchUsers(ctx, searcher, term, limit)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range res {
				ids = append(ids, r.UserID)
			}
			sort.Strings(ids)
			return ids, limited
		}
		for _, tc := range []struct {
			searcher, term string
			limit          int
			want           []string
			limited        bool
		}{
			{bob, "hs1", 10, []string{alice, bob, dave}, false},     // shares a room with alice; dave is in a public room
			{bob, "NAME OF @DAVE", 10, []string{dave}, false},       // display name, case-insensitive
			{bob, "carol", 10, nil, false},                          // carol shares nothing and left the public room
			{carol, "hs1", 10, []string{alice, carol, dave}, false}, // public room members, and herself
			{bob, "hs1", 2, []string{alice, bob}, true},
			{bob, "da", 1, []string{dave}, true}, // "@dave" starts with it, "Adam" (bob) only contains it
		} {
			got, limited := search(tc.searcher, tc.term, tc.limit)
			if !slices.Equal(got, tc.want) || limited != tc.limited {
				t.Errorf("%s searches %q: %v limited=%v, want %v limited=%v", tc.searcher, tc.term, got, limited, tc.want, tc.limited)
			}
		}
	})
}

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Token
		ok   bool
	}{
		{"t5_17", Token{Topological: true, Depth: 5, Stream: 17}, true},
		{"t0_-1", Token{Topological: true, Depth: 0, Stream: -1}, true},
		{"t5_-17", Token{Topological: true, Depth: 5, Stream: -17}, true},
		{"s42", Token{Stream: 42}, true},
		{"s42_7_9", Token{Stream: 42}, true},
		{"t5", Token{}, false},
		{"t_1", Token{}, false},
		{"s", Token{}, false},
		{"sx", Token{}, false},
		{"", Token{}, false},
		{"x1_2", Token{}, false},
	} {
		got, err := ParseToken(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.Topological && TopoToken(got.Depth, got.Stream) != tc.in {
			t.Errorf("TopoToken does not round-trip %q", tc.in)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.reaction", false},
		{"*", "anything", true},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.room.messages", false},
		{"M.ROOM.*", "m.room.message", false},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.pattern, tc.s, got)
		}
	}
}

// cmpDiff is "" when want and got are deeply equal, else both values.
func cmpDiff(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	return fmt.Sprintf("-%+v\n+%+v", want, got)
}

func TestFilterVisibleBatchesAcrossRooms(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		joinedRoom := newReadFixture(t, db, CreateRoomRequest{Preset: PresetPublicChat})
		s := joinedRoom.s
		joinedRoom.state(alice, "m.room.history_visibility", "", `{"history_visibility":"joined"}`)
		hidden := joinedRoom.say(alice, "hidden")
		joinedRoom.join(bob)
		seen := joinedRoom.say(alice, "seen")

		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		shared := &readFixture{t: t, s: s, db: db, room: res.RoomID}
		early := shared.say(alice, "early")
		shared.join(bob)
		shared.leave(bob)
		late := shared.say(alice, "late")

		res, err = s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPrivateChat})
		if err != nil {
			t.Fatal(err)
		}
		private := &readFixture{t: t, s: s, db: db, room: res.RoomID}
		secret := private.say(alice, "secret")

		events, err := s.EventsByID(ctx, []string{late, hidden, secret, early, seen})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.FilterVisible(ctx, bob, events)
		if err != nil {
			t.Fatal(err)
		}
		// order kept; "early" is shared history bob joined after
		if diff := cmpDiff([]string{"early", "seen"}, bodies(got)); diff != "" {
			t.Errorf("bob sees (-want +got):\n%s", diff)
		}
		if got, err := s.FilterVisible(ctx, bob, nil); err != nil || len(got) != 0 {
			t.Errorf("FilterVisible(nil) = %v, %v", got, err)
		}
	})
}

// FuzzParseToken: any input either fails with M_INVALID_PARAM or parses,
// and a parsed topological token renders back to an equivalent token.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"t1_2", "s5", "s5_3", "t0_-1", "t", "x", "t9223372036854775807_9223372036854775807", "s-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if errCode(err) != "M_INVALID_PARAM" {
				t.Fatalf("ParseToken(%q) error %v is not M_INVALID_PARAM", s, err)
			}
			return
		}
		if tok.Depth < 0 { // negative streams are backfilled history
			t.Fatalf("ParseToken(%q) = %+v: negative position accepted", s, tok)
		}
		if tok.Topological {
			again, err := ParseToken(TopoToken(tok.Depth, tok.Stream))
			if err != nil || again != tok {
				t.Fatalf("round trip of %q: %+v, %v", s, again, err)
			}
		}
	})
}
