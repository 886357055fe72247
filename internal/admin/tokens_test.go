package admin_test

import (
	"strings"
	"testing"
	"time"

	"praxis/internal/admin"
	"praxis/internal/hstest"
)

type regToken struct {
	Token       string `json:"token"`
	UsesAllowed *int   `json:"uses_allowed"`
	Pending     int    `json:"pending"`
	Completed   int    `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

func TestRegistrationTokens(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		root := newAdmin(t, srv)
		base := "/_synapse/admin/v1/registration_tokens"

		var tok regToken
		if st, code := call(t, root, "POST", base+"/new", map[string]any{"token": "clinic-2026", "uses_allowed": 3}, &tok); code != "" {
			t.Fatalf("create: %d %s", st, code)
		}
		if tok.Token != "clinic-2026" || tok.UsesAllowed == nil || *tok.UsesAllowed != 3 || tok.ExpiryTime != nil {
			t.Fatalf("created = %+v", tok)
		}
		var gen regToken
		call(t, root, "POST", base, map[string]any{"length": 24}, &gen)
		if len(gen.Token) != 24 {
			t.Errorf("generated token %q, want 24 characters", gen.Token)
		}
		var def regToken
		call(t, root, "POST", base+"/new", map[string]any{}, &def)
		if len(def.Token) != 16 || def.UsesAllowed != nil {
			t.Errorf("default token = %+v, want 16 characters, unlimited", def)
		}

		future := time.Now().Add(time.Hour).UnixMilli()
		for _, tc := range []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"duplicate", "POST", base + "/new", map[string]any{"token": "clinic-2026"}, 400, "M_INVALID_PARAM"},
			{"bad characters", "POST", base + "/new", map[string]any{"token": "a b"}, 400, "M_INVALID_PARAM"},
			{"negative uses", "POST", base + "/new", map[string]any{"uses_allowed": -1}, 400, "M_INVALID_PARAM"},
			{"uses not a number", "POST", base + "/new", map[string]any{"uses_allowed": "3"}, 400, "M_INVALID_PARAM"},
			{"expiry in the past", "POST", base + "/new", map[string]any{"expiry_time": 1000}, 400, "M_INVALID_PARAM"},
			{"length too long", "POST", base + "/new", map[string]any{"length": 65}, 400, "M_INVALID_PARAM"},
			{"get unknown", "GET", base + "/nope", nil, 404, "M_NOT_FOUND"},
			{"update unknown", "PUT", base + "/nope", map[string]any{"uses_allowed": 1}, 404, "M_NOT_FOUND"},
			{"delete unknown", "DELETE", base + "/nope", nil, 404, "M_NOT_FOUND"},
			{"bad valid filter", "GET", base + "?valid=maybe", nil, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if st, code := call(t, root, tc.method, tc.path, tc.body, nil); st != tc.status || code != tc.code {
					t.Errorf("%s %s = %d %s, want %d %s", tc.method, tc.path, st, code, tc.status, tc.code)
				}
			})
		}

		// update: set an expiry, make uses unlimited (null)
		var upd regToken
		if st, code := call(t, root, "PUT", base+"/clinic-2026", map[string]any{"expiry_time": future, "uses_allowed": nil}, &upd); code != "" {
			t.Fatalf("update: %d %s", st, code)
		}
		if upd.UsesAllowed != nil || upd.ExpiryTime == nil || *upd.ExpiryTime != future {
			t.Errorf("updated = %+v", upd)
		}
		// a token with zero uses allowed is invalid
		call(t, root, "PUT", base+"/"+gen.Token, map[string]any{"uses_allowed": 0}, nil)

		var list struct {
			RegistrationTokens []regToken `json:"registration_tokens"`
		}
		call(t, root, "GET", base, nil, &list)
		if len(list.RegistrationTokens) != 3 {
			t.Errorf("list has %d tokens, want 3", len(list.RegistrationTokens))
		}
		call(t, root, "GET", base+"?valid=false", nil, &list)
		if len(list.RegistrationTokens) != 1 || list.RegistrationTokens[0].Token != gen.Token {
			t.Errorf("invalid tokens = %+v, want only %s", list.RegistrationTokens, gen.Token)
		}
		call(t, root, "GET", base+"/clinic-2026", nil, &tok)
		if tok.Token != "clinic-2026" {
			t.Errorf("get = %+v", tok)
		}

		if st, code := call(t, root, "DELETE", base+"/clinic-2026", nil, nil); code != "" {
			t.Fatalf("delete: %d %s", st, code)
		}
		if st, _ := call(t, root, "GET", base+"/clinic-2026", nil, nil); st != 404 {
			t.Errorf("deleted token still readable: %d", st)
		}

		// audited, but the log never holds the token itself
		var page struct {
			Entries []admin.Entry `json:"entries"`
		}
		call(t, root, "GET", "/_praxis/admin/v1/audit", nil, &page)
		var actions []string
		for _, e := range page.Entries {
			if e.Action != "request.failed" {
				actions = append(actions, e.Action)
			}
			for _, secret := range []string{"clinic-2026", gen.Token, def.Token} {
				if strings.Contains(e.Target, secret) || strings.Contains(string(e.Params), secret) {
					t.Errorf("audit row %d leaks a registration token", e.Seq)
				}
			}
		}
		want := "registration_token.create registration_token.create registration_token.create registration_token.update registration_token.update registration_token.delete"
		if got := strings.Join(actions, " "); got != want {
			t.Errorf("audit actions = %q, want %q", got, want)
		}
	})
}
