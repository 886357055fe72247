package sender_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"praxis/federation/sender"
	"praxis/internal/hstest"
	"praxis/internal/storage"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		failures int64
		want     time.Duration
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{5, 16 * time.Second},
		{9, 256 * time.Second},
		// a partner down for an hour is retried within five minutes of
		// its return even when it sends us nothing
		{10, 5 * time.Minute},
		{1000, 5 * time.Minute},
	} {
		if got := sender.Backoff(tc.failures); got != tc.want {
			t.Errorf("Backoff(%d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
}

// delivered reports whether hs2 has delivered events up to eventID to
// hs1: its destination position passed the event's stream position, and
// hs1 recorded a transaction from hs2. (hs1 does not hold the room, so its
// per-PDU answers cannot name the events.)
func delivered(t *testing.T, hs1, hs2 *hstest.Server, eventID string) bool {
	t.Helper()
	ctx := context.Background()
	var pos, sentPos, txns int64
	hs2.DB.QueryRow(ctx, `SELECT stream_pos FROM events WHERE event_id = $1`, eventID).Scan(&pos)
	hs2.DB.QueryRow(ctx, `SELECT sent_pos FROM federation_destinations WHERE server_name = 'hs1.test'`).Scan(&sentPos)
	hs1.DB.QueryRow(ctx, `SELECT COUNT(*) FROM federation_inbound_txns WHERE origin = 'hs2.test'`).Scan(&txns)
	return pos > 0 && sentPos >= pos && txns > 0
}

// A partner that is offline gets everything once it is back, and a
// destination's position survives in the database.
func TestSenderQueuesWhileDownAndCatchesUp(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testSenderQueuesWhileDownAndCatchesUp)
}

func testSenderQueuesWhileDownAndCatchesUp(t *testing.T, n *hstest.Network) {
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	alice := hs2.Register(t, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := resp.RoomID.String()
	joinFromHS1(t, hs1, hs2, roomID, "@bob:hs1.test")

	n.SetDown("hs1.test", true)
	var sent []string
	for i := 0; i < 3; i++ {
		r, err := alice.SendMessageEvent(ctx, resp.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "queued"})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, r.EventID.String())
	}
	// hs2 tries, fails and backs off
	waitFor(t, 10*time.Second, "a failed attempt to be recorded", func() bool {
		var failures int64
		hs2.DB.QueryRow(ctx, `SELECT failures FROM federation_destinations WHERE server_name = 'hs1.test'`).Scan(&failures)
		return failures > 0
	})
	if delivered(t, hs1, hs2, sent[0]) {
		t.Fatal("delivered while down")
	}
	n.SetDown("hs1.test", false)
	waitFor(t, 30*time.Second, "queued events to arrive", func() bool {
		return delivered(t, hs1, hs2, sent[len(sent)-1])
	})
	var failures int64
	hs2.DB.QueryRow(ctx, `SELECT failures FROM federation_destinations WHERE server_name = 'hs1.test'`).Scan(&failures)
	if failures != 0 {
		t.Fatalf("failures = %d after a successful delivery, want 0", failures)
	}
}

// A server that is not on the allowlist gets nothing, even with a member
// in the room.
func TestSenderSkipsServersNotAllowed(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testSenderSkipsServersNotAllowed)
}

func testSenderSkipsServersNotAllowed(t *testing.T, n *hstest.Network) {
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	alice := hs2.Register(t, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	joinFromHS1(t, hs1, hs2, resp.RoomID.String(), "@bob:hs1.test")
	// hs2 withdraws hs1 from its allowlist at runtime
	if err := hs2.DB.Transact(ctx, func(tx *storage.DB) error {
		return hs2.Fed.Allow.Set(ctx, tx, "hs1.test", false, "@admin:hs2.test")
	}); err != nil {
		t.Fatal(err)
	}
	r, err := alice.SendMessageEvent(ctx, resp.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "private"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	var sentPos, pos int64
	hs2.DB.QueryRow(ctx, `SELECT sent_pos FROM federation_destinations WHERE server_name = 'hs1.test'`).Scan(&sentPos)
	hs2.DB.QueryRow(ctx, `SELECT stream_pos FROM events WHERE event_id = $1`, r.EventID.String()).Scan(&pos)
	if sentPos >= pos {
		t.Fatal("event delivered to a server removed from the allowlist")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// joinFromHS1 makes userID (of hs1) join hs2's public room by sending the
// join event straight in a transaction, as hs1 would after make_join.
func joinFromHS1(t *testing.T, hs1, hs2 *hstest.Server, roomID, userID string) {
	t.Helper()
	ctx := context.Background()
	var prev []string
	rows, _ := hs2.DB.Query(ctx, `SELECT f.event_id FROM forward_extremities f JOIN rooms r ON r.room_nid = f.room_nid WHERE r.room_id = $1`, roomID)
	for rows.Next() {
		var id string
		rows.Scan(&id)
		prev = append(prev, id)
	}
	rows.Close()
	var depth int64
	hs2.DB.QueryRow(ctx, `SELECT max_depth FROM rooms WHERE room_id = $1`, roomID).Scan(&depth)
	auth := []string{}
	rows, _ = hs2.DB.Query(ctx, `SELECT e.event_id FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid JOIN rooms r ON r.room_nid = cs.room_nid
		WHERE r.room_id = $1 AND cs.type IN ('m.room.create', 'm.room.power_levels', 'm.room.join_rules')`, roomID)
	for rows.Next() {
		var id string
		rows.Scan(&id)
		auth = append(auth, id)
	}
	rows.Close()
	ver, _ := gomatrixserverlib.GetRoomVersion("10")
	eb := ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: "m.room.member", StateKey: &userID,
		PrevEvents: prev, AuthEvents: auth, Depth: depth + 1, Content: []byte(`{"membership":"join"}`), Version: ver,
	})
	pdu, err := eb.Build(time.Now(), "hs1.test", gomatrixserverlib.KeyID(hs1.SigningKey.KeyID), hs1.SigningKey.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hs1.Fed.Client.SendTransaction(ctx, gomatrixserverlib.Transaction{
		TransactionID: "join", Origin: "hs1.test", Destination: "hs2.test",
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{pdu.JSON()}, EDUs: []gomatrixserverlib.EDU{},
	})
	if err != nil || res.PDUs[pdu.EventID()] != (fclient.PDUResult{}) {
		t.Fatalf("join over federation: %v %+v", err, res.PDUs)
	}
}

// A kick right after a remote user joined still reaches the user's
// server, although it then has nobody joined in the room.
func TestSenderDeliversKickOfLastRemoteMember(t *testing.T) {
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	alice := hs2.Register(t, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	joinFromHS1(t, hs1, hs2, resp.RoomID.String(), "@bob:hs1.test")
	if _, err := alice.KickUser(ctx, resp.RoomID, &mautrix.ReqKickUser{UserID: "@bob:hs1.test"}); err != nil {
		t.Fatal(err)
	}
	var kickID string
	hs2.DB.QueryRow(ctx, `SELECT event_id FROM events WHERE type = 'm.room.member' AND state_key = '@bob:hs1.test' ORDER BY stream_pos DESC LIMIT 1`).Scan(&kickID)
	waitFor(t, 10*time.Second, "the kick to reach hs1", func() bool { return delivered(t, hs1, hs2, kickID) })
}
