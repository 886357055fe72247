package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// currentState returns the content of a current state event, read from
// the database: these tests cover the write path, not the read endpoints.
func currentState(t *testing.T, srv *hstest.Server, roomID id.RoomID, evType, stateKey string) gjson.Result {
	t.Helper()
	var js string
	err := srv.DB.QueryRow(context.Background(), `SELECT e.json FROM current_state cs
		JOIN events e ON e.event_nid = cs.event_nid JOIN rooms r ON r.room_nid = cs.room_nid
		WHERE r.room_id = $1 AND cs.type = $2 AND cs.state_key = $3`, string(roomID), evType, stateKey).Scan(&js)
	if err != nil {
		return gjson.Result{}
	}
	return gjson.Get(js, "content")
}

func membership(t *testing.T, srv *hstest.Server, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	return currentState(t, srv, roomID, "m.room.member", string(userID)).Get("membership").String()
}

func streamHead(t *testing.T, srv *hstest.Server) int64 {
	t.Helper()
	pos, err := srv.DB.StreamHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestCreateRoomPresetsAndVersions(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		srv.Register(t, "bob")
		for _, tc := range []struct {
			preset, version string
			joinRule        string
			encrypted       bool
		}{
			{"private_chat", "10", "invite", true},
			{"trusted_private_chat", "10", "invite", true},
			{"public_chat", "10", "public", false},
			{"private_chat", "1", "invite", true},
			{"public_chat", "11", "public", false},
			{"trusted_private_chat", "12", "invite", true},
			{"public_chat", "12", "public", false},
		} {
			t.Run(tc.preset+"/v"+tc.version, func(t *testing.T) {
				resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
					Preset: tc.preset, RoomVersion: id.RoomVersion(tc.version), Name: "Sprechstunde", Topic: "Fragen",
					Invite: []id.UserID{"@bob:hs1.test"},
				})
				if err != nil {
					t.Fatalf("createRoom: %v", err)
				}
				if got := currentState(t, srv, resp.RoomID, "m.room.create", "").Get("room_version").String(); got != tc.version {
					t.Errorf("room_version = %q, want %q", got, tc.version)
				}
				if got := currentState(t, srv, resp.RoomID, "m.room.join_rules", "").Get("join_rule").String(); got != tc.joinRule {
					t.Errorf("join_rule = %q, want %q", got, tc.joinRule)
				}
				enc := currentState(t, srv, resp.RoomID, "m.room.encryption", "").Get("algorithm").String()
				if (enc == "m.megolm.v1.aes-sha2") != tc.encrypted {
					t.Errorf("encryption algorithm = %q, want encrypted=%v", enc, tc.encrypted)
				}
				if got := currentState(t, srv, resp.RoomID, "m.room.name", "").Get("name").String(); got != "Sprechstunde" {
					t.Errorf("name = %q", got)
				}
				if got := currentState(t, srv, resp.RoomID, "m.room.topic", "").Get("topic").String(); got != "Fragen" {
					t.Errorf("topic = %q", got)
				}
				if got := membership(t, srv, resp.RoomID, "@bob:hs1.test"); got != "invite" {
					t.Errorf("bob's membership = %q, want invite", got)
				}
				pl := currentState(t, srv, resp.RoomID, "m.room.power_levels", "")
				if tc.version == "12" {
					if pl.Get(`users.@alice:hs1\.test`).Exists() {
						t.Errorf("v12 power levels list the creator: %s", pl.Raw)
					}
					if tc.preset == "trusted_private_chat" {
						if c := currentState(t, srv, resp.RoomID, "m.room.create", "").Get("additional_creators").Raw; !strings.Contains(c, "@bob:hs1.test") {
							t.Errorf("v12 trusted_private_chat: additional_creators = %s, want bob", c)
						}
					}
				} else if pl.Get(`users.@alice:hs1\.test`).Int() != 100 {
					t.Errorf("creator power = %s, want 100", pl.Get("users").Raw)
				}
			})
		}
	})
}

func TestCreateRoomRejectsBadInput(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "empfang"}); err != nil {
			t.Fatalf("create room with alias: %v", err)
		}
		url := alice.BuildClientURL("v3", "createRoom")
		for _, tc := range []struct {
			name string
			body any
			want string
		}{
			{"unsupported version", map[string]any{"room_version": "13"}, "M_UNSUPPORTED_ROOM_VERSION"},
			{"experimental version", map[string]any{"room_version": "org.matrix.hydra.11"}, "M_UNSUPPORTED_ROOM_VERSION"},
			{"alias taken", map[string]any{"room_alias_name": "empfang"}, "M_ROOM_IN_USE"},
			{"creation_content not an object", map[string]any{"creation_content": []int{1}}, "M_BAD_JSON"},
			{"invite not a list", map[string]any{"invite": "@bob:hs1.test"}, "M_BAD_JSON"},
			{"invalid invitee", map[string]any{"invite": []string{"bob"}}, "M_INVALID_PARAM"},
			{"unknown preset", map[string]any{"preset": "open_house"}, "M_INVALID_PARAM"},
			{"not JSON", json.RawMessage(`{"name":`), "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := streamHead(t, srv)
				req := mautrix.FullRequest{Method: http.MethodPost, URL: url, RequestJSON: tc.body, MaxAttempts: 1}
				if raw, ok := tc.body.(json.RawMessage); ok {
					req.RequestJSON, req.RequestBytes = nil, raw
				}
				_, err := alice.MakeFullRequest(ctx, req)
				if got := hstest.ErrCode(err); got != tc.want {
					t.Fatalf("errcode = %q (%v), want %q", got, err, tc.want)
				}
				if after := streamHead(t, srv); after != before {
					t.Errorf("a rejected createRoom wrote events (stream %d → %d)", before, after)
				}
			})
		}
	})
}

func TestMembershipLifecycle(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		r := room.RoomID
		step := func(name string, err error, wantCode string, who id.UserID, wantMembership string) {
			t.Helper()
			if got := hstest.ErrCode(err); got != wantCode || (wantCode == "" && err != nil) {
				t.Fatalf("%s: err %v, want errcode %q", name, err, wantCode)
			}
			if who != "" {
				if got := membership(t, srv, r, who); got != wantMembership {
					t.Fatalf("%s: %s is %q, want %q", name, who, got, wantMembership)
				}
			}
		}
		_, err = carol.JoinRoomByID(ctx, r)
		step("carol joins an invite-only room", err, "M_FORBIDDEN", carol.UserID, "")
		_, err = alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: bob.UserID})
		step("alice invites bob", err, "", bob.UserID, "invite")
		_, err = bob.JoinRoomByID(ctx, r)
		step("bob joins", err, "", bob.UserID, "join")
		if dn := currentState(t, srv, r, "m.room.member", string(bob.UserID)).Get("displayname"); dn.Exists() && dn.String() == "" {
			t.Errorf("empty displayname in bob's join")
		}
		_, err = bob.JoinRoomByID(ctx, r)
		step("bob joins again", err, "", bob.UserID, "join")
		_, err = bob.KickUser(ctx, r, &mautrix.ReqKickUser{UserID: alice.UserID})
		step("bob kicks alice", err, "M_FORBIDDEN", alice.UserID, "join")
		_, err = alice.KickUser(ctx, r, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "test"})
		step("alice kicks bob", err, "", bob.UserID, "leave")
		_, err = bob.SendText(ctx, r, "still here?")
		step("kicked bob sends", err, "M_FORBIDDEN", "", "")
		_, err = alice.BanUser(ctx, r, &mautrix.ReqBanUser{UserID: bob.UserID})
		step("alice bans bob", err, "", bob.UserID, "ban")
		_, err = alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: bob.UserID})
		step("alice invites banned bob", err, "M_FORBIDDEN", bob.UserID, "ban")
		_, err = alice.UnbanUser(ctx, r, &mautrix.ReqUnbanUser{UserID: carol.UserID})
		step("alice unbans carol who is not banned", err, "M_FORBIDDEN", carol.UserID, "")
		_, err = alice.UnbanUser(ctx, r, &mautrix.ReqUnbanUser{UserID: bob.UserID})
		step("alice unbans bob", err, "", bob.UserID, "leave")
		_, err = alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: bob.UserID})
		step("alice invites bob again", err, "", bob.UserID, "invite")
		_, err = bob.LeaveRoom(ctx, r)
		step("bob rejects the invite", err, "", bob.UserID, "leave")
		_, err = bob.LeaveRoom(ctx, r)
		step("bob leaves twice", err, "", bob.UserID, "leave")
		_, err = carol.LeaveRoom(ctx, r)
		step("carol leaves a room she was never in", err, "M_FORBIDDEN", carol.UserID, "")
		_, err = alice.ForgetRoom(ctx, r)
		step("alice forgets a room she is in", err, "M_UNKNOWN", alice.UserID, "join")
		_, err = bob.ForgetRoom(ctx, r)
		step("bob forgets", err, "", bob.UserID, "leave")
		var forgotten bool
		srv.DB.QueryRow(ctx, `SELECT m.forgotten FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid WHERE r.room_id = $1 AND m.user_id = $2`, string(r), string(bob.UserID)).Scan(&forgotten)
		if !forgotten {
			t.Errorf("room_members.forgotten not set for bob")
		}
		_, err = alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: "@nobody:hs1.test"})
		step("invite an unknown user", err, "M_NOT_FOUND", "", "")
		_, err = alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: "not-a-user"})
		step("invite an invalid user ID", err, "M_INVALID_PARAM", "", "")
	})
}

func TestJoinByAliasAndDirectory(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "wartezimmer", Visibility: "public"})
		if err != nil {
			t.Fatal(err)
		}
		var published bool
		srv.DB.QueryRow(ctx, `SELECT published FROM rooms WHERE room_id = $1`, string(room.RoomID)).Scan(&published)
		if !published {
			t.Errorf("visibility public did not publish the room")
		}
		if got := currentState(t, srv, room.RoomID, "m.room.canonical_alias", "").Get("alias").String(); got != "#wartezimmer:hs1.test" {
			t.Errorf("canonical alias = %q", got)
		}
		resp, err := bob.JoinRoom(ctx, "#wartezimmer:hs1.test", nil)
		if err != nil {
			t.Fatalf("join by alias: %v", err)
		}
		if resp.RoomID != room.RoomID {
			t.Errorf("join by alias gave %s, want %s", resp.RoomID, room.RoomID)
		}
		for _, tc := range []struct {
			name, target, want string
		}{
			{"unknown local alias", "#nothing:hs1.test", "M_NOT_FOUND"},
			// not on the federation allowlist
			{"remote alias of a stranger", "#lobby:elsewhere.test", "M_FORBIDDEN"},
			{"unknown room", "!unknown:hs1.test", "M_NOT_FOUND"},
			{"garbage", "lobby", "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := bob.JoinRoom(ctx, tc.target, nil)
				if got := hstest.ErrCode(err); got != tc.want {
					t.Errorf("join %s: %v, want %s", tc.target, err, tc.want)
				}
			})
		}
		if _, err := bob.CreateAlias(ctx, "#zweiter:hs1.test", room.RoomID); err != nil {
			t.Fatalf("bob adds an alias: %v", err)
		}
		if _, err := alice.CreateAlias(ctx, "#zweiter:hs1.test", room.RoomID); hstest.ErrCode(err) != "M_UNKNOWN" {
			t.Errorf("alias exists: %v, want 409 M_UNKNOWN", err)
		}
		if _, err := alice.CreateAlias(ctx, "#fremd:elsewhere.test", room.RoomID); hstest.ErrCode(err) != "M_INVALID_PARAM" {
			t.Errorf("remote alias: %v, want M_INVALID_PARAM", err)
		}
		carol := srv.Register(t, "carol")
		if _, err := carol.DeleteAlias(ctx, "#zweiter:hs1.test"); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("carol deletes bob's alias: %v, want M_FORBIDDEN", err)
		}
		if _, err := alice.DeleteAlias(ctx, "#zweiter:hs1.test"); err != nil {
			t.Errorf("room admin deletes alias: %v", err)
		}
		if _, err := alice.DeleteAlias(ctx, "#zweiter:hs1.test"); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("delete again: %v, want M_NOT_FOUND", err)
		}
		visURL := alice.BuildClientURL("v3", "directory", "list", "room", room.RoomID)
		if _, err := bob.MakeRequest(ctx, http.MethodPut, visURL, map[string]string{"visibility": "private"}, nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("bob unpublishes: %v, want M_FORBIDDEN", err)
		}
		if _, err := alice.MakeRequest(ctx, http.MethodPut, visURL, map[string]string{"visibility": "private"}, nil); err != nil {
			t.Errorf("alice unpublishes: %v", err)
		}
		srv.DB.QueryRow(ctx, `SELECT published FROM rooms WHERE room_id = $1`, string(room.RoomID)).Scan(&published)
		if published {
			t.Errorf("room still published")
		}
	})
}

func TestSendRespectsPowerLevels(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name    string
			evType  string
			state   bool
			wantErr string
		}{
			{"message is allowed", "m.room.message", false, ""},
			{"custom message is allowed", "org.example.ping", false, ""},
			{"name change is not", "m.room.name", true, "M_FORBIDDEN"},
			{"power levels are not", "m.room.power_levels", true, "M_FORBIDDEN"},
			{"custom state is not", "org.example.state", true, "M_FORBIDDEN"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var err error
				if tc.state {
					_, err = bob.SendStateEvent(ctx, room.RoomID, event.NewEventType(tc.evType), "", map[string]any{"name": "x"})
				} else {
					_, err = bob.SendMessageEvent(ctx, room.RoomID, event.NewEventType(tc.evType), map[string]any{"body": "x", "msgtype": "m.text"})
				}
				if got := hstest.ErrCode(err); got != tc.wantErr {
					t.Errorf("bob sends %s: %v, want %q", tc.evType, err, tc.wantErr)
				}
			})
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]any{"name": "Neu"}); err != nil {
			t.Fatalf("alice renames: %v", err)
		}
		name := currentState(t, srv, room.RoomID, "m.room.name", "")
		if name.Get("name").String() != "Neu" {
			t.Errorf("name = %s, want Neu", name.Raw)
		}
	})
}

func TestSendBadInputAndIdempotency(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, carol := srv.Register(t, "alice"), srv.Register(t, "carol")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		first, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"body": "a", "msgtype": "m.text"}, mautrix.ReqSendEvent{TransactionID: "txn-1"})
		if err != nil {
			t.Fatal(err)
		}
		again, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"body": "a", "msgtype": "m.text"}, mautrix.ReqSendEvent{TransactionID: "txn-1"})
		if err != nil {
			t.Fatal(err)
		}
		if again.EventID != first.EventID {
			t.Errorf("repeated txnId: %s, want %s", again.EventID, first.EventID)
		}
		other := srv.Login(t, "alice")
		third, err := other.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"body": "a", "msgtype": "m.text"}, mautrix.ReqSendEvent{TransactionID: "txn-1"})
		if err != nil {
			t.Fatal(err)
		}
		if third.EventID == first.EventID {
			t.Errorf("txnId of another device returned the first device's event")
		}

		send := func(c *mautrix.Client, roomID string, body []byte) error {
			url := c.BuildClientURL("v3", "rooms", roomID, "send", "m.room.message", fmt.Sprintf("t%d", streamHead(t, srv)))
			_, err := c.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodPut, URL: url, RequestBytes: body, MaxAttempts: 1})
			return err
		}
		for _, tc := range []struct {
			name   string
			client *mautrix.Client
			room   string
			body   string
			want   string
		}{
			{"not JSON", alice, string(room.RoomID), `{"body":`, "M_NOT_JSON"},
			{"array content", alice, string(room.RoomID), `[1,2]`, "M_BAD_JSON"},
			{"too large", alice, string(room.RoomID), `{"body":"` + strings.Repeat("x", 70000) + `"}`, "M_TOO_LARGE"},
			{"invalid room ID", alice, "lobby", `{}`, "M_INVALID_PARAM"},
			{"unknown room", alice, "!unknown:hs1.test", `{}`, "M_NOT_FOUND"},
			{"not in room", carol, string(room.RoomID), `{"body":"hi"}`, "M_FORBIDDEN"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := streamHead(t, srv)
				err := send(tc.client, tc.room, []byte(tc.body))
				if got := hstest.ErrCode(err); got != tc.want {
					t.Fatalf("errcode %q (%v), want %q", got, err, tc.want)
				}
				if after := streamHead(t, srv); after != before {
					t.Errorf("rejected send moved the stream %d → %d", before, after)
				}
			})
		}
	})
}

func TestRedactThroughAPI(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		bobs, err := bob.SendText(ctx, room.RoomID, "Befund anbei")
		if err != nil {
			t.Fatal(err)
		}
		alices, err := alice.SendText(ctx, room.RoomID, "Danke")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.RedactEvent(ctx, room.RoomID, alices.EventID); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("bob redacts alice's event: %v, want M_FORBIDDEN", err)
		}
		red, err := bob.RedactEvent(ctx, room.RoomID, bobs.EventID, mautrix.ReqRedact{Reason: "falsche Datei", TxnID: "r1"})
		if err != nil {
			t.Fatalf("bob redacts his own event: %v", err)
		}
		again, err := bob.RedactEvent(ctx, room.RoomID, bobs.EventID, mautrix.ReqRedact{Reason: "falsche Datei", TxnID: "r1"})
		if err != nil || again.EventID != red.EventID {
			t.Errorf("repeated redact txn: %v %v, want %s", again, err, red.EventID)
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, alices.EventID); err != nil {
			t.Errorf("room admin redacts: %v", err)
		}
		var js, by string
		srv.DB.QueryRow(ctx, `SELECT json, redacted_by FROM events WHERE event_id = $1`, string(bobs.EventID)).Scan(&js, &by)
		if by != string(red.EventID) || gjson.Get(js, "content.body").Exists() {
			t.Errorf("stored event after redaction: redacted_by=%q json=%s", by, js)
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, "$nope"); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("redact unknown event: %v, want M_NOT_FOUND", err)
		}
	})
}

func TestKnock(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, carol := srv.Register(t, "alice"), srv.Register(t, "carol")
		knockable, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10",
			InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := carol.KnockRoom(ctx, string(knockable.RoomID), &mautrix.ReqKnockRoom{Reason: "Termin?"}); err != nil {
			t.Fatalf("knock: %v", err)
		}
		if got := membership(t, srv, knockable.RoomID, carol.UserID); got != "knock" {
			t.Errorf("carol is %q after knocking, want knock", got)
		}
		closed, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := carol.KnockRoom(ctx, string(closed.RoomID), nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("knock on an invite-only room: %v, want M_FORBIDDEN", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestV12RoomThroughAPI(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(room.RoomID), ":") {
			t.Errorf("v12 room ID %s has a server part", room.RoomID)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("join v12 room: %v", err)
		}
		msg, err := bob.SendText(ctx, room.RoomID, "hallo")
		if err != nil {
			t.Fatalf("send into v12 room: %v", err)
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, msg.EventID); err != nil {
			t.Errorf("creator redacts in v12 room: %v", err)
		}
		_, err = alice.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", map[string]any{"users": map[string]int{string(alice.UserID): 100}})
		if hstest.ErrCode(err) != "M_BAD_JSON" {
			t.Errorf("power levels naming the v12 creator: %v, want M_BAD_JSON", err)
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", map[string]any{"users": map[string]int{string(bob.UserID): 50}}); err != nil {
			t.Errorf("creator sets power levels: %v", err)
		}
	})
}

// TestChatEndToEnd drives the write path the way an app does and checks
// that /sync, /messages and /event see what was written.
func TestChatEndToEnd(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		bobSync, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("bob's initial sync: %v", err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Praxis Dr. A", Invite: []id.UserID{bob.UserID}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		bobSync, err = bob.SyncRequest(ctx, 5000, bobSync.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("bob's sync: %v", err)
		}
		inv, ok := bobSync.Rooms.Invite[room.RoomID]
		if !ok {
			t.Fatalf("bob's sync has no invite for %s: %+v", room.RoomID, bobSync.Rooms)
		}
		var sawName bool
		for _, e := range inv.State.Events {
			if e.Type == event.StateRoomName {
				sawName = true
			}
		}
		if !sawName {
			t.Errorf("invite_state lacks the room name")
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		sent, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Ihr Termin"}, mautrix.ReqSendEvent{TransactionID: "e2e-1"})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for tries := 0; tries < 5 && !found; tries++ {
			bobSync, err = bob.SyncRequest(ctx, 5000, bobSync.NextBatch, "", false, event.PresenceOnline)
			if err != nil {
				t.Fatalf("bob's sync: %v", err)
			}
			if jr, ok := bobSync.Rooms.Join[room.RoomID]; ok {
				for _, e := range jr.Timeline.Events {
					if e.ID == sent.EventID {
						found = true
					}
				}
			}
		}
		if !found {
			t.Fatalf("alice's message %s never reached bob's sync", sent.EventID)
		}
		ev, err := bob.GetEvent(ctx, room.RoomID, sent.EventID)
		if err != nil {
			t.Fatalf("get event: %v", err)
		}
		if ev.Content.Raw["body"] != "Ihr Termin" {
			t.Errorf("event body = %v", ev.Content.Raw["body"])
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, sent.EventID); err != nil {
			t.Fatal(err)
		}
		ev, err = bob.GetEvent(ctx, room.RoomID, sent.EventID)
		if err != nil {
			t.Fatalf("get redacted event: %v", err)
		}
		if _, has := ev.Content.Raw["body"]; has {
			t.Errorf("redacted event still has a body: %v", ev.Content.Raw)
		}
		msgs, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		types := map[event.Type]int{}
		for _, e := range msgs.Chunk {
			types[e.Type]++
		}
		if types[event.EventMessage] != 1 || types[event.EventRedaction] != 1 || types[event.StateMember] < 2 {
			t.Errorf("/messages event types = %v", types)
		}
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendText(ctx, room.RoomID, "nach dem Verlassen"); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("send after leaving: %v, want M_FORBIDDEN", err)
		}
	})
}

func TestConcurrentSendsIntoOneRoom(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		const senders, each = 6, 10
		clients := []*mautrix.Client{alice}
		for i := 1; i < senders; i++ {
			c := srv.Register(t, fmt.Sprintf("user%d", i))
			if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		start := streamHead(t, srv)
		var mu sync.Mutex
		ids := map[id.EventID]bool{}
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					resp, err := c.SendText(ctx, room.RoomID, fmt.Sprintf("nachricht %d", i))
					if err != nil {
						t.Errorf("%s send %d: %v", c.UserID, i, err)
						return
					}
					mu.Lock()
					ids[resp.EventID] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(ids) != senders*each {
			t.Fatalf("%d distinct event IDs, want %d", len(ids), senders*each)
		}
		rows, err := srv.DB.Query(ctx, `SELECT stream_pos FROM events WHERE stream_pos > $1 ORDER BY stream_pos`, start)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		want := start
		for rows.Next() {
			var pos int64
			rows.Scan(&pos)
			want++
			if pos != want {
				t.Fatalf("stream position %d where %d was expected: a gap or a duplicate", pos, want)
			}
		}
		if got := want - start; got != senders*each {
			t.Errorf("%d events after the sends, want %d", got, senders*each)
		}
	})
}

func TestUpgradeRoom(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		for _, to := range []string{"11", "12"} {
			t.Run("to v"+to, func(t *testing.T) {
				old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10", Name: "Labor",
					RoomAliasName: "labor" + to, Visibility: "public"})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := bob.JoinRoomByID(ctx, old.RoomID); err != nil {
					t.Fatal(err)
				}
				url := alice.BuildClientURL("v3", "rooms", old.RoomID, "upgrade")
				var resp struct {
					ReplacementRoom id.RoomID `json:"replacement_room"`
				}
				if _, err := bob.MakeRequest(ctx, http.MethodPost, url, map[string]string{"new_version": to}, &resp); hstest.ErrCode(err) != "M_FORBIDDEN" {
					t.Fatalf("bob upgrades: %v, want M_FORBIDDEN", err)
				}
				if _, err := alice.MakeRequest(ctx, http.MethodPost, url, map[string]string{"new_version": "99"}, &resp); hstest.ErrCode(err) != "M_UNSUPPORTED_ROOM_VERSION" {
					t.Fatalf("upgrade to v99: %v, want M_UNSUPPORTED_ROOM_VERSION", err)
				}
				if _, err := alice.MakeRequest(ctx, http.MethodPost, url, map[string]string{"new_version": to}, &resp); err != nil {
					t.Fatalf("alice upgrades: %v", err)
				}
				nr := resp.ReplacementRoom
				if got := currentState(t, srv, old.RoomID, "m.room.tombstone", "").Get("replacement_room").String(); got != string(nr) {
					t.Errorf("tombstone points to %q, want %s", got, nr)
				}
				create := currentState(t, srv, nr, "m.room.create", "")
				if create.Get("room_version").String() != to || create.Get("predecessor.room_id").String() != string(old.RoomID) {
					t.Errorf("new create content = %s", create.Raw)
				}
				if got := currentState(t, srv, nr, "m.room.name", "").Get("name").String(); got != "Labor" {
					t.Errorf("name not carried over: %q", got)
				}
				if got := currentState(t, srv, nr, "m.room.join_rules", "").Get("join_rule").String(); got != "public" {
					t.Errorf("join rule not carried over: %q", got)
				}
				if got := currentState(t, srv, old.RoomID, "m.room.power_levels", "").Get("events_default").Int(); got < 50 {
					t.Errorf("old room events_default = %d, want ≥ 50", got)
				}
				joined, err := bob.JoinRoom(ctx, "#labor"+to+":hs1.test", nil)
				if err != nil {
					t.Fatalf("join by the moved alias: %v", err)
				}
				if joined.RoomID != nr {
					t.Errorf("alias leads to %s, want the replacement %s", joined.RoomID, nr)
				}
				if _, err := bob.SendText(ctx, old.RoomID, "noch da?"); hstest.ErrCode(err) != "M_FORBIDDEN" {
					t.Errorf("bob talks in the tombstoned room: %v, want M_FORBIDDEN", err)
				}
				if _, err := alice.SendText(ctx, nr, "weiter hier"); err != nil {
					t.Errorf("alice talks in the replacement: %v", err)
				}
			})
		}
	})
}

func TestProfileChangeReachesRooms(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SetDisplayName(ctx, "Dr. Alice"); err != nil {
			t.Fatalf("set display name: %v", err)
		}
		member := currentState(t, srv, room.RoomID, "m.room.member", string(alice.UserID))
		if member.Get("displayname").String() != "Dr. Alice" || member.Get("membership").String() != "join" {
			t.Errorf("member event after the name change: %s", member.Raw)
		}
		bob := srv.Register(t, "bob")
		if err := bob.SetDisplayName(ctx, "Bob B."); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if got := currentState(t, srv, room.RoomID, "m.room.member", string(bob.UserID)).Get("displayname").String(); got != "Bob B." {
			t.Errorf("invite carries displayname %q, want the invitee's", got)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if got := currentState(t, srv, room.RoomID, "m.room.member", string(bob.UserID)).Get("displayname").String(); got != "Bob B." {
			t.Errorf("join carries displayname %q, want Bob B.", got)
		}
	})
}

func TestCreateRoomInvitesRemoteUsers(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")

	before := streamHead(t, hs1)
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{"@eve:stranger.test"}}); hstest.ErrCode(err) != "M_FORBIDDEN" {
		t.Fatalf("invite on a non-partner server: %v, want M_FORBIDDEN", err)
	}
	if after := streamHead(t, hs1); after != before {
		t.Errorf("a refused createRoom wrote events (stream %d → %d)", before, after)
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom with a remote invitee: %v", err)
	}
	room := created.RoomID
	if got := membership(t, hs1, room, bob.UserID); got != "invite" {
		t.Fatalf("bob is %q on hs1, want invite", got)
	}
	if !currentState(t, hs1, room, "m.room.member", string(bob.UserID)).Get("is_direct").Bool() {
		t.Errorf("remote invite lacks is_direct")
	}
	var invited bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !invited; time.Sleep(50 * time.Millisecond) {
		resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err == nil {
			_, invited = resp.Rooms.Invite[room]
		}
	}
	if !invited {
		t.Fatalf("bob's server never showed the invite")
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("bob joins over federation: %v", err)
	}
	if got := membership(t, hs1, room, bob.UserID); got != "join" {
		t.Errorf("bob is %q on hs1 after joining, want join", got)
	}
}
