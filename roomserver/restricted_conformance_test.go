package roomserver

import (
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
)

func TestAllowedRooms(t *testing.T) {
	v8 := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV8)
	v7 := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV7)
	for _, tc := range []struct {
		name       string
		version    gomatrixserverlib.IRoomVersion
		content    string
		want       []string
		restricted bool
	}{
		{"public room", v8, `{"join_rule":"public"}`, nil, false},
		{"restricted", v8, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:hs1"}]}`, []string{"!a:hs1"}, true},
		{"knock_restricted", v8, `{"join_rule":"knock_restricted","allow":[{"type":"m.room_membership","room_id":"!a:hs1"}]}`, []string{"!a:hs1"}, true},
		{"restricted before v8 is not", v7, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:hs1"}]}`, nil, false},
		{"invalid entries ignored", v8, `{"join_rule":"restricted","allow":["invalid",{"type":"m.other","room_id":"!b:hs1"},{"type":"m.room_membership"},{"type":"m.room_membership","room_id":5},{"type":"m.room_membership","room_id":"!a:hs1"}]}`, []string{"!a:hs1"}, true},
		{"only invalid entries", v8, `{"join_rule":"restricted","allow":["invalid"]}`, nil, true},
		{"allow not a list", v8, `{"join_rule":"restricted","allow":"invalid"}`, nil, true},
		{"no allow", v8, `{"join_rule":"restricted"}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := allowedRooms(tc.version, []byte(tc.content))
			if ok != tc.restricted || !slices.Equal(got, tc.want) {
				t.Errorf("allowedRooms(%s) = %q, %v; want %q, %v", tc.content, got, ok, tc.want, tc.restricted)
			}
		})
	}
}

func TestStripAuthoriser(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"membership":"join","join_authorised_via_users_server":"unused"}`, `{"membership":"join"}`},
		{`{"membership":"join","displayname":"Bobby","join_authorised_via_users_server":"@alice:hs1"}`, `{"membership":"join","displayname":"Bobby"}`},
		{`{"membership":"leave"}`, `{"membership":"leave"}`},
	} {
		got := stripAuthoriser([]byte(tc.in))
		if gjson.GetBytes(got, "join_authorised_via_users_server").Exists() || string(canonical(got)) != string(canonical([]byte(tc.want))) {
			t.Errorf("stripAuthoriser(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
