package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"praxis/internal/hstest"
)

// fedDo sends a federation request from origin (signed with its real
// key) to dest and returns the status and body.
func fedDo(t *testing.T, n *hstest.Network, origin, dest, method, path string, body any) (int, []byte) {
	t.Helper()
	req := fclient.NewFederationRequest(method, spec.ServerName(origin), spec.ServerName(dest), path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	key := n.Server(origin).SigningKey
	if err := req.Sign(spec.ServerName(origin), gomatrixserverlib.KeyID(key.KeyID), key.PrivateKey); err != nil {
		t.Fatal(err)
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := n.RoundTrip(hreq.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestFederationRoomEndpointsRefuse covers the refusals of the
// membership, room-read and key endpoints: each is answered with the
// spec's error and changes nothing.
func TestFederationRoomEndpointsRefuse(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test", "hs3.test")
	hs1 := n.Server("hs1.test")
	alice := hs1.Register(t, "alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID.String()
	send, err := alice.SendText(ctx, created.RoomID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	ev := send.EventID.String()
	const v1 = "/_matrix/federation/v1"

	// a join event signed by hs2 for a user of hs3: a forged membership
	_, tmpl := fedDo(t, n, "hs2.test", "hs1.test", "GET", v1+"/make_join/"+room+"/@bob:hs2.test?ver=10", nil)
	var made struct {
		Event gomatrixserverlib.ProtoEvent `json:"event"`
	}
	if err := json.Unmarshal(tmpl, &made); err != nil {
		t.Fatalf("make_join answer %s: %v", tmpl, err)
	}
	made.Event.SenderID, made.Event.StateKey = "@mallory:hs3.test", ptr("@mallory:hs3.test")
	v10 := gomatrixserverlib.MustGetRoomVersion("10")
	hs2key := n.Server("hs2.test").SigningKey
	forged, err := v10.NewEventBuilderFromProtoEvent(&made.Event).Build(
		time.Now(), "hs2.test", gomatrixserverlib.KeyID(hs2key.KeyID), hs2key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, origin, method, path string
		body                       any
		status                     int
		errcode                    string
	}{
		{"make_join for another server's user", "hs2.test", "GET", v1 + "/make_join/" + room + "/@bob:hs3.test?ver=10", nil, 403, "M_FORBIDDEN"},
		{"make_join without the room's version", "hs2.test", "GET", v1 + "/make_join/" + room + "/@bob:hs2.test?ver=1&ver=2", nil, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"make_join for an unknown room", "hs2.test", "GET", v1 + "/make_join/!nope:hs1.test/@bob:hs2.test?ver=10", nil, 404, "M_NOT_FOUND"},
		{"send_join of another server's user", "hs2.test", "PUT", "/_matrix/federation/v2/send_join/" + room + "/" + forged.EventID(), json.RawMessage(forged.JSON()), 403, "M_FORBIDDEN"},
		{"event for a server not in the room", "hs2.test", "GET", v1 + "/event/" + ev, nil, 403, "M_FORBIDDEN"},
		{"state_ids for a server not in the room", "hs2.test", "GET", v1 + "/state_ids/" + room + "?event_id=" + ev, nil, 403, "M_FORBIDDEN"},
		{"state_ids without event_id", "hs2.test", "GET", v1 + "/state_ids/" + room, nil, 400, "M_MISSING_PARAM"},
		{"backfill for a server not in the room", "hs2.test", "GET", v1 + "/backfill/" + room + "?v=" + ev + "&limit=10", nil, 403, "M_FORBIDDEN"},
		{"timestamp_to_event for a server not in the room", "hs2.test", "GET", v1 + "/timestamp_to_event/" + room + "?ts=1&dir=f", nil, 403, "M_FORBIDDEN"},
		{"timestamp_to_event with a bad direction", "hs2.test", "GET", v1 + "/timestamp_to_event/" + room + "?ts=1&dir=x", nil, 400, "M_INVALID_PARAM"},
		{"user devices of another server's user", "hs2.test", "GET", v1 + "/user/devices/@bob:hs2.test", nil, 400, "M_INVALID_PARAM"},
		{"profile of another server's user", "hs2.test", "GET", v1 + "/query/profile?user_id=@bob:hs2.test", nil, 400, "M_INVALID_PARAM"},
		{"profile of an unknown user", "hs2.test", "GET", v1 + "/query/profile?user_id=@nobody:hs1.test", nil, 404, "M_NOT_FOUND"},
		{"unknown alias", "hs2.test", "GET", v1 + "/query/directory?room_alias=%23nope:hs1.test", nil, 404, "M_NOT_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := fedDo(t, n, tc.origin, "hs1.test", tc.method, tc.path, tc.body)
			if status != tc.status || gjson.GetBytes(body, "errcode").String() != tc.errcode {
				t.Fatalf("got %d %s, want %d %s", status, body, tc.status, tc.errcode)
			}
		})
	}
	if m := membershipOf(ctx, alice, created.RoomID, "@mallory:hs3.test"); m != "" {
		t.Fatalf("the forged join left a membership %q", m)
	}

	// Reads answered for a server in the room, and keys only for local users.
	bob := n.Server("hs2.test").Register(t, "bob")
	if _, err := bob.JoinRoom(ctx, room, &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join public room: %v", err)
	}
	if status, body := fedDo(t, n, "hs2.test", "hs1.test", "GET", v1+"/event/"+ev, nil); status != 200 || !bytes.Contains(body, []byte(`"hello"`)) {
		t.Fatalf("event for a server in the room: %d %s", status, body)
	}
	status, body := fedDo(t, n, "hs2.test", "hs1.test", "GET", v1+"/state_ids/"+room+"?event_id="+ev, nil)
	if status != 200 || len(gjson.GetBytes(body, "pdu_ids").Array()) == 0 || len(gjson.GetBytes(body, "auth_chain_ids").Array()) == 0 {
		t.Fatalf("state_ids: %d %s", status, body)
	}
	status, body = fedDo(t, n, "hs2.test", "hs1.test", "GET", v1+"/timestamp_to_event/"+room+"?ts="+fmt.Sprint(time.Now().Add(time.Hour).UnixMilli())+"&dir=b", nil)
	if status != 200 || gjson.GetBytes(body, "event_id").String() == "" {
		t.Fatalf("timestamp_to_event: %d %s", status, body)
	}
	status, body = fedDo(t, n, "hs2.test", "hs1.test", "POST", v1+"/user/keys/query", map[string]any{
		"device_keys": map[string][]string{"@alice:hs1.test": {}, "@bob:hs2.test": {}},
	})
	if status != 200 || gjson.GetBytes(body, `device_keys.@bob:hs2\.test`).Exists() {
		t.Fatalf("keys query answered for another server's user: %d %s", status, body)
	}
	status, body = fedDo(t, n, "hs2.test", "hs1.test", "GET", v1+"/query/profile?user_id=@alice:hs1.test", nil)
	if status != 200 {
		t.Fatalf("profile: %d %s", status, body)
	}
}

func ptr[T any](v T) *T { return &v }

// Invites a partner sends are checked before anything is signed or
// stored: the invitee must be ours and exist, the inviter must be the
// sending server's, the room version supported.
func TestInboundInviteRefusals(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice := n.Server("hs1.test").Register(t, "alice")
	hs2key := n.Server("hs2.test").SigningKey
	v10 := gomatrixserverlib.MustGetRoomVersion("10")
	invite := func(sender, target string) gomatrixserverlib.PDU {
		c, _ := json.Marshal(map[string]string{"membership": "invite"})
		pe := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: "!room:hs2.test", Type: "m.room.member", StateKey: &target,
			Content: c, Depth: 5, PrevEvents: []string{"$prev"}, AuthEvents: []string{"$create"}, Version: v10}
		ev, err := v10.NewEventBuilderFromProtoEvent(pe).Build(time.Now(), "hs2.test", gomatrixserverlib.KeyID(hs2key.KeyID), hs2key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	path := func(ev gomatrixserverlib.PDU) string {
		return "/_matrix/federation/v2/invite/" + ev.RoomID().String() + "/" + ev.EventID()
	}
	good := invite("@bob:hs2.test", alice.UserID.String())
	for _, tc := range []struct {
		name    string
		path    string
		body    any
		status  int
		errcode string
	}{
		{"inviter of another server", "", invite("@carol:hs3.test", alice.UserID.String()), 403, "M_FORBIDDEN"},
		{"invitee not ours", "", invite("@bob:hs2.test", "@dave:hs2.test"), 400, "M_BAD_JSON"},
		{"invitee unknown", "", invite("@bob:hs2.test", "@nobody:hs1.test"), 404, "M_NOT_FOUND"},
		{"unsupported room version", path(good), map[string]any{"room_version": "99", "event": json.RawMessage(good.JSON())}, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"event ID not the path's", "/_matrix/federation/v2/invite/!room:hs2.test/$other", nil, 400, "M_BAD_JSON"},
		{"no event", path(good), map[string]any{"room_version": "10"}, 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, body := tc.path, tc.body
			if ev, ok := body.(gomatrixserverlib.PDU); ok {
				p, body = path(ev), map[string]any{"room_version": "10", "event": json.RawMessage(ev.JSON())}
			}
			if body == nil {
				body = map[string]any{"room_version": "10", "event": json.RawMessage(good.JSON())}
			}
			status, resp := fedDo(t, n, "hs2.test", "hs1.test", "PUT", p, body)
			if status != tc.status || gjson.GetBytes(resp, "errcode").String() != tc.errcode {
				t.Fatalf("got %d %s, want %d %s", status, resp, tc.status, tc.errcode)
			}
		})
	}
	sync, err := alice.SyncRequest(ctx, 0, "", "", false, "offline")
	if err != nil {
		t.Fatal(err)
	}
	if len(sync.Rooms.Invite) != 0 {
		t.Fatalf("a refused invite reached alice's sync: %v", sync.Rooms.Invite)
	}
	// the well-formed one is signed by hs1 and shows up
	status, resp := fedDo(t, n, "hs2.test", "hs1.test", "PUT", path(good), map[string]any{"room_version": "10", "event": json.RawMessage(good.JSON())})
	if status != 200 || !gjson.GetBytes(resp, `event.signatures.hs1\.test`).Exists() {
		t.Fatalf("good invite: %d %s", status, resp)
	}
	sync, err = alice.SyncRequest(ctx, 0, "", "", false, "offline")
	if err != nil || sync.Rooms.Invite["!room:hs2.test"] == nil {
		t.Fatalf("the accepted invite is not in alice's sync: %v", err)
	}
}
