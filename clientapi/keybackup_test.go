package clientapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tidwall/gjson"

	"praxis/internal/hstest"
)

func TestKeyBackupAPI(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		if _, err := keyReq(t, alice, http.MethodGet, []any{"room_keys", "version"}, nil, nil); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Fatalf("no backup yet: %v, want M_NOT_FOUND", err)
		}
		v, err := keyReq(t, alice, http.MethodPost, []any{"room_keys", "version"}, nil, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}})
		if err != nil {
			t.Fatal(err)
		}
		version := v.Get("version").String()
		session := func(first, fwd int, verified bool, ct string) map[string]any {
			return map[string]any{"first_message_index": first, "forwarded_count": fwd, "is_verified": verified, "session_data": map[string]any{"ciphertext": ct}}
		}
		q := map[string]string{"version": version}

		// All three levels of PUT.
		r, err := keyReq(t, alice, http.MethodPut, []any{"room_keys", "keys"}, q, map[string]any{"rooms": map[string]any{"!a:hs1.test": map[string]any{"sessions": map[string]any{"s1": session(5, 0, false, "a1")}}}})
		if err != nil || r.Get("count").Int() != 1 {
			t.Fatalf("put all: %s %v", r.Raw, err)
		}
		etag1 := r.Get("etag").String()
		r, err = keyReq(t, alice, http.MethodPut, []any{"room_keys", "keys", "!a:hs1.test"}, q, map[string]any{"sessions": map[string]any{"s2": session(0, 0, false, "a2")}})
		if err != nil || r.Get("count").Int() != 2 || r.Get("etag").String() == etag1 {
			t.Fatalf("put room: %s %v (etag before %s)", r.Raw, err, etag1)
		}
		etag2 := r.Get("etag").String()
		// A worse copy (higher first_message_index) is ignored: same etag.
		r, err = keyReq(t, alice, http.MethodPut, []any{"room_keys", "keys", "!a:hs1.test", "s1"}, q, session(9, 0, false, "worse"))
		if err != nil || r.Get("etag").String() != etag2 || r.Get("count").Int() != 2 {
			t.Fatalf("worse copy: %s %v", r.Raw, err)
		}
		// A verified copy wins even with a higher index.
		if _, err := keyReq(t, alice, http.MethodPut, []any{"room_keys", "keys", "!a:hs1.test", "s1"}, q, session(7, 0, true, "verified")); err != nil {
			t.Fatal(err)
		}
		s, err := keyReq(t, alice, http.MethodGet, []any{"room_keys", "keys", "!a:hs1.test", "s1"}, q, nil)
		if err != nil || s.Get("session_data.ciphertext").String() != "verified" {
			t.Fatalf("get session: %s %v", s.Raw, err)
		}
		all, _ := keyReq(t, alice, http.MethodGet, []any{"room_keys", "keys"}, q, nil)
		if n := len(all.Get("rooms." + gjson.Escape("!a:hs1.test") + ".sessions").Map()); n != 2 {
			t.Fatalf("get all: %s", all.Raw)
		}
		cur, _ := keyReq(t, alice, http.MethodGet, []any{"room_keys", "version"}, nil, nil)
		if cur.Get("count").Int() != 2 || cur.Get("version").String() != version || cur.Get("algorithm").String() != alg || cur.Get("auth_data.public_key").String() != "abc" {
			t.Fatalf("current version: %s", cur.Raw)
		}

		for _, tc := range []struct {
			name   string
			method string
			path   []any
			query  map[string]string
			body   any
			want   string
		}{
			{"unknown version", http.MethodGet, []any{"room_keys", "version", "99"}, nil, nil, "M_NOT_FOUND"},
			{"keys of unknown version", http.MethodGet, []any{"room_keys", "keys"}, map[string]string{"version": "99"}, nil, "M_NOT_FOUND"},
			{"missing version param", http.MethodGet, []any{"room_keys", "keys"}, nil, nil, "M_MISSING_PARAM"},
			{"unknown session", http.MethodGet, []any{"room_keys", "keys", "!a:hs1.test", "nope"}, q, nil, "M_NOT_FOUND"},
			{"bad session data", http.MethodPut, []any{"room_keys", "keys", "!a:hs1.test", "s3"}, q, map[string]any{"session_data": "x"}, "M_BAD_JSON"},
			{"auth_data not an object", http.MethodPost, []any{"room_keys", "version"}, nil, map[string]any{"algorithm": alg, "auth_data": 1}, "M_BAD_JSON"},
			{"update with other version in body", http.MethodPut, []any{"room_keys", "version", version}, nil, map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": "7"}, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := keyReq(t, alice, tc.method, tc.path, tc.query, tc.body); hstest.ErrCode(err) != tc.want {
					t.Fatalf("got %v, want %s", err, tc.want)
				}
			})
		}

		// A newer version makes uploads to the old one fail with the
		// current version in the error.
		v2, _ := keyReq(t, alice, http.MethodPost, []any{"room_keys", "version"}, nil, map[string]any{"algorithm": alg, "auth_data": map[string]any{}})
		wrong, err := keyReq(t, alice, http.MethodPut, []any{"room_keys", "keys", "!a:hs1.test", "s9"}, q, session(0, 0, false, "x"))
		if hstest.ErrCode(err) != "M_WRONG_ROOM_KEYS_VERSION" || wrong.Get("current_version").String() != v2.Get("version").String() {
			t.Fatalf("stale version: %s %v", wrong.Raw, err)
		}

		// Logging out everywhere and changing the password keep the backup.
		if err := srv.Users.SetPassword(context.Background(), alice.UserID.String(), "new-password"); err != nil {
			t.Fatal(err)
		}
		alice2 := srv.Login(t, "alice")
		if err := srv.Users.DeleteDevices(context.Background(), alice.UserID.String(), []string{alice.DeviceID.String()}); err != nil {
			t.Fatal(err)
		}
		still, err := keyReq(t, alice2, http.MethodGet, []any{"room_keys", "keys"}, q, nil)
		if err != nil || len(still.Get("rooms."+gjson.Escape("!a:hs1.test")+".sessions").Map()) != 2 {
			t.Fatalf("backup after logout and password change: %s %v", still.Raw, err)
		}

		// Deleting keys and versions.
		d, err := keyReq(t, alice2, http.MethodDelete, []any{"room_keys", "keys", "!a:hs1.test", "s2"}, q, nil)
		if err != nil || d.Get("count").Int() != 1 {
			t.Fatalf("delete session: %s %v", d.Raw, err)
		}
		if _, err := keyReq(t, alice2, http.MethodDelete, []any{"room_keys", "version", version}, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := keyReq(t, alice2, http.MethodGet, []any{"room_keys", "version", version}, nil, nil); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Fatalf("deleted version: %v", err)
		}
	})
}
