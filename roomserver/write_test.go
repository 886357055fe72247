package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/tidwall/gjson"

	"praxis/federation/keyring"
	"praxis/internal/config"
	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

func newTestService(t *testing.T, db *storage.DB) *Service {
	t.Helper()
	key, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.ServerName = "hs1.test"
	head, err := db.StreamHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := New(db, streams.NewNotifier(head), key, &cfg)
	s.SetProfileLookup(func(_ context.Context, userID string) (string, string, error) {
		if userID == "@ghost:hs1.test" {
			return "", "", ErrUnknownUser
		}
		return "Name of " + userID, "", nil
	})
	return s
}

func errCode(err error) string {
	if err == nil {
		return ""
	}
	return httputil.ToError(err).ErrCode
}

const alice, bob = "@alice:hs1.test", "@bob:hs1.test"

func TestCreateRoomWritesConsistentState(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		for _, v := range []string{"1", "10", "11", "12"} {
			t.Run("v"+v, func(t *testing.T) {
				res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: v, Preset: PresetPrivateChat, Name: ptr("Praxis"), Invite: []string{bob}})
				if err != nil {
					t.Fatalf("create room: %v", err)
				}
				checkStateGroups(t, db, res.RoomID)
				var typ string
				err = db.QueryRow(ctx, `SELECT e.json FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid JOIN rooms r ON r.room_nid = cs.room_nid
					WHERE r.room_id = $1 AND cs.type = 'm.room.encryption'`, res.RoomID).Scan(&typ)
				if err != nil {
					t.Fatalf("no encryption event in private_chat room: %v", err)
				}
				if got := gjson.Get(typ, "content.algorithm").String(); got != megolm {
					t.Errorf("encryption algorithm = %q, want %q", got, megolm)
				}
				members := map[string]string{}
				rows, err := db.Query(ctx, `SELECT m.user_id, m.membership FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid WHERE r.room_id = $1`, res.RoomID)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var u, m string
					rows.Scan(&u, &m)
					members[u] = m
				}
				rows.Close()
				if members[alice] != "join" || members[bob] != "invite" {
					t.Errorf("memberships = %v, want alice join and bob invite", members)
				}
				var invite string
				db.QueryRow(ctx, `SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = $1 AND e.type = 'm.room.member' AND e.state_key = $2`, res.RoomID, bob).Scan(&invite)
				stripped := gjson.Get(invite, "unsigned.invite_room_state.#.type").String()
				for _, want := range []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.encryption", "m.room.member"} {
					if !gjson.Get(invite, fmt.Sprintf(`unsigned.invite_room_state.#(type=="%s")`, want)).Exists() {
						t.Errorf("invite_room_state types %s lack %s", stripped, want)
					}
				}
				if v == "12" {
					if len(res.RoomID) < 2 || containsColon(res.RoomID) {
						t.Errorf("v12 room ID %q should be domainless", res.RoomID)
					}
				} else if !containsColon(res.RoomID) {
					t.Errorf("room ID %q has no server part", res.RoomID)
				}
			})
		}
	})
}

func containsColon(s string) bool {
	for _, c := range s {
		if c == ':' {
			return true
		}
	}
	return false
}

// checkStateGroups verifies that the state group of the room's head
// resolves (through its delta chain) to exactly current_state, and that
// every event has a distinct stream position.
func checkStateGroups(t *testing.T, db *storage.DB, roomID string) {
	t.Helper()
	ctx := context.Background()
	var nid, group int64
	if err := db.QueryRow(ctx, `SELECT room_nid, current_state_group FROM rooms WHERE room_id = $1`, roomID).Scan(&nid, &group); err != nil {
		t.Fatalf("room row: %v", err)
	}
	resolved := map[string]int64{}
	depth := 0
	for g := group; g != 0; depth++ {
		rows, err := db.Query(ctx, `SELECT type, state_key, event_nid FROM state_group_entries WHERE state_group = $1`, g)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var typ, sk string
			var ev int64
			rows.Scan(&typ, &sk, &ev)
			if _, newer := resolved[typ+"|"+sk]; !newer {
				resolved[typ+"|"+sk] = ev
			}
		}
		rows.Close()
		var prev *int64
		if err := db.QueryRow(ctx, `SELECT prev_group FROM state_groups WHERE state_group = $1`, g).Scan(&prev); err != nil {
			t.Fatal(err)
		}
		if prev == nil {
			break
		}
		g = *prev
	}
	if depth > snapshotEvery {
		t.Errorf("state group chain is %d long, want at most %d", depth, snapshotEvery)
	}
	current := map[string]int64{}
	rows, err := db.Query(ctx, `SELECT type, state_key, event_nid FROM current_state WHERE room_nid = $1`, nid)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ, sk string
		var ev int64
		rows.Scan(&typ, &sk, &ev)
		current[typ+"|"+sk] = ev
	}
	rows.Close()
	if fmt.Sprint(sortedPairs(resolved)) != fmt.Sprint(sortedPairs(current)) {
		t.Errorf("state group %d resolves to %v, current_state is %v", group, resolved, current)
	}
}

func sortedPairs(m map[string]int64) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return out
}

func TestStateGroupSnapshotsBoundChains(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 120 {
			sk := fmt.Sprintf("k%d", i%30)
			if _, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "org.example.state", StateKey: &sk, Content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
				t.Fatalf("send state %d: %v", i, err)
			}
		}
		checkStateGroups(t, db, res.RoomID)
	})
}

func TestSendTxnIsIdempotent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		r1, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		send := func(room, device, txn string) string {
			t.Helper()
			id, err := s.Send(ctx, SendRequest{RoomID: room, Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`), TxnDevice: device, TxnID: txn})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			return id
		}
		first := send(r1.RoomID, "DEV1", "t1")
		if again := send(r1.RoomID, "DEV1", "t1"); again != first {
			t.Errorf("repeated txn gave %s, want first event %s", again, first)
		}
		if other := send(r1.RoomID, "DEV2", "t1"); other == first {
			t.Errorf("another device's txn t1 returned the first device's event")
		}
		if other := send(r2.RoomID, "DEV1", "t1"); other == first {
			t.Errorf("txn t1 in another room returned the first room's event")
		}
		var n int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE txn_id = 't1'`).Scan(&n)
		if n != 3 {
			t.Errorf("%d events with txn t1, want 3", n)
		}
	})
}

func TestSendRejections(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, bob, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		empty := ""
		big := `{"body":"` + string(make([]byte, 0)) + fmt.Sprintf("%070000d", 0) + `"}`
		for _, tc := range []struct {
			name string
			req  SendRequest
			want string
		}{
			{"not in room", SendRequest{RoomID: res.RoomID, Sender: "@carol:hs1.test", Type: "m.room.message", Content: json.RawMessage(`{}`)}, "M_FORBIDDEN"},
			{"state below power", SendRequest{RoomID: res.RoomID, Sender: bob, Type: "m.room.name", StateKey: &empty, Content: json.RawMessage(`{"name":"x"}`)}, "M_FORBIDDEN"},
			{"unknown room", SendRequest{RoomID: "!nope:hs1.test", Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{}`)}, "M_NOT_FOUND"},
			{"bad room ID", SendRequest{RoomID: "nope", Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{}`)}, "M_INVALID_PARAM"},
			{"content not an object", SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message", Content: json.RawMessage(`[1]`)}, "M_BAD_JSON"},
			{"too large", SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message", Content: json.RawMessage(big)}, "M_TOO_LARGE"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before, _ := db.StreamHead(ctx)
				_, err := s.Send(ctx, tc.req)
				if got := errCode(err); got != tc.want {
					t.Fatalf("errcode = %q (%v), want %q", got, err, tc.want)
				}
				if after, _ := db.StreamHead(ctx); after != before {
					t.Errorf("a rejected send moved the stream from %d to %d", before, after)
				}
			})
		}
	})
}

func TestConcurrentSendsAreGapFree(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		const senders, each = 8, 15
		var wg sync.WaitGroup
		errs := make(chan error, senders*each)
		for g := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					_, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message",
						Content: json.RawMessage(`{"body":"x"}`), TxnDevice: "D", TxnID: fmt.Sprintf("%d-%d", g, i)})
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent send: %v", err)
		}
		rows, err := db.Query(ctx, `SELECT stream_pos, depth FROM events ORDER BY stream_pos`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var n, lastDepth int64
		for rows.Next() {
			var pos, depth int64
			rows.Scan(&pos, &depth)
			n++
			if pos != n {
				t.Fatalf("event %d has stream position %d: positions have a gap or a duplicate", n, pos)
			}
			if depth <= lastDepth {
				t.Errorf("depth %d after %d: the room's events are not a chain", depth, lastDepth)
			}
			lastDepth = depth
		}
		var extremities int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM forward_extremities`).Scan(&extremities)
		if extremities != 1 {
			t.Errorf("%d forward extremities, want 1", extremities)
		}
		head, _ := db.StreamHead(ctx)
		if head != n || n < senders*each {
			t.Errorf("stream head %d, %d events; want equal and at least %d", head, n, senders*each)
		}
	})
}

func TestRedactReplacesStoredJSON(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat, RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, bob, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		msg, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"secret"}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Redact(ctx, RedactRequest{RoomID: res.RoomID, Sender: bob, EventID: msg}); errCode(err) != "M_FORBIDDEN" {
			t.Fatalf("bob redacting alice's message: %v, want M_FORBIDDEN", err)
		}
		red, err := s.Redact(ctx, RedactRequest{RoomID: res.RoomID, Sender: alice, EventID: msg, Reason: "oops"})
		if err != nil {
			t.Fatalf("redact own message: %v", err)
		}
		var js, by string
		if err := db.QueryRow(ctx, `SELECT json, redacted_by FROM events WHERE event_id = $1`, msg).Scan(&js, &by); err != nil {
			t.Fatal(err)
		}
		if by != red || gjson.Get(js, "content.body").Exists() {
			t.Errorf("after redaction: redacted_by=%q json=%s; want %s and no body", by, js, red)
		}
		if _, err := s.Redact(ctx, RedactRequest{RoomID: res.RoomID, Sender: alice, EventID: "$unknown"}); errCode(err) != "M_NOT_FOUND" {
			t.Errorf("redacting an unknown event: %v, want M_NOT_FOUND", err)
		}
	})
}

func TestConcurrentRetriesOfOneTxnMakeOneEvent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		ids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message",
					Content: json.RawMessage(`{"body":"once"}`), TxnDevice: "D", TxnID: "same"})
				if err != nil {
					t.Errorf("retry %d: %v", i, err)
				}
				ids[i] = id
			}()
		}
		wg.Wait()
		for i := range ids {
			if ids[i] != ids[0] {
				t.Fatalf("retries returned different events: %v", ids)
			}
		}
		var count int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE txn_id = 'same'`).Scan(&count)
		if count != 1 {
			t.Errorf("%d events for one transaction, want 1", count)
		}
	})
}

func TestRestrictedJoin(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		staff, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
		if err != nil {
			t.Fatal(err)
		}
		rule := json.RawMessage(fmt.Sprintf(`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":%q}]}`, staff.RoomID))
		inner, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPrivateChat, RoomVersion: "10",
			InitialState: []StateEvent{{Type: "m.room.join_rules", Content: rule}}})
		if err != nil {
			t.Fatalf("create restricted room: %v", err)
		}
		if _, err := s.Join(ctx, bob, inner.RoomID, ""); errCode(err) != "M_FORBIDDEN" {
			t.Fatalf("bob joins before being in the staff room: %v, want M_FORBIDDEN", err)
		}
		if _, err := s.Join(ctx, bob, staff.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, bob, inner.RoomID, ""); err != nil {
			t.Fatalf("bob joins as a staff room member: %v", err)
		}
		var js string
		db.QueryRow(ctx, `SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid
			WHERE r.room_id = $1 AND e.type = 'm.room.member' AND e.state_key = $2 ORDER BY e.stream_pos DESC`, inner.RoomID, bob).Scan(&js)
		if got := gjson.Get(js, "content.join_authorised_via_users_server").String(); got != alice {
			t.Errorf("join_authorised_via_users_server = %q, want %s", got, alice)
		}
	})
}

func TestProfilePropagationAndLeaveAll(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		var rooms []string
		for range 3 {
			r, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, Preset: PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Join(ctx, bob, r.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			rooms = append(rooms, r.RoomID)
		}
		if err := s.Leave(ctx, bob, rooms[2], ""); err != nil {
			t.Fatal(err)
		}
		if err := s.PropagateProfile(ctx, bob, "Dr. Bob", "mxc://hs1.test/abc"); err != nil {
			t.Fatalf("propagate: %v", err)
		}
		memberContent := func(room string) gjson.Result {
			var js string
			db.QueryRow(ctx, `SELECT e.json FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid JOIN rooms r ON r.room_nid = cs.room_nid
				WHERE r.room_id = $1 AND cs.type = 'm.room.member' AND cs.state_key = $2`, room, bob).Scan(&js)
			return gjson.Get(js, "content")
		}
		for _, r := range rooms[:2] {
			if c := memberContent(r); c.Get("displayname").String() != "Dr. Bob" || c.Get("membership").String() != "join" || c.Get("avatar_url").String() != "mxc://hs1.test/abc" {
				t.Errorf("member content in %s = %s", r, c.Raw)
			}
		}
		if c := memberContent(rooms[2]); c.Get("membership").String() != "leave" {
			t.Errorf("propagation touched a left room: %s", c.Raw)
		}
		before, _ := db.StreamHead(ctx)
		if err := s.PropagateProfile(ctx, bob, "Dr. Bob", "mxc://hs1.test/abc"); err != nil {
			t.Fatal(err)
		}
		if after, _ := db.StreamHead(ctx); after != before {
			t.Errorf("an unchanged profile sent %d events", after-before)
		}
		if err := s.LeaveAllRooms(ctx, bob); err != nil {
			t.Fatalf("leave all: %v", err)
		}
		for _, r := range rooms {
			if m := memberContent(r).Get("membership").String(); m != "leave" {
				t.Errorf("bob is %q in %s after LeaveAllRooms", m, r)
			}
		}
	})
}

func TestRedactionSentAsEvent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`)})
		if err != nil {
			t.Fatal(err)
		}
		red, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.redaction", Content: json.RawMessage(fmt.Sprintf(`{"redacts":%q}`, msg))})
		if err != nil {
			t.Fatalf("send redaction: %v", err)
		}
		var by string
		db.QueryRow(ctx, `SELECT redacted_by FROM events WHERE event_id = $1`, msg).Scan(&by)
		if by != red {
			t.Errorf("redacted_by = %q, want %s", by, red)
		}
	})
}

// BenchmarkSendParallel measures sends from concurrent users, each into
// their own room, on SQLite with synchronous=FULL (group commit).
func BenchmarkSendParallel(b *testing.B) {
	db := storagetest.Open(b, "sqlite:"+b.TempDir()+"/bench.db")
	key, _ := keyring.Generate()
	cfg := config.Defaults()
	cfg.ServerName = "hs1.test"
	s := New(db, streams.NewNotifier(0), key, &cfg)
	ctx := context.Background()
	var mu sync.Mutex
	n := 0
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		n++
		user := fmt.Sprintf("@u%d:hs1.test", n)
		mu.Unlock()
		r, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: user})
		if err != nil {
			b.Error(err)
			return
		}
		i := 0
		for pb.Next() {
			i++
			if _, err := s.Send(ctx, SendRequest{RoomID: r.RoomID, Sender: user, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"hello"}`), TxnDevice: "D", TxnID: fmt.Sprint(i)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestRepeatedStateIsNoOp(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		s := newTestService(t, db)
		res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice})
		if err != nil {
			t.Fatal(err)
		}
		empty := ""
		set := func(content string) string {
			t.Helper()
			id, err := s.Send(ctx, SendRequest{RoomID: res.RoomID, Sender: alice, Type: "m.room.topic", StateKey: &empty, Content: json.RawMessage(content)})
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		first := set(`{"topic":"Sprechzeiten","x":1}`)
		if again := set(`{"x":1, "topic":"Sprechzeiten"}`); again != first {
			t.Errorf("identical state made a new event %s, want %s", again, first)
		}
		if changed := set(`{"topic":"Urlaub"}`); changed == first {
			t.Errorf("changed state returned the old event")
		}
	})
}
