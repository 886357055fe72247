package clientapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"praxis/internal/config"
	"praxis/internal/hstest"
)

func TestProfile(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := t.Context()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")

		want(t, "display name never set", call(t, srv, "GET", v3+"/profile/@alice:hs1.test/displayname", "", nil), 404, "M_NOT_FOUND")
		if err := alice.SetDisplayName(ctx, "Dr. Alice"); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAvatarURL(ctx, id.MustParseContentURI("mxc://hs1.test/abc")); err != nil {
			t.Fatal(err)
		}
		// Anyone, even without a token, reads a profile.
		p := call(t, srv, "GET", v3+"/profile/@alice:hs1.test", "", nil)
		if p.Status != 200 || p.str("displayname") != "Dr. Alice" || p.str("avatar_url") != "mxc://hs1.test/abc" {
			t.Errorf("profile: %d %v", p.Status, p.Body)
		}
		dn, err := bob.GetDisplayName(ctx, alice.UserID)
		if err != nil || dn.DisplayName != "Dr. Alice" {
			t.Errorf("bob reads alice's name: %+v %v", dn, err)
		}
		av, err := bob.GetAvatarURL(ctx, alice.UserID)
		if err != nil || av.String() != "mxc://hs1.test/abc" {
			t.Errorf("bob reads alice's avatar: %v %v", av, err)
		}

		for _, tc := range []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"other user's name", "PUT", "/profile/@alice:hs1.test/displayname", bob.AccessToken, map[string]any{"displayname": "x"}, 403, "M_FORBIDDEN"},
			{"other user's avatar", "PUT", "/profile/@alice:hs1.test/avatar_url", bob.AccessToken, map[string]any{"avatar_url": "mxc://a/b"}, 403, "M_FORBIDDEN"},
			{"no token", "PUT", "/profile/@alice:hs1.test/displayname", "", map[string]any{"displayname": "x"}, 401, "M_MISSING_TOKEN"},
			{"unknown user", "GET", "/profile/@nobody:hs1.test", "", nil, 404, "M_NOT_FOUND"},
			{"unknown user's name", "GET", "/profile/@nobody:hs1.test/displayname", "", nil, 404, "M_NOT_FOUND"},
			{"invalid user ID", "GET", "/profile/alice", "", nil, 400, "M_INVALID_PARAM"},
			{"missing field", "PUT", "/profile/@alice:hs1.test/displayname", alice.AccessToken, map[string]any{}, 400, "M_MISSING_PARAM"},
			{"wrong type", "PUT", "/profile/@alice:hs1.test/displayname", alice.AccessToken, map[string]any{"displayname": 5}, 400, "M_BAD_JSON"},
			{"not JSON", "PUT", "/profile/@alice:hs1.test/displayname", alice.AccessToken, "{", 400, "M_NOT_JSON"},
			{"avatar not mxc", "PUT", "/profile/@alice:hs1.test/avatar_url", alice.AccessToken, map[string]any{"avatar_url": "https://evil/x.png"}, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want(t, tc.name, call(t, srv, tc.method, v3+tc.path, tc.token, tc.body), tc.status, tc.errcode)
			})
		}
		// Rejected writes changed nothing; null clears.
		if got := call(t, srv, "GET", v3+"/profile/@alice:hs1.test/displayname", "", nil); got.str("displayname") != "Dr. Alice" {
			t.Errorf("name after rejected writes: %v", got.Body)
		}
		if got := call(t, srv, "PUT", v3+"/profile/@alice:hs1.test/displayname", alice.AccessToken, `{"displayname": null}`); got.Status != 200 {
			t.Fatalf("clear name: %d %v", got.Status, got.Body)
		}
		want(t, "cleared name", call(t, srv, "GET", v3+"/profile/@alice:hs1.test/displayname", "", nil), 404, "M_NOT_FOUND")
	})
}

func TestProfileReachesRooms(t *testing.T) {
	srv := hstest.New(t)
	ctx := t.Context()
	alice := srv.Register(t, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Skipf("createRoom not available yet: %v", err)
	}
	if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	var member event.MemberEventContent
	if err := alice.StateEvent(ctx, room.RoomID, event.StateMember, string(alice.UserID), &member); err != nil {
		t.Fatal(err)
	}
	if member.Displayname != "Alice A." {
		t.Errorf("member event displayname = %q, want the new name", member.Displayname)
	}
}

func TestPresence(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Presence.Enabled = enabled }))
		ctx := t.Context()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "at lunch"}); err != nil {
			t.Fatalf("presence enabled=%v: set: %v", enabled, err)
		}
		own, err := alice.GetOwnPresence(ctx)
		if err != nil || own.Presence != event.PresenceUnavailable || own.StatusMsg != "at lunch" {
			t.Errorf("presence enabled=%v: own presence %+v %v", enabled, own, err)
		}
		seen, err := bob.GetPresence(ctx, alice.UserID)
		wantPresence := event.PresenceOffline
		if enabled {
			wantPresence = event.PresenceUnavailable
		}
		if err != nil || seen.Presence != wantPresence {
			t.Errorf("presence enabled=%v: bob sees %+v %v, want %s", enabled, seen, err, wantPresence)
		}
		want(t, "set another user's presence", call(t, srv, "PUT", v3+"/presence/@alice:hs1.test/status", bob.AccessToken, map[string]any{"presence": "online"}), 403, "M_FORBIDDEN")
		want(t, "invalid presence", call(t, srv, "PUT", v3+"/presence/@bob:hs1.test/status", bob.AccessToken, map[string]any{"presence": "busy"}), 400, "M_INVALID_PARAM")
		want(t, "unknown user", call(t, srv, "GET", v3+"/presence/@nobody:hs1.test/status", bob.AccessToken, nil), 404, "M_NOT_FOUND")
	}
}

func TestCapabilities(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	caps, err := alice.Capabilities(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if caps.ChangePassword == nil || !caps.ChangePassword.Enabled || caps.SetDisplayname == nil || !caps.SetDisplayname.Enabled ||
		caps.SetAvatarURL == nil || !caps.SetAvatarURL.Enabled || caps.ThreePIDChanges == nil || caps.ThreePIDChanges.Enabled {
		t.Errorf("capabilities: %+v", caps)
	}
	rv := caps.RoomVersions
	if rv == nil || rv.Default != "10" || len(rv.Available) != 12 || rv.Available["12"] != "stable" || rv.Available["1"] != "stable" {
		t.Errorf("room versions: %+v", rv)
	}
	want(t, "capabilities without token", call(t, srv, "GET", v3+"/capabilities", "", nil), 401, "M_MISSING_TOKEN")
}

func TestAccountData(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := t.Context()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		if err := alice.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := alice.GetAccountData(ctx, "org.example.settings", &got); err != nil || got["theme"] != "dark" {
			t.Errorf("global account data: %v %v", got, err)
		}
		const room = id.RoomID("!room:hs1.test")
		if err := alice.SetRoomAccountData(ctx, room, "org.example.room", map[string]any{"n": 1}); err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := alice.GetRoomAccountData(ctx, room, "org.example.room", &got); err != nil || got["n"] != float64(1) {
			t.Errorf("room account data: %v %v", got, err)
		}
		if err := alice.GetRoomAccountData(ctx, room, "org.example.settings", &got); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("global type read per room: %v", err)
		}
		// m.push_rules is readable as account data.
		var rules map[string]json.RawMessage
		if err := alice.GetAccountData(ctx, "m.push_rules", &rules); err != nil || rules["global"] == nil {
			t.Errorf("m.push_rules account data: %v %v", rules, err)
		}

		a := alice.AccessToken
		for _, tc := range []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"other user's data", "GET", "/user/@alice:hs1.test/account_data/org.example.settings", bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"write other user's data", "PUT", "/user/@alice:hs1.test/account_data/x", bob.AccessToken, map[string]any{}, 403, "M_FORBIDDEN"},
			{"missing type", "GET", "/user/@alice:hs1.test/account_data/org.example.none", a, nil, 404, "M_NOT_FOUND"},
			{"fully read", "PUT", "/user/@alice:hs1.test/rooms/!room:hs1.test/account_data/m.fully_read", a, map[string]any{"event_id": "$x"}, 405, "M_BAD_JSON"},
			{"push rules", "PUT", "/user/@alice:hs1.test/account_data/m.push_rules", a, map[string]any{}, 405, "M_BAD_JSON"},
			{"not JSON", "PUT", "/user/@alice:hs1.test/account_data/x", a, "{nope", 400, "M_NOT_JSON"},
			{"not an object", "PUT", "/user/@alice:hs1.test/account_data/x", a, "[1,2]", 400, "M_BAD_JSON"},
			{"bad room ID", "PUT", "/user/@alice:hs1.test/rooms/room/account_data/x", a, map[string]any{}, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want(t, tc.name, call(t, srv, tc.method, v3+tc.path, tc.token, tc.body), tc.status, tc.errcode)
			})
		}

		// Room version 12 IDs carry no server name.
		if err := alice.SetRoomAccountData(ctx, "!AbCdEf0123456789abcdef0123456789abcdef01234", "org.example.room", map[string]any{}); err != nil {
			t.Errorf("account data in a v12 room: %v", err)
		}
		// Tags are the m.tag room account data.
		if err := alice.AddTag(ctx, room, event.RoomTagFavourite, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddTagWithCustomData(ctx, room, "u.work", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		tags, err := alice.GetTags(ctx, room)
		if err != nil || len(tags.Tags) != 2 || !orderIs(tags.Tags[event.RoomTagFavourite].Order, 0.25) {
			t.Fatalf("tags: %+v %v", tags, err)
		}
		if err := alice.RemoveTag(ctx, room, event.RoomTagFavourite); err != nil {
			t.Fatal(err)
		}
		if err := alice.RemoveTag(ctx, room, "u.never"); err != nil {
			t.Errorf("removing an unset tag: %v", err)
		}
		var tagData event.TagEventContent
		err = alice.GetRoomAccountData(ctx, room, "m.tag", &tagData)
		if _, ok := tagData.Tags["u.work"]; err != nil || !ok || len(tagData.Tags) != 1 {
			t.Errorf("m.tag account data: %+v %v, want only u.work", tagData, err)
		}
		want(t, "tag order of the wrong type", call(t, srv, "PUT", v3+"/user/@alice:hs1.test/rooms/!room:hs1.test/tags/u.x", a, map[string]any{"order": "first"}), 400, "M_BAD_JSON")
		want(t, "other user's tags", call(t, srv, "GET", v3+"/user/@alice:hs1.test/rooms/!room:hs1.test/tags", bob.AccessToken, nil), 403, "M_FORBIDDEN")

		// Account data writes are on the stream.
		entries, err := srv.Users.AccountDataSince(ctx, string(alice.UserID), 0)
		if err != nil || len(entries) != 5 {
			t.Errorf("account data stream: %d entries (%v), want push rules + 4", len(entries), err)
		}
	})
}

func TestFilters(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := t.Context()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		resp, err := alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 7}}})
		if err != nil || resp.FilterID == "" {
			t.Fatalf("create filter: %+v %v", resp, err)
		}
		got := call(t, srv, "GET", v3+"/user/@alice:hs1.test/filter/"+resp.FilterID, alice.AccessToken, nil)
		room, _ := got.Body["room"].(map[string]any)
		timeline, _ := room["timeline"].(map[string]any)
		if got.Status != 200 || timeline["limit"] != float64(7) {
			t.Errorf("get filter: %d %v", got.Status, got.Body)
		}
		f, err := srv.Users.Filter(ctx, "@alice:hs1.test", resp.FilterID)
		if err != nil || len(f) == 0 {
			t.Errorf("Filter for sync: %s %v", f, err)
		}
		a := alice.AccessToken
		for _, tc := range []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"other user's filter", "GET", "/user/@alice:hs1.test/filter/" + resp.FilterID, bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"bob's own namespace", "GET", "/user/@bob:hs1.test/filter/" + resp.FilterID, bob.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"unknown filter", "GET", "/user/@alice:hs1.test/filter/9999", a, nil, 404, "M_NOT_FOUND"},
			{"create for another user", "POST", "/user/@bob:hs1.test/filter", a, map[string]any{}, 403, "M_FORBIDDEN"},
			{"not JSON", "POST", "/user/@alice:hs1.test/filter", a, "{", 400, "M_NOT_JSON"},
			{"wrong shape", "POST", "/user/@alice:hs1.test/filter", a, `{"room": {"timeline": {"limit": "ten"}}}`, 400, "M_BAD_JSON"},
			{"bad event_format", "POST", "/user/@alice:hs1.test/filter", a, `{"event_format": "xml"}`, 400, "M_INVALID_PARAM"},
			{"negative limit", "POST", "/user/@alice:hs1.test/filter", a, `{"presence": {"limit": -1}}`, 400, "M_INVALID_PARAM"},
			// Complement TestFilter: IDs in rooms/senders lists must be IDs.
			{"timeline room not a room ID", "POST", "/user/@alice:hs1.test/filter", a, `{"room": {"timeline": {"rooms": ["not_a_room_id"]}}}`, 400, "M_INVALID_PARAM"},
			{"top-level not_rooms not a room ID", "POST", "/user/@alice:hs1.test/filter", a, `{"room": {"not_rooms": ["x"]}}`, 400, "M_INVALID_PARAM"},
			{"timeline sender not a user ID", "POST", "/user/@alice:hs1.test/filter", a, `{"room": {"timeline": {"senders": ["not_a_sender_id"]}}}`, 400, "M_INVALID_PARAM"},
			{"presence not_senders not a user ID", "POST", "/user/@alice:hs1.test/filter", a, `{"presence": {"not_senders": ["@nocolon"]}}`, 400, "M_INVALID_PARAM"},
			{"valid rooms and senders", "POST", "/user/@alice:hs1.test/filter", a, `{"room": {"rooms": ["!a:hs1.test", "!v12roomhash"], "timeline": {"senders": ["@bob:hs1.test"], "not_rooms": ["!b:hs1.test"]}}}`, 200, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want(t, tc.name, call(t, srv, tc.method, v3+tc.path, tc.token, tc.body), tc.status, tc.errcode)
			})
		}
	})
}

func TestPushRules(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := t.Context()
		alice := srv.Register(t, "alice")
		rs, err := alice.GetPushRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs.Override) != 12 || rs.Override[0].RuleID != ".m.rule.master" || len(rs.Underride) != 5 || len(rs.Content) != 1 {
			t.Fatalf("default rules: %d override, %d underride, %d content", len(rs.Override), len(rs.Underride), len(rs.Content))
		}
		if rs.Content[0].Pattern != "alice" {
			t.Errorf("contains_user_name pattern = %q", rs.Content[0].Pattern)
		}
		top := call(t, srv, "GET", v3+"/pushrules/", alice.AccessToken, nil)
		if top.Status != 200 || top.Body["global"] == nil {
			t.Errorf("GET /pushrules/: %d %v", top.Status, top.Body)
		}

		req := &mautrix.ReqPutPushRule{
			Actions:    []*pushrules.PushAction{{Action: pushrules.ActionNotify}},
			Conditions: []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "content.body", Pattern: "urgent"}},
		}
		if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "urgent", req); err != nil {
			t.Fatal(err)
		}
		req.After = "urgent"
		if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "later", req); err != nil {
			t.Fatal(err)
		}
		rs, _ = alice.GetPushRules(ctx)
		var ids []string
		for _, r := range rs.Override[:4] {
			ids = append(ids, r.RuleID)
		}
		if ids[0] != ".m.rule.master" || ids[1] != "urgent" || ids[2] != "later" || ids[3] != ".m.rule.suppress_notices" {
			t.Errorf("override order: %v", ids)
		}
		rule, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "urgent")
		if err != nil || rule.Default || !rule.Enabled || len(rule.Conditions) != 1 {
			t.Errorf("own rule: %+v %v", rule, err)
		}
		if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		en := call(t, srv, "GET", v3+"/pushrules/global/override/.m.rule.master/enabled", alice.AccessToken, nil)
		if en.Body["enabled"] != true {
			t.Errorf("master enabled: %v", en.Body)
		}
		if err := alice.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", []*pushrules.PushAction{}); err != nil {
			t.Fatal(err)
		}
		act := call(t, srv, "GET", v3+"/pushrules/global/underride/.m.rule.message/actions", alice.AccessToken, nil)
		if acts, ok := act.Body["actions"].([]any); !ok || len(acts) != 0 {
			t.Errorf("changed default actions: %v", act.Body)
		}
		if err := alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "later"); err != nil {
			t.Fatal(err)
		}
		_, err = alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "later")
		if hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("deleted rule: %v", err)
		}
		// The changes reach other devices through account data.
		var doc struct {
			Global pushrules.PushRuleset `json:"global"`
		}
		if err := alice.GetAccountData(ctx, "m.push_rules", &doc); err != nil || len(doc.Global.Override) != 13 || !doc.Global.Override[0].Enabled {
			t.Errorf("m.push_rules after changes: %d rules, %v", len(doc.Global.Override), err)
		}

		a := alice.AccessToken
		for _, tc := range []struct {
			name, method, path string
			body               any
			status             int
			errcode            string
		}{
			{"unknown rule", "GET", "/pushrules/global/override/nope", nil, 404, "M_NOT_FOUND"},
			// Complement thread tests probe MSC4306's postcontent rules.
			{"unknown kind", "GET", "/pushrules/global/postcontent/x", nil, 404, "M_NOT_FOUND"},
			{"enable rule of unknown kind", "PUT", "/pushrules/global/postcontent/x/enabled", map[string]any{"enabled": false}, 404, "M_NOT_FOUND"},
			{"actions of unknown kind", "GET", "/pushrules/global/postcontent/x/actions", nil, 404, "M_NOT_FOUND"},
			{"delete rule of unknown kind", "DELETE", "/pushrules/global/middle/x", nil, 404, "M_NOT_FOUND"},
			{"create rule of unknown kind", "PUT", "/pushrules/global/middle/x", map[string]any{"actions": []any{"notify"}}, 400, "M_INVALID_PARAM"},
			{"unknown scope", "GET", "/pushrules/device/override/x", nil, 400, "M_INVALID_PARAM"},
			{"delete default", "DELETE", "/pushrules/global/override/.m.rule.master", nil, 400, "M_INVALID_PARAM"},
			{"put default", "PUT", "/pushrules/global/override/.m.rule.master", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"dot rule ID", "PUT", "/pushrules/global/override/.mine", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"no actions", "PUT", "/pushrules/global/override/x", map[string]any{"conditions": []any{}}, 400, "M_MISSING_PARAM"},
			{"bad action", "PUT", "/pushrules/global/override/x", map[string]any{"actions": []any{"explode"}}, 400, "M_INVALID_PARAM"},
			{"content without pattern", "PUT", "/pushrules/global/content/x", map[string]any{"actions": []any{"notify"}}, 400, "M_MISSING_PARAM"},
			{"room rule not a room", "PUT", "/pushrules/global/room/x", map[string]any{"actions": []any{"notify"}}, 400, "M_INVALID_PARAM"},
			{"before missing rule", "PUT", "/pushrules/global/override/x?before=ghost", map[string]any{"actions": []any{"notify"}}, 400, "M_UNKNOWN"},
			{"before default rule", "PUT", "/pushrules/global/override/x?before=.m.rule.master", map[string]any{"actions": []any{"notify"}}, 400, "M_UNKNOWN"},
			{"enabled missing", "PUT", "/pushrules/global/override/urgent/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"enabled of unknown rule", "PUT", "/pushrules/global/override/nope/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
			{"not JSON", "PUT", "/pushrules/global/override/x", "{", 400, "M_NOT_JSON"},
			{"conditions not a list", "PUT", "/pushrules/global/override/x", map[string]any{"actions": []any{}, "conditions": "all"}, 400, "M_BAD_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want(t, tc.name, call(t, srv, tc.method, v3+tc.path, a, tc.body), tc.status, tc.errcode)
			})
		}
		// Rejected requests wrote nothing.
		if _, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "x"); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("a rejected rule was stored: %v", err)
		}
		// Room and sender rules are named by their room and user.
		if err := alice.PutPushRule(ctx, "global", pushrules.RoomRule, "!quiet:hs1.test", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
			t.Errorf("room rule: %v", err)
		}
		if err := alice.PutPushRule(ctx, "global", pushrules.SenderRule, "@bob:hs1.test", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{{Action: pushrules.ActionNotify}}}); err != nil {
			t.Errorf("sender rule: %v", err)
		}
		rs, _ = alice.GetPushRules(ctx)
		if len(rs.Room.Map) != 1 || len(rs.Sender.Map) != 1 {
			t.Errorf("room/sender rules: %+v %+v", rs.Room, rs.Sender)
		}
	})
}

func TestPushers(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := t.Context()
		alice := srv.Register(t, "alice")
		list, err := alice.GetPushers(ctx)
		if err != nil || len(list.Pushers) != 0 {
			t.Fatalf("no pushers: %+v %v", list, err)
		}
		httpKind := mautrix.PusherKindHTTP
		p := &mautrix.Pusher{
			PushKey: "key-1", Kind: &httpKind, AppID: "de.praxis.app", AppDisplayName: "Praxis", DeviceDisplayName: "Phone", Language: "de",
			Data: mautrix.PusherData{"url": "https://push.example/_matrix/push/v1/notify", "format": "event_id_only"},
		}
		if err := alice.SetPusher(ctx, p); err != nil {
			t.Fatal(err)
		}
		list, err = alice.GetPushers(ctx)
		if err != nil || len(list.Pushers) != 1 || list.Pushers[0].PushKey != "key-1" || list.Pushers[0].Data.Format() != "event_id_only" {
			t.Fatalf("pushers: %+v %v", list, err)
		}
		a := alice.AccessToken
		want(t, "no pushkey", call(t, srv, "POST", v3+"/pushers/set", a, map[string]any{"app_id": "x", "kind": "http"}), 400, "M_MISSING_PARAM")
		want(t, "missing data", call(t, srv, "POST", v3+"/pushers/set", a, map[string]any{"app_id": "x", "pushkey": "k", "kind": "http", "app_display_name": "a", "device_display_name": "d", "lang": "en"}), 400, "M_MISSING_PARAM")
		want(t, "bad url", call(t, srv, "POST", v3+"/pushers/set", a, map[string]any{"app_id": "x", "pushkey": "k", "kind": "http", "app_display_name": "a", "device_display_name": "d", "lang": "en", "data": map[string]any{"url": "ftp://x"}}), 400, "M_INVALID_PARAM")
		want(t, "email kind", call(t, srv, "POST", v3+"/pushers/set", a, map[string]any{"app_id": "x", "pushkey": "k", "kind": "email", "app_display_name": "a", "device_display_name": "d", "lang": "en", "data": map[string]any{}}), 400, "M_INVALID_PARAM")
		// kind null deletes.
		if got := call(t, srv, "POST", v3+"/pushers/set", a, map[string]any{"app_id": "de.praxis.app", "pushkey": "key-1", "kind": nil}); got.Status != 200 {
			t.Fatalf("delete pusher: %d %v", got.Status, got.Body)
		}
		list, _ = alice.GetPushers(ctx)
		if len(list.Pushers) != 0 {
			t.Errorf("pushers after delete: %+v", list.Pushers)
		}
	})
}

func orderIs(n json.Number, want float64) bool {
	f, err := n.Float64()
	return err == nil && f == want
}

// TestAccountDataWakesSync: a waiting /sync returns the new account data
// as soon as it is written, not when its timeout ends.
func TestAccountDataWakesSync(t *testing.T) {
	srv := hstest.New(t)
	ctx := t.Context()
	alice := srv.Register(t, "alice")
	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Skipf("sync not available: %v", err)
	}
	type result struct {
		resp *mautrix.RespSync
		err  error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r, err := alice.SyncRequest(ctx, 10_000, first.NextBatch, "", false, event.PresenceOffline)
		done <- result{r, err}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := alice.SetAccountData(ctx, "org.example.wake", map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("sync returned after %v: not woken by the write", waited)
	}
	found := false
	for _, e := range r.resp.AccountData.Events {
		found = found || e.Type.Type == "org.example.wake"
	}
	if !found {
		t.Errorf("incremental sync lacks the new account data: %+v", r.resp.AccountData.Events)
	}
}
