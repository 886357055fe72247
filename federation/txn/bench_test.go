package txn_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"praxis/internal/hstest"
)

// BenchmarkInboundPDUs measures inbound transaction throughput: chains of
// messages from a remote user, 50 PDUs per transaction, through
// signature checks, the auth checks and persistence (target ≥ 1000/s).
func BenchmarkInboundPDUs(b *testing.B) {
	n := hstest.NewNetwork(b, "hs1.test", "hs2.test")
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	alice := hs2.Register(b, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		b.Fatal(err)
	}
	ver, _ := gomatrixserverlib.GetRoomVersion("10")
	roomID := resp.RoomID.String()
	key, keyID := hs1.SigningKey.PrivateKey, gomatrixserverlib.KeyID(hs1.SigningKey.KeyID)
	bob := "@bob:hs1.test"

	head := func() (prev []string, depth int64, state map[string]string) {
		rows, _ := hs2.DB.Query(ctx, `SELECT f.event_id FROM forward_extremities f JOIN rooms r ON r.room_nid = f.room_nid WHERE r.room_id = $1`, roomID)
		for rows.Next() {
			var id string
			rows.Scan(&id)
			prev = append(prev, id)
		}
		rows.Close()
		hs2.DB.QueryRow(ctx, `SELECT max_depth FROM rooms WHERE room_id = $1`, roomID).Scan(&depth)
		state = map[string]string{}
		rows, _ = hs2.DB.Query(ctx, `SELECT cs.type, cs.state_key, e.event_id FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
			JOIN rooms r ON r.room_nid = cs.room_nid WHERE r.room_id = $1`, roomID)
		for rows.Next() {
			var typ, sk, id string
			rows.Scan(&typ, &sk, &id)
			state[typ+"|"+sk] = id
		}
		rows.Close()
		return
	}
	build := func(prev []string, depth int64, auth []string, evType string, sk *string, content string) gomatrixserverlib.PDU {
		eb := ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
			SenderID: bob, RoomID: roomID, Type: evType, StateKey: sk, PrevEvents: prev, AuthEvents: auth,
			Depth: depth, Content: []byte(content), Version: ver,
		})
		pdu, err := eb.Build(time.Now(), "hs1.test", keyID, key)
		if err != nil {
			b.Fatal(err)
		}
		return pdu
	}
	transact := func(id string, pdus []json.RawMessage) {
		res, err := hs1.Fed.Client.SendTransaction(ctx, gomatrixserverlib.Transaction{
			TransactionID: gomatrixserverlib.TransactionID(id), Origin: "hs1.test", Destination: "hs2.test",
			OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus, EDUs: []gomatrixserverlib.EDU{},
		})
		if err != nil {
			b.Fatal(err)
		}
		for id, r := range res.PDUs {
			if r.Error != "" {
				b.Fatalf("%s: %s", id, r.Error)
			}
		}
	}
	prev, depth, state := head()
	join := build(prev, depth+1, []string{state["m.room.create|"], state["m.room.power_levels|"], state["m.room.join_rules|"]}, "m.room.member", &bob, `{"membership":"join"}`)
	transact("join", []json.RawMessage{join.JSON()})
	prev, depth, state = head()
	auth := []string{state["m.room.create|"], state["m.room.power_levels|"], state["m.room.member|"+bob]}

	// build all events first: signing is the sender's cost, not ours
	evs := make([]json.RawMessage, b.N)
	for i := range evs {
		depth++
		p := build(prev, depth, auth, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"bench %d"}`, i))
		evs[i] = p.JSON()
		prev = []string{p.EventID()}
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < len(evs); i += 50 {
		transact(fmt.Sprintf("b%d", i), evs[i:min(i+50, len(evs))])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pdus/s")
}

// BenchmarkDeliveryLatency measures send on hs1 → event stored on hs2
// (the remote /sync reads it from there), p50 and p99 (target p99 ≤ 100 ms).
func BenchmarkDeliveryLatency(b *testing.B) {
	n := hstest.NewNetwork(b, "hs1.test", "hs2.test")
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	alice, bob := hs1.Register(b, "alice"), hs2.Register(b, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, created.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		b.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, created.RoomID); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r, err := alice.SendText(ctx, created.RoomID, "ping")
		if err != nil {
			b.Fatal(err)
		}
		for {
			var pos int64
			if err := hs2.DB.QueryRow(ctx, `SELECT stream_pos FROM events WHERE event_id = $1`, r.EventID.String()).Scan(&pos); err == nil && pos > 0 {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatal("event not delivered within 10s")
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
