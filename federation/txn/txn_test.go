package txn_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// remoteRoom is hs2's room as a crafting remote (hs1) sees it.
type remoteRoom struct {
	t      *testing.T
	target *hstest.Server // the receiving server (hs2)
	roomID string
	ver    gomatrixserverlib.IRoomVersion
	// authState, when set, replaces the receiver's current state as the
	// source of auth events (to build on an older point of the room).
	authState map[string]string
}

// head reads the receiving server's extremities, depth and the auth
// state event IDs.
func (r *remoteRoom) head() (prev []string, depth int64, state map[string]string) {
	ctx := context.Background()
	db := r.target.DB
	rows, err := db.Query(ctx, `SELECT f.event_id FROM forward_extremities f JOIN rooms r ON r.room_nid = f.room_nid WHERE r.room_id = $1`, r.roomID)
	if err != nil {
		r.t.Fatal(err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		prev = append(prev, id)
	}
	rows.Close()
	if err := db.QueryRow(ctx, `SELECT max_depth FROM rooms WHERE room_id = $1`, r.roomID).Scan(&depth); err != nil {
		r.t.Fatal(err)
	}
	state = map[string]string{}
	rows, err = db.Query(ctx, `SELECT cs.type, cs.state_key, e.event_id FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
		JOIN rooms r ON r.room_nid = cs.room_nid WHERE r.room_id = $1`, r.roomID)
	if err != nil {
		r.t.Fatal(err)
	}
	for rows.Next() {
		var typ, sk, id string
		rows.Scan(&typ, &sk, &id)
		state[typ+"|"+sk] = id
	}
	rows.Close()
	return prev, depth, state
}

// build makes an event from sender signed by server/key on top of the
// receiving server's head, with auth events picked from its state.
// joinFrom has user, of hs1, join the room through a transaction to the
// room's server, failing the test if the join is not accepted.
func (r *remoteRoom) joinFrom(t *testing.T, hs1 *hstest.Server, user string) gomatrixserverlib.PDU {
	t.Helper()
	join := r.build(hs1.Config.ServerName, hs1.SigningKey.KeyID, hs1.SigningKey.PrivateKey, user, "m.room.member", &user, map[string]any{"membership": "join"})
	if res := send(t, hs1, r.target.Config.ServerName, "join-"+join.EventID(), join.JSON())[join.EventID()]; res.Error != "" {
		t.Fatalf("join of %s: %s", user, res.Error)
	}
	return join
}

func (r *remoteRoom) build(server string, keyID string, key ed25519.PrivateKey, sender, evType string, stateKey *string, content any) gomatrixserverlib.PDU {
	r.t.Helper()
	return r.buildOn(nil, server, keyID, key, sender, evType, stateKey, content)
}

// buildOn is build with explicit prev events (nil: the current head).
func (r *remoteRoom) buildOn(prevIDs []string, server string, keyID string, key ed25519.PrivateKey, sender, evType string, stateKey *string, content any) gomatrixserverlib.PDU {
	r.t.Helper()
	prev, depth, state := r.head()
	if prevIDs != nil {
		prev = prevIDs
	}
	if r.authState != nil {
		state = r.authState
	}
	auth := []string{state["m.room.create|"], state["m.room.power_levels|"]}
	if id, ok := state["m.room.member|"+sender]; ok {
		auth = append(auth, id)
	}
	if evType == "m.room.member" {
		auth = append(auth, state["m.room.join_rules|"])
	}
	c, _ := json.Marshal(content)
	pe := &gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: r.roomID, Type: evType, StateKey: stateKey,
		PrevEvents: prev, AuthEvents: auth, Depth: depth + 1, Content: c, Version: r.ver,
	}
	eb := r.ver.NewEventBuilderFromProtoEvent(pe)
	pdu, err := eb.Build(time.Now(), spec.ServerName(server), gomatrixserverlib.KeyID(keyID), key)
	if err != nil {
		r.t.Fatalf("build %s: %v", evType, err)
	}
	return pdu
}

// send delivers raw PDUs from hs1 to hs2 in one transaction and returns
// the per-PDU results.
func send(t *testing.T, from *hstest.Server, to string, txnID string, pdus ...[]byte) map[string]fclient.PDUResult {
	t.Helper()
	raws := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raws[i] = p
	}
	res, err := from.Fed.Client.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(txnID), Origin: spec.ServerName(from.Config.ServerName),
		Destination: spec.ServerName(to), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: raws,
		EDUs: []gomatrixserverlib.EDU{},
	})
	if err != nil {
		t.Fatalf("send transaction: %v", err)
	}
	return res.PDUs
}

func stored(t *testing.T, srv *hstest.Server, eventID string) (found, rejected, softFailed bool, js string) {
	t.Helper()
	err := srv.DB.QueryRow(context.Background(), `SELECT rejected, soft_failed, json FROM events WHERE event_id = $1`, eventID).Scan(&rejected, &softFailed, &js)
	if err != nil {
		return false, false, false, ""
	}
	return true, rejected, softFailed, js
}

func setup(t *testing.T, n *hstest.Network) (*hstest.Network, *hstest.Server, *hstest.Server, *mautrix.Client, *remoteRoom) {
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice := hs2.Register(t, "alice")
	resp, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	ver, _ := gomatrixserverlib.GetRoomVersion("10")
	return n, hs1, hs2, alice, &remoteRoom{t: t, target: hs2, roomID: resp.RoomID.String(), ver: ver}
}

func TestInboundTransactionPipeline(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testInboundTransactionPipeline)
}

func testInboundTransactionPipeline(t *testing.T, n *hstest.Network) {
	_, hs1, hs2, alice, room := setup(t, n)
	key, keyID := hs1.SigningKey.PrivateKey, hs1.SigningKey.KeyID
	bob := "@bob:hs1.test"

	join := room.build("hs1.test", keyID, key, bob, "m.room.member", &bob, map[string]any{"membership": "join"})
	res := send(t, hs1, "hs2.test", "t1", join.JSON())
	if r, ok := res[join.EventID()]; !ok || r.Error != "" {
		t.Fatalf("join: result %+v (present %v), want accepted", r, ok)
	}
	if m, _ := hs2.Rooms.Membership(context.Background(), room.roomID, bob); m != "join" {
		t.Fatalf("bob's membership on hs2 = %q, want join", m)
	}

	msg := room.build("hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hello from hs1"})
	res = send(t, hs1, "hs2.test", "t2", msg.JSON())
	if r := res[msg.EventID()]; r.Error != "" {
		t.Fatalf("message: %q", r.Error)
	}
	// alice on hs2 sees it
	msgs, err := alice.Messages(context.Background(), mautrixRoom(room.roomID), "", "", mautrix.DirectionBackward, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !containsEvent(msgs.Chunk, msg.EventID()) {
		t.Fatalf("hs2 /messages lacks the federated message")
	}

	// The same transaction again changes nothing and answers the same.
	again := send(t, hs1, "hs2.test", "t2", msg.JSON())
	if len(again) != 1 || again[msg.EventID()].Error != "" {
		t.Fatalf("retried transaction answered %+v", again)
	}
	var count int
	hs2.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM events WHERE event_id = $1`, msg.EventID()).Scan(&count)
	if count != 1 {
		t.Fatalf("event stored %d times", count)
	}

	_, forged, _ := ed25519.GenerateKey(nil)
	carol := "@carol:hs1.test"
	for _, tc := range []struct {
		name        string
		pdu         func() []byte
		wantStored  bool
		wantReject  bool
		wantInError string
	}{
		{
			name: "wrong signature",
			pdu: func() []byte {
				return room.build("hs1.test", keyID, forged, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x"}).JSON()
			},
			wantInError: "signature",
		},
		{
			name: "sender not joined fails auth",
			pdu: func() []byte {
				return room.build("hs1.test", keyID, key, carol, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x"}).JSON()
			},
			wantStored: true, wantReject: true, wantInError: "rejected",
		},
		{
			name: "sender on a server that is not a partner",
			pdu: func() []byte {
				return room.build("hs1.test", keyID, key, "@eve:hs3.test", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x"}).JSON()
			},
			wantInError: "partner",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.pdu()
			ev, err := room.ver.NewEventFromUntrustedJSON(raw)
			if err != nil {
				t.Fatal(err)
			}
			res := send(t, hs1, "hs2.test", "neg-"+strings.ReplaceAll(tc.name, " ", "-"), raw)
			if r := res[ev.EventID()]; !strings.Contains(r.Error, tc.wantInError) {
				t.Fatalf("result error %q, want it to mention %q", r.Error, tc.wantInError)
			}
			found, rejected, _, _ := stored(t, hs2, ev.EventID())
			if found != tc.wantStored || rejected != tc.wantReject {
				t.Fatalf("stored=%v rejected=%v, want %v %v", found, rejected, tc.wantStored, tc.wantReject)
			}
			msgs, err := alice.Messages(context.Background(), mautrixRoom(room.roomID), "", "", mautrix.DirectionBackward, nil, 20)
			if err != nil {
				t.Fatal(err)
			}
			if containsEvent(msgs.Chunk, ev.EventID()) {
				t.Fatalf("refused event is served to clients")
			}
		})
	}

	t.Run("content changed after signing is redacted", func(t *testing.T) {
		ev := room.build("hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "original"})
		tampered, _ := sjson.SetBytes(ev.JSON(), "content.body", "tampered")
		res := send(t, hs1, "hs2.test", "tamper", tampered)
		if r, ok := res[ev.EventID()]; !ok || r.Error != "" {
			t.Fatalf("result %+v present=%v", r, ok)
		}
		found, _, _, js := stored(t, hs2, ev.EventID())
		if !found {
			t.Fatal("redacted event not stored")
		}
		if body := gjson.Get(js, "content.body"); body.Exists() {
			t.Fatalf("stored content still has body %q", body.String())
		}
	})
}

func mautrixRoom(s string) id.RoomID { return id.RoomID(s) }

func containsEvent(evs []*event.Event, eventID string) bool {
	for _, e := range evs {
		if e.ID.String() == eventID {
			return true
		}
	}
	return false
}

// Concurrent events: hs1 sends on top of an event that hs2 has already
// extended; both become forward extremities and hs2's next event merges
// them.
func TestInboundForkIsMerged(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testInboundForkIsMerged)
}

func testInboundForkIsMerged(t *testing.T, n *hstest.Network) {
	_, hs1, hs2, alice, room := setup(t, n)
	key, keyID := hs1.SigningKey.PrivateKey, hs1.SigningKey.KeyID
	bob := "@bob:hs1.test"
	join := room.joinFrom(t, hs1, bob)
	ctx := context.Background()
	local, err := alice.SendText(ctx, mautrixRoom(room.roomID), "local")
	if err != nil {
		t.Fatal(err)
	}
	// bob's event does not know alice's latest message
	remote := room.buildOn([]string{join.EventID()}, "hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "concurrent"})
	if r := send(t, hs1, "hs2.test", "f", remote.JSON())[remote.EventID()]; r.Error != "" {
		t.Fatalf("concurrent event: %s", r.Error)
	}
	prev, _, _ := room.head()
	if !sameIDs(prev, []string{local.EventID.String(), remote.EventID()}) {
		t.Fatalf("extremities %v, want alice's and bob's events", prev)
	}
	merge, err := alice.SendText(ctx, mautrixRoom(room.roomID), "merge")
	if err != nil {
		t.Fatal(err)
	}
	var js string
	hs2.DB.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1`, merge.EventID.String()).Scan(&js)
	if n := len(gjson.Get(js, "prev_events").Array()); n != 2 {
		t.Fatalf("merging event has %d prev events, want 2", n)
	}
	prev, _, _ = room.head()
	if len(prev) != 1 || prev[0] != merge.EventID.String() {
		t.Fatalf("extremities after merge %v", prev)
	}
	msgs, err := alice.Messages(ctx, mautrixRoom(room.roomID), "", "", mautrix.DirectionBackward, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !containsEvent(msgs.Chunk, remote.EventID()) {
		t.Fatal("concurrent event not in the timeline")
	}
}

func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return true
}

// An event allowed by its own history but not by the current state (bob
// was banned meanwhile) is soft-failed: stored, never served.
func TestInboundSoftFail(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testInboundSoftFail)
}

func testInboundSoftFail(t *testing.T, n *hstest.Network) {
	_, hs1, hs2, alice, room := setup(t, n)
	key, keyID := hs1.SigningKey.PrivateKey, hs1.SigningKey.KeyID
	bob := "@bob:hs1.test"
	join := room.joinFrom(t, hs1, bob)
	ctx := context.Background()
	_, _, room.authState = room.head()
	if _, err := alice.BanUser(ctx, mautrixRoom(room.roomID), &mautrix.ReqBanUser{UserID: id.UserID(bob)}); err != nil {
		t.Fatal(err)
	}
	late := room.buildOn([]string{join.EventID()}, "hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after ban"})
	if r := send(t, hs1, "hs2.test", "late", late.JSON())[late.EventID()]; r.Error != "" {
		t.Fatalf("soft-failed events are not errors to the sender, got %q", r.Error)
	}
	found, rejected, soft, _ := stored(t, hs2, late.EventID())
	if !found || rejected || !soft {
		t.Fatalf("found=%v rejected=%v soft_failed=%v, want a stored soft-failed event", found, rejected, soft)
	}
	msgs, err := alice.Messages(ctx, mautrixRoom(room.roomID), "", "", mautrix.DirectionBackward, nil, 20)
	if err != nil {
		t.Fatal(err)
	}
	if containsEvent(msgs.Chunk, late.EventID()) {
		t.Fatal("soft-failed event served")
	}
	prev, _, _ := room.head()
	for _, p := range prev {
		if p == late.EventID() {
			t.Fatal("soft-failed event became a forward extremity")
		}
	}
}

// A room's server ACL drops PDUs from a denied origin.
func TestInboundServerACL(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testInboundServerACL)
}

func testInboundServerACL(t *testing.T, n *hstest.Network) {
	_, hs1, hs2, alice, room := setup(t, n)
	key, keyID := hs1.SigningKey.PrivateKey, hs1.SigningKey.KeyID
	bob := "@bob:hs1.test"
	room.joinFrom(t, hs1, bob)
	ctx := context.Background()
	if _, err := alice.SendStateEvent(ctx, mautrixRoom(room.roomID), event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"hs1.test"}}); err != nil {
		t.Fatal(err)
	}
	msg := room.build("hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "denied"})
	r := send(t, hs1, "hs2.test", "acl", msg.JSON())[msg.EventID()]
	if !strings.Contains(r.Error, "ACL") {
		t.Fatalf("result %q, want an ACL refusal", r.Error)
	}
	if found, _, _, _ := stored(t, hs2, msg.EventID()); found {
		t.Fatal("event from an ACL-denied server was stored")
	}
}
