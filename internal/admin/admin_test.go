package admin_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"praxis/internal/admin"
	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/users"
)

// call makes an admin API request as c and returns the HTTP status and
// Matrix errcode ("" on success). path is below the server root.
func call(t *testing.T, c *mautrix.Client, method, path string, body, out any) (int, string) {
	t.Helper()
	u := strings.TrimRight(c.HomeserverURL.String(), "/") + path
	_, err := c.MakeRequest(context.Background(), method, u, body, out)
	if err == nil {
		return http.StatusOK, "" // 200 or 201: rawStatus tells them apart
	}
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode, hstest.ErrCode(err)
	}
	t.Fatalf("%s %s: %v", method, path, err)
	return 0, ""
}

// rawStatus makes a request and returns only the status code (for 201s,
// which the mautrix client reports as success without the code).
func rawStatus(t *testing.T, c *mautrix.Client, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, strings.TrimRight(c.HomeserverURL.String(), "/")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func newAdmin(t *testing.T, srv *hstest.Server) *mautrix.Client {
	t.Helper()
	if _, err := srv.Users.CreateAccount(context.Background(), "root", "password-root", true, "user"); err != nil {
		t.Fatal(err)
	}
	return srv.Login(t, "root")
}

func anonymous(t *testing.T, srv *hstest.Server) *mautrix.Client {
	c, err := mautrix.NewClient(srv.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func esc(s string) string { return url.PathEscape(s) }

// TestAdminOnly checks every endpoint refuses a missing token (401) and a
// non-admin (403 M_FORBIDDEN), before looking at the request.
func TestAdminOnly(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	anon := anonymous(t, srv)
	bob := "@bob:hs1.test"
	for _, ep := range []struct{ method, path string }{
		{"GET", "/_synapse/admin/v1/server_version"},
		{"GET", "/_praxis/admin/v1/server"},
		{"GET", "/_synapse/admin/v2/users"},
		{"GET", "/_synapse/admin/v2/users/" + esc(bob)},
		{"PUT", "/_synapse/admin/v2/users/" + esc(bob)},
		{"POST", "/_synapse/admin/v1/deactivate/" + esc(bob)},
		{"POST", "/_synapse/admin/v1/reset_password/" + esc(bob)},
		{"GET", "/_synapse/admin/v1/users/" + esc(bob) + "/admin"},
		{"GET", "/_synapse/admin/v1/users/" + esc(bob) + "/joined_rooms"},
		{"GET", "/_synapse/admin/v1/whois/" + esc(bob)},
		{"GET", "/_synapse/admin/v2/users/" + esc(bob) + "/devices"},
		{"DELETE", "/_synapse/admin/v2/users/" + esc(bob) + "/devices/DEV"},
		{"POST", "/_synapse/admin/v2/users/" + esc(bob) + "/delete_devices"},
		{"PUT", "/_synapse/admin/v1/users/" + esc(bob) + "/admin"},
		{"GET", "/_synapse/admin/v1/rooms"},
		{"GET", "/_synapse/admin/v1/rooms/" + esc("!r:hs1.test")},
		{"GET", "/_synapse/admin/v1/rooms/" + esc("!r:hs1.test") + "/members"},
		{"GET", "/_synapse/admin/v1/registration_tokens"},
		{"POST", "/_synapse/admin/v1/registration_tokens/new"},
		{"GET", "/_synapse/admin/v1/registration_tokens/abc"},
		{"PUT", "/_synapse/admin/v1/registration_tokens/abc"},
		{"DELETE", "/_synapse/admin/v1/registration_tokens/abc"},
		{"GET", "/_praxis/admin/v1/audit"},
		{"GET", "/_praxis/admin/v1/audit/verify"},
	} {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			var body any
			if ep.method != "GET" && ep.method != "DELETE" {
				body = map[string]any{"admin": true, "password": "x"}
			}
			if st, code := call(t, anon, ep.method, ep.path, body, nil); st != 401 || code != "M_MISSING_TOKEN" {
				t.Errorf("no token: %d %s, want 401 M_MISSING_TOKEN", st, code)
			}
			if st, code := call(t, alice, ep.method, ep.path, body, nil); st != 403 || code != "M_FORBIDDEN" {
				t.Errorf("non-admin: %d %s, want 403 M_FORBIDDEN", st, code)
			}
		})
	}
	// Nothing was written by the refused requests.
	if _, err := srv.Users.Account(context.Background(), bob); err == nil {
		t.Error("a refused PUT created the user")
	}
	if st := rawStatus(t, anon, "GET", "/_synapse/admin/v1/nonsense", ""); st != 404 {
		t.Errorf("unknown admin path: %d, want 404", st)
	}
	if st := rawStatus(t, anon, "DELETE", "/_synapse/admin/v1/rooms", ""); st != 405 {
		t.Errorf("wrong method on an admin path: %d, want 405", st)
	}
}

func TestUsers(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		root := newAdmin(t, srv)
		ctx := context.Background()
		carol := "@carol:hs1.test"

		// create: 201 with details
		if st := rawStatus(t, root, "PUT", "/_synapse/admin/v2/users/"+esc(carol), `{"password":"pw-carol-1","displayname":"Carol"}`); st != 201 {
			t.Fatalf("create: status %d, want 201", st)
		}
		var u struct {
			Name        string  `json:"name"`
			DisplayName *string `json:"displayname"`
			Admin       bool    `json:"admin"`
			Deactivated bool    `json:"deactivated"`
		}
		if st, code := call(t, root, "GET", "/_synapse/admin/v2/users/"+esc(carol), nil, &u); code != "" {
			t.Fatalf("get: %d %s", st, code)
		}
		if u.Name != carol || u.DisplayName == nil || *u.DisplayName != "Carol" || u.Admin || u.Deactivated {
			t.Fatalf("get = %+v", u)
		}
		if err := srv.Users.CheckPassword(ctx, carol, "pw-carol-1"); err != nil {
			t.Fatalf("password not set: %v", err)
		}
		// modify: 200, admin flag and password
		if st := rawStatus(t, root, "PUT", "/_synapse/admin/v2/users/"+esc(carol), `{"admin":true,"password":"pw-carol-2"}`); st != 200 {
			t.Fatalf("modify: status %d, want 200", st)
		}
		var adm struct{ Admin bool }
		call(t, root, "GET", "/_synapse/admin/v1/users/"+esc(carol)+"/admin", nil, &adm)
		if !adm.Admin {
			t.Error("admin flag not set by PUT")
		}
		if err := srv.Users.CheckPassword(ctx, carol, "pw-carol-2"); err != nil {
			t.Errorf("password not changed: %v", err)
		}

		for _, tc := range []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"get unknown user", "GET", "/_synapse/admin/v2/users/" + esc("@nobody:hs1.test"), nil, 404, "M_NOT_FOUND"},
			{"get remote user", "GET", "/_synapse/admin/v2/users/" + esc("@x:other.test"), nil, 400, "M_INVALID_PARAM"},
			{"get malformed user", "GET", "/_synapse/admin/v2/users/carol", nil, 400, "M_INVALID_PARAM"},
			{"create with bad localpart", "PUT", "/_synapse/admin/v2/users/" + esc("@Bad Name:hs1.test"), map[string]any{"password": "x"}, 400, "M_INVALID_USERNAME"},
			{"put wrong shape", "PUT", "/_synapse/admin/v2/users/" + esc(carol), map[string]any{"admin": "yes"}, 400, "M_BAD_JSON"},
			{"demote yourself", "PUT", "/_synapse/admin/v1/users/" + esc("@root:hs1.test") + "/admin", map[string]any{"admin": false}, 400, "M_UNKNOWN"},
			{"set admin without flag", "PUT", "/_synapse/admin/v1/users/" + esc(carol) + "/admin", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"set admin unknown user", "PUT", "/_synapse/admin/v1/users/" + esc("@nobody:hs1.test") + "/admin", map[string]any{"admin": true}, 404, "M_NOT_FOUND"},
			{"reset without password", "POST", "/_synapse/admin/v1/reset_password/" + esc(carol), map[string]any{}, 400, "M_MISSING_PARAM"},
			{"reset unknown user", "POST", "/_synapse/admin/v1/reset_password/" + esc("@nobody:hs1.test"), map[string]any{"new_password": "x"}, 404, "M_NOT_FOUND"},
			{"deactivate unknown user", "POST", "/_synapse/admin/v1/deactivate/" + esc("@nobody:hs1.test"), map[string]any{}, 404, "M_NOT_FOUND"},
			{"deactivate with erase", "POST", "/_synapse/admin/v1/deactivate/" + esc(carol), map[string]any{"erase": true}, 400, "M_INVALID_PARAM"},
			{"list bad limit", "GET", "/_synapse/admin/v2/users?limit=abc", nil, 400, "M_INVALID_PARAM"},
			{"list bad order", "GET", "/_synapse/admin/v2/users?order_by=password", nil, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st, code := call(t, root, tc.method, tc.path, tc.body, nil)
				if st != tc.status || code != tc.code {
					t.Errorf("%s %s = %d %s, want %d %s", tc.method, tc.path, st, code, tc.status, tc.code)
				}
			})
		}
		if a, _ := srv.Users.Account(ctx, carol); a == nil || a.Deactivated || !a.IsAdmin {
			t.Fatalf("a refused request changed carol: %+v", a)
		}

		// reset_password logs the user out by default
		carolClient := srv.Login(t, "carol")
		if st, code := call(t, root, "POST", "/_synapse/admin/v1/reset_password/"+esc(carol), map[string]any{"new_password": "pw-carol-3"}, nil); code != "" {
			t.Fatalf("reset: %d %s", st, code)
		}
		if _, err := srv.Users.Authenticate(ctx, carolClient.AccessToken); !errors.Is(err, users.ErrUnknownToken) {
			t.Errorf("after reset_password the old token gives %v, want ErrUnknownToken", err)
		}
		if err := srv.Users.CheckPassword(ctx, carol, "pw-carol-3"); err != nil {
			t.Errorf("reset did not set the password: %v", err)
		}

		// list, filters and paging
		for _, name := range []string{"dave", "erin", "frank"} {
			srv.Register(t, name)
		}
		type userPage struct {
			Users []struct {
				Name string `json:"name"`
			} `json:"users"`
			NextToken string `json:"next_token"`
			Total     int    `json:"total"`
		}
		var list userPage
		list = userPage{}
		call(t, root, "GET", "/_synapse/admin/v2/users?limit=2", nil, &list)
		if list.Total != 5 || len(list.Users) != 2 || list.NextToken != "2" || list.Users[0].Name != "@carol:hs1.test" {
			t.Errorf("page 1 = %+v", list)
		}
		list = userPage{}
		call(t, root, "GET", "/_synapse/admin/v2/users?limit=2&from=4", nil, &list)
		if len(list.Users) != 1 || list.NextToken != "" || list.Users[0].Name != "@root:hs1.test" {
			t.Errorf("last page = %+v", list)
		}
		list = userPage{}
		call(t, root, "GET", "/_synapse/admin/v2/users?name=ERI", nil, &list)
		if list.Total != 1 || list.Users[0].Name != "@erin:hs1.test" {
			t.Errorf("name filter = %+v", list)
		}
		list = userPage{}
		call(t, root, "GET", "/_synapse/admin/v2/users?admins=true", nil, &list)
		if list.Total != 2 {
			t.Errorf("admins filter total = %d, want 2 (root, carol)", list.Total)
		}

		// deactivation: the token stops working, the list hides the user
		frank := srv.Login(t, "frank")
		if st, code := call(t, root, "POST", "/_synapse/admin/v1/deactivate/"+esc("@frank:hs1.test"), map[string]any{}, nil); code != "" {
			t.Fatalf("deactivate: %d %s", st, code)
		}
		if _, err := srv.Users.Authenticate(ctx, frank.AccessToken); !errors.Is(err, users.ErrUnknownToken) {
			t.Errorf("deactivated user's token: %v, want ErrUnknownToken", err)
		}
		list = userPage{}
		call(t, root, "GET", "/_synapse/admin/v2/users", nil, &list)
		if list.Total != 4 {
			t.Errorf("list without deactivated: total %d, want 4", list.Total)
		}
		list = userPage{}
		call(t, root, "GET", "/_synapse/admin/v2/users?deactivated=true", nil, &list)
		if list.Total != 5 {
			t.Errorf("list with deactivated: total %d, want 5", list.Total)
		}
		// reactivation needs a password
		if st, code := call(t, root, "PUT", "/_synapse/admin/v2/users/"+esc("@frank:hs1.test"), map[string]any{"deactivated": false}, nil); code != "M_MISSING_PARAM" {
			t.Errorf("reactivate without password: %d %s, want M_MISSING_PARAM", st, code)
		}
		call(t, root, "PUT", "/_synapse/admin/v2/users/"+esc("@frank:hs1.test"), map[string]any{"deactivated": false, "password": "pw-frank-2"}, nil)
		if err := srv.Users.CheckPassword(ctx, "@frank:hs1.test", "pw-frank-2"); err != nil {
			t.Errorf("reactivated user cannot log in: %v", err)
		}

		// every change above is in a verifiable audit log, without secrets
		var page struct {
			Entries []admin.Entry `json:"entries"`
		}
		call(t, root, "GET", "/_praxis/admin/v1/audit?limit=100", nil, &page)
		var actions, failures []string
		for _, e := range page.Entries {
			if e.Action == "request.failed" {
				failures = append(failures, e.Result)
			} else {
				actions = append(actions, e.Action)
			}
			if strings.Contains(string(e.Params), "pw-") {
				t.Errorf("audit row %d leaks a password: %s", e.Seq, e.Params)
			}
			if e.Actor != "@root:hs1.test" {
				t.Errorf("audit row %d actor = %s", e.Seq, e.Actor)
			}
		}
		want := "user.create user.modify user.reset_password user.deactivate user.modify"
		if got := strings.Join(actions, " "); got != want {
			t.Errorf("audit actions = %q, want %q", got, want)
		}
		// refused changes are recorded as attempts, with their errcode
		wantFailures := "M_INVALID_USERNAME M_BAD_JSON M_UNKNOWN M_MISSING_PARAM M_NOT_FOUND M_MISSING_PARAM M_NOT_FOUND M_NOT_FOUND M_INVALID_PARAM M_MISSING_PARAM"
		if got := strings.Join(failures, " "); got != wantFailures {
			t.Errorf("failed attempts = %q, want %q", got, wantFailures)
		}
		var v admin.Verification
		call(t, root, "GET", "/_praxis/admin/v1/audit/verify", nil, &v)
		if !v.OK || v.Rows != int64(len(page.Entries)) {
			t.Errorf("verify = %+v, want ok with %d rows", v, len(page.Entries))
		}
	})
}

func TestServerVersion(t *testing.T) {
	srv := hstest.New(t)
	root := newAdmin(t, srv)
	var v struct {
		ServerVersion string `json:"server_version"`
	}
	call(t, root, "GET", "/_synapse/admin/v1/server_version", nil, &v)
	if !strings.HasPrefix(v.ServerVersion, "Praxis") {
		t.Errorf("server_version = %q", v.ServerVersion)
	}
}

func TestRooms(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		root := newAdmin(t, srv)
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		clinic, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Clinic", Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, clinic.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Back office", Preset: "private_chat"}); err != nil {
			t.Fatal(err)
		}

		type room struct {
			RoomID        string  `json:"room_id"`
			Name          *string `json:"name"`
			JoinedMembers int     `json:"joined_members"`
			Encryption    *string `json:"encryption"`
			JoinRules     *string `json:"join_rules"`
			Creator       string  `json:"creator"`
			Version       string  `json:"version"`
		}
		var list struct {
			Rooms      []room `json:"rooms"`
			TotalRooms int    `json:"total_rooms"`
		}
		if st, code := call(t, root, "GET", "/_synapse/admin/v1/rooms", nil, &list); code != "" {
			t.Fatalf("list rooms: %d %s", st, code)
		}
		if list.TotalRooms != 2 || len(list.Rooms) != 2 || *list.Rooms[0].Name != "Back office" || *list.Rooms[1].Name != "Clinic" {
			t.Fatalf("rooms = %+v", list)
		}
		if r := list.Rooms[0]; r.Encryption == nil || *r.Encryption != "m.megolm.v1.aes-sha2" || r.JoinedMembers != 1 {
			t.Errorf("private room = %+v, want encrypted with 1 member", r)
		}
		if r := list.Rooms[1]; r.JoinedMembers != 2 || r.JoinRules == nil || *r.JoinRules != "public" || r.Creator != "@alice:hs1.test" || r.Version != "10" {
			t.Errorf("clinic = %+v", r)
		}
		list.Rooms = nil
		call(t, root, "GET", "/_synapse/admin/v1/rooms?search_term=clin&order_by=joined_members&dir=b", nil, &list)
		if len(list.Rooms) != 1 || list.Rooms[0].RoomID != clinic.RoomID.String() {
			t.Errorf("search = %+v", list)
		}

		var one room
		if st, code := call(t, root, "GET", "/_synapse/admin/v1/rooms/"+esc(clinic.RoomID.String()), nil, &one); code != "" || one.RoomID != clinic.RoomID.String() {
			t.Fatalf("room details: %d %s %+v", st, code, one)
		}
		var members struct {
			Members []string `json:"members"`
			Total   int      `json:"total"`
		}
		call(t, root, "GET", "/_synapse/admin/v1/rooms/"+esc(clinic.RoomID.String())+"/members", nil, &members)
		if members.Total != 2 || strings.Join(members.Members, ",") != "@alice:hs1.test,@bob:hs1.test" {
			t.Errorf("members = %+v", members)
		}

		for _, tc := range []struct {
			name, path string
			status     int
			code       string
		}{
			{"unknown room", "/_synapse/admin/v1/rooms/" + esc("!nope:hs1.test"), 404, "M_NOT_FOUND"},
			{"members of unknown room", "/_synapse/admin/v1/rooms/" + esc("!nope:hs1.test") + "/members", 404, "M_NOT_FOUND"},
			{"not a room ID", "/_synapse/admin/v1/rooms/" + esc("#alias:hs1.test"), 400, "M_INVALID_PARAM"},
			{"bad order", "/_synapse/admin/v1/rooms?order_by=secret", 400, "M_INVALID_PARAM"},
			{"bad dir", "/_synapse/admin/v1/rooms?dir=up", 400, "M_INVALID_PARAM"},
			{"bad limit", "/_synapse/admin/v1/rooms?limit=0", 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if st, code := call(t, root, "GET", tc.path, nil, nil); st != tc.status || code != tc.code {
					t.Errorf("GET %s = %d %s, want %d %s", tc.path, st, code, tc.status, tc.code)
				}
			})
		}

		var joined struct {
			JoinedRooms []string `json:"joined_rooms"`
			Total       int      `json:"total"`
		}
		call(t, root, "GET", "/_synapse/admin/v1/users/"+esc("@bob:hs1.test")+"/joined_rooms", nil, &joined)
		if joined.Total != 1 || joined.JoinedRooms[0] != clinic.RoomID.String() {
			t.Errorf("bob's joined rooms = %+v", joined)
		}
		if st, code := call(t, root, "GET", "/_synapse/admin/v1/users/"+esc("@nobody:hs1.test")+"/joined_rooms", nil, nil); st != 404 || code != "M_NOT_FOUND" {
			t.Errorf("joined rooms of an unknown user: %d %s", st, code)
		}

		// Deactivating bob makes him leave the room.
		if st, code := call(t, root, "POST", "/_synapse/admin/v1/deactivate/"+esc("@bob:hs1.test"), map[string]any{}, nil); code != "" {
			t.Fatalf("deactivate: %d %s", st, code)
		}
		members.Members = nil
		call(t, root, "GET", "/_synapse/admin/v1/rooms/"+esc(clinic.RoomID.String())+"/members", nil, &members)
		if strings.Join(members.Members, ",") != "@alice:hs1.test" {
			t.Errorf("after deactivating bob, members = %v", members.Members)
		}
	})
}

func TestDevices(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		root := newAdmin(t, srv)
		phone := srv.Register(t, "dana")
		laptop, tablet := srv.Login(t, "dana"), srv.Login(t, "dana")
		base := "/_synapse/admin/v2/users/" + esc("@dana:hs1.test")
		type devices struct {
			Devices []struct {
				DeviceID string `json:"device_id"`
				UserID   string `json:"user_id"`
			} `json:"devices"`
			Total int `json:"total"`
		}
		var ds devices
		if st, code := call(t, root, "GET", base+"/devices", nil, &ds); code != "" {
			t.Fatalf("list devices: %d %s", st, code)
		}
		if ds.Total != 3 || ds.Devices[0].UserID != "@dana:hs1.test" {
			t.Fatalf("devices = %+v", ds)
		}
		var who struct {
			UserID  string `json:"user_id"`
			Devices map[string]struct {
				Sessions []struct {
					Connections []struct {
						IP       string `json:"ip"`
						LastSeen int64  `json:"last_seen"`
					} `json:"connections"`
				} `json:"sessions"`
			} `json:"devices"`
		}
		call(t, root, "GET", "/_synapse/admin/v1/whois/"+esc("@dana:hs1.test"), nil, &who)
		if d, ok := who.Devices[phone.DeviceID.String()]; who.UserID != "@dana:hs1.test" || len(who.Devices) != 3 || !ok ||
			len(d.Sessions) != 1 || len(d.Sessions[0].Connections) != 1 || d.Sessions[0].Connections[0].IP != "127.0.0.1" {
			t.Errorf("whois = %+v", who)
		}

		// remote logout of the lost phone
		if st, code := call(t, root, "DELETE", base+"/devices/"+esc(phone.DeviceID.String()), nil, nil); code != "" {
			t.Fatalf("delete device: %d %s", st, code)
		}
		if _, err := srv.Users.Authenticate(ctx, phone.AccessToken); !errors.Is(err, users.ErrUnknownToken) {
			t.Errorf("deleted device's token: %v, want ErrUnknownToken", err)
		}
		if _, err := srv.Users.Authenticate(ctx, laptop.AccessToken); err != nil {
			t.Errorf("another device was logged out too: %v", err)
		}
		call(t, root, "POST", base+"/delete_devices", map[string]any{"devices": []string{laptop.DeviceID.String(), tablet.DeviceID.String()}}, nil)
		ds = devices{}
		call(t, root, "GET", base+"/devices", nil, &ds)
		if ds.Total != 0 {
			t.Errorf("after delete_devices %d devices are left", ds.Total)
		}
		for _, tc := range []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"devices of unknown user", "GET", "/_synapse/admin/v2/users/" + esc("@nobody:hs1.test") + "/devices", nil, 404, "M_NOT_FOUND"},
			{"delete for unknown user", "DELETE", "/_synapse/admin/v2/users/" + esc("@nobody:hs1.test") + "/devices/X", nil, 404, "M_NOT_FOUND"},
			{"delete_devices without list", "POST", base + "/delete_devices", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"delete_devices wrong shape", "POST", base + "/delete_devices", map[string]any{"devices": "all"}, 400, "M_BAD_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if st, code := call(t, root, tc.method, tc.path, tc.body, nil); st != tc.status || code != tc.code {
					t.Errorf("%s %s = %d %s, want %d %s", tc.method, tc.path, st, code, tc.status, tc.code)
				}
			})
		}
		var page struct {
			Entries []admin.Entry `json:"entries"`
		}
		call(t, root, "GET", "/_praxis/admin/v1/audit?action=user.delete_devices", nil, &page)
		if len(page.Entries) != 2 || page.Entries[0].Target != "@dana:hs1.test" {
			t.Errorf("audit rows for device deletion = %+v", page.Entries)
		}
	})
}

func TestAuditPracticeScope(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	root := newAdmin(t, srv)
	mueller, other := srv.Register(t, "pa-mueller"), srv.Register(t, "someone")
	srv.Admin.SetPracticeScope(func(ctx context.Context, caller *users.Device) (string, error) {
		if caller.UserID == "@pa-mueller:hs1.test" {
			return "praxis-mueller", nil
		}
		return "", nil
	})
	for _, p := range []string{"praxis-mueller", "praxis-schmidt", "", "praxis-mueller"} {
		if _, err := srv.Admin.Audit().Append(ctx, nil, admin.Record{Actor: "@x:hs1.test", Action: "staff.add", Target: "t", Practice: p}); err != nil {
			t.Fatal(err)
		}
	}
	type page struct {
		Entries []admin.Entry `json:"entries"`
	}
	seqs := func(p page) string {
		var s []string
		for _, e := range p.Entries {
			s = append(s, e.Practice+"#"+strconv.FormatInt(e.Seq, 10))
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		name   string
		c      *mautrix.Client
		query  string
		want   string
		status int
	}{
		{"server admin sees all", root, "", "praxis-mueller#1 praxis-schmidt#2 #3 praxis-mueller#4", 200},
		{"server admin filters", root, "?practice=praxis-schmidt", "praxis-schmidt#2", 200},
		{"practice admin sees their practice", mueller, "", "praxis-mueller#1 praxis-mueller#4", 200},
		{"practice admin cannot widen", mueller, "?practice=praxis-schmidt", "praxis-mueller#1 praxis-mueller#4", 200},
		{"others are refused", other, "", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p page
			st, code := call(t, tc.c, "GET", "/_praxis/admin/v1/audit"+tc.query, nil, &p)
			if st != tc.status || seqs(p) != tc.want {
				t.Errorf("got %d %s %q, want %d %q", st, code, seqs(p), tc.status, tc.want)
			}
		})
	}
	// verification stays with server admins
	if st, code := call(t, mueller, "GET", "/_praxis/admin/v1/audit/verify", nil, nil); st != 403 {
		t.Errorf("practice admin verify: %d %s, want 403", st, code)
	}
}

// TestAdminListen: with admin.listen the admin API leaves the client
// listener for its own.
func TestAdminListen(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Admin.Listen = "127.0.0.1:0" }))
	adminTS := httptest.NewServer(srv.AdminHandler())
	t.Cleanup(adminTS.Close)
	get := func(base string) int {
		resp, err := http.Get(base + "/_synapse/admin/v1/server_version")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(srv.URL); st != 404 {
		t.Errorf("admin API on the client listener: %d, want 404", st)
	}
	if st := get(adminTS.URL); st != 401 {
		t.Errorf("admin API on the admin listener without a token: %d, want 401", st)
	}
}
