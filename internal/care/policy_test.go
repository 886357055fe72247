package care_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/care"
	"praxis/internal/config"
	"praxis/internal/hstest"
)

// TestContactPolicy is the contact-policy matrix of issue 6: every path
// that can put two users in touch, with who may and who may not. A
// refused case changes nothing.
func TestContactPolicy(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		a := newPractice(t, srv, "alpha", map[string]string{"dra": care.RoleDoctor})
		b := newPractice(t, srv, "beta", map[string]string{"drb": care.RoleDoctor})
		dra, drb := a.staff["dra"], b.staff["drb"]
		anna, bernd, carl := srv.Register(t, "anna"), srv.Register(t, "bernd"), srv.Register(t, "carl")
		annaRoom := couple(t, anna, a.code(t, care.CodePatient))
		couple(t, bernd, a.code(t, care.CodePatient))
		// carl couples with nobody

		member := func(room id.RoomID, user id.UserID) string {
			m, _ := srv.Rooms.Membership(ctx, room.String(), user.String())
			return m
		}
		ownRoom := func(c *mautrix.Client) id.RoomID {
			t.Helper()
			r, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatalf("%s creates a private room: %v", c.UserID, err)
			}
			return r.RoomID
		}
		invite := func(from, to *mautrix.Client) func() (string, func() bool) {
			return func() (string, func() bool) {
				room := ownRoom(from)
				_, err := from.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: to.UserID})
				return hstest.ErrCode(err), func() bool { return member(room, to.UserID) == "" }
			}
		}
		publicRoom, err := dra.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public"})
		if err != nil {
			t.Fatal(err)
		}

		for _, tc := range []struct {
			name string
			do   func() (errcode string, unchanged func() bool)
			want string // "" = allowed
		}{
			{"patient invites patient", invite(anna, bernd), "M_FORBIDDEN"},
			{"patient invites staff of an uncoupled practice", invite(anna, drb), "M_FORBIDDEN"},
			{"patient invites staff of their practice", invite(anna, dra), ""},
			{"staff invites their patient", invite(dra, anna), ""},
			{"staff invites another practice's patient", invite(drb, anna), "M_FORBIDDEN"},
			{"staff invites an uncoupled account", invite(dra, carl), "M_FORBIDDEN"},
			{"staff invites staff of another practice", invite(dra, drb), ""},
			{"patient createRoom with a patient invited", func() (string, func() bool) {
				_, err := anna.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bernd.UserID}})
				return hstest.ErrCode(err), func() bool {
					rooms, _ := srv.Rooms.JoinedRooms(ctx, bernd.UserID.String())
					return len(rooms) == 1 // only bernd's coupling room
				}
			}, "M_FORBIDDEN"},
			{"patient invites through a membership state event", func() (string, func() bool) {
				room := ownRoom(anna)
				_, err := anna.SendStateEvent(ctx, room, event.StateMember, bernd.UserID.String(), map[string]any{"membership": "invite"})
				return hstest.ErrCode(err), func() bool { return member(room, bernd.UserID) == "" }
			}, "M_FORBIDDEN"},
			{"staff brings another practice's staff into a coupling room", func() (string, func() bool) {
				_, err := dra.JoinRoomByID(ctx, annaRoom)
				if err != nil {
					return "join: " + err.Error(), nil
				}
				_, err = dra.InviteUser(ctx, annaRoom, &mautrix.ReqInviteUser{UserID: drb.UserID})
				return hstest.ErrCode(err), func() bool { return member(annaRoom, drb.UserID) == "" }
			}, "M_FORBIDDEN"},
			{"patient joins a public room uninvited", func() (string, func() bool) {
				_, err := carl.JoinRoomByID(ctx, publicRoom.RoomID)
				return hstest.ErrCode(err), func() bool { return member(publicRoom.RoomID, carl.UserID) == "" }
			}, "M_FORBIDDEN"},
			{"patient creates a public room", func() (string, func() bool) {
				_, err := carl.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public"})
				code := hstest.ErrCode(err)
				if code == "M_INVALID_ROOM_STATE" {
					code = "M_FORBIDDEN" // createRoom reports a refused initial event as bad room state
				}
				return code, func() bool {
					rooms, _ := srv.Rooms.JoinedRooms(ctx, carl.UserID.String())
					return len(rooms) == 0
				}
			}, "M_FORBIDDEN"},
			{"patient lists public rooms", func() (string, func() bool) {
				_, err := carl.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
				return hstest.ErrCode(err), nil
			}, "M_FORBIDDEN"},
			{"patient reads the profile of a stranger", func() (string, func() bool) {
				_, err := anna.GetProfile(ctx, carl.UserID)
				return hstest.ErrCode(err), nil
			}, "M_FORBIDDEN"},
			{"patient reads the profile of their practice's service account", func() (string, func() bool) {
				_, err := anna.GetProfile(ctx, id.UserID(a.practice.ServiceUser))
				return hstest.ErrCode(err), nil
			}, ""},
			{"anonymous profile lookup", func() (string, func() bool) {
				anon, _ := mautrix.NewClient(srv.URL, "", "")
				_, err := anon.GetProfile(ctx, dra.UserID)
				return hstest.ErrCode(err), nil
			}, "M_MISSING_TOKEN"},
			{"staff reads a patient's profile", func() (string, func() bool) {
				_, err := drb.GetProfile(ctx, carl.UserID)
				return hstest.ErrCode(err), nil
			}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, unchanged := tc.do()
				if got != tc.want {
					t.Fatalf("errcode %q, want %q", got, tc.want)
				}
				if tc.want != "" && unchanged != nil && !unchanged() {
					t.Error("a refused action changed membership")
				}
			})
		}

		t.Run("user directory hides strangers from patients", func(t *testing.T) {
			res, err := anna.SearchUserDirectory(ctx, "bernd", 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 0 {
				t.Errorf("anna finds %v, want nobody", res.Results)
			}
			res, err = dra.SearchUserDirectory(ctx, "anna", 10)
			if err != nil || len(res.Results) != 1 {
				t.Errorf("staff search for their patient = %+v (%v), want anna", res, err)
			}
		})
		t.Run("keys/query hides strangers from patients", func(t *testing.T) {
			resp, err := anna.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{
				bernd.UserID: {}, dra.UserID: {},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := resp.DeviceKeys[bernd.UserID]; ok {
				t.Error("anna learns bernd's devices")
			}
			if _, ok := resp.DeviceKeys[dra.UserID]; !ok {
				t.Error("anna cannot see her doctor's devices (she could not encrypt to them)")
			}
		})
		t.Run("to-device messages reach only shared-room users", func(t *testing.T) {
			msg := func() *event.Content { return &event.Content{Raw: map[string]any{"hello": true}} }
			_, err := anna.SendToDevice(ctx, event.Type{Type: "de.praxis.test", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
				Messages: map[id.UserID]map[id.DeviceID]*event.Content{bernd.UserID: {"*": msg()}, dra.UserID: {"*": msg()}},
			})
			if err != nil {
				t.Fatal(err)
			}
			count := func(user id.UserID) int {
				var n int
				if err := srv.DB.QueryRow(ctx, `SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1 AND sender = $2`, user.String(), anna.UserID.String()).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := count(bernd.UserID); n != 0 {
				t.Errorf("bernd got %d to-device messages from anna, want 0", n)
			}
			if n := count(dra.UserID); n == 0 {
				t.Error("anna's doctor got no to-device message (room keys could not reach them)")
			}
		})
		t.Run("keys/claim skips strangers", func(t *testing.T) {
			upload := map[string]any{"one_time_keys": map[string]any{"curve25519:AAAAAQ": "dGVzdCBrZXkgb25l", "curve25519:AAAAAg": "dGVzdCBrZXkgdHdv"}}
			for _, c := range []*mautrix.Client{bernd, dra} {
				if _, err := c.MakeRequest(ctx, http.MethodPost, c.BuildClientURL("v3", "keys", "upload"), upload, nil); err != nil {
					t.Fatalf("upload one-time keys: %v", err)
				}
			}
			resp, err := anna.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
				bernd.UserID: {bernd.DeviceID: "curve25519"}, dra.UserID: {dra.DeviceID: "curve25519"},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.OneTimeKeys[bernd.UserID]) != 0 {
				t.Errorf("anna claimed bernd's keys: %v", resp.OneTimeKeys)
			}
			if len(resp.OneTimeKeys[dra.UserID]) == 0 {
				t.Error("anna could not claim her doctor's key")
			}
		})
		t.Run("patients cannot publish rooms in the directory", func(t *testing.T) {
			room := ownRoom(carl)
			_, err := carl.MakeRequest(ctx, http.MethodPut, carl.BuildClientURL("v3", "directory", "list", "room", room), map[string]string{"visibility": "public"}, nil)
			if hstest.ErrCode(err) != "M_FORBIDDEN" {
				t.Errorf("publish: %v, want M_FORBIDDEN", err)
			}
		})
		t.Run("TI-M permission config blocks invites", func(t *testing.T) {
			block := map[string]any{"defaultSetting": "block all", "userExceptions": map[string]any{drb.UserID.String(): map[string]any{}}}
			if err := dra.SetAccountData(ctx, care.PermissionConfigType, block); err != nil {
				t.Fatal(err)
			}
			room := ownRoom(anna)
			if _, err := anna.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: dra.UserID}); hstest.ErrCode(err) != "M_FORBIDDEN" {
				t.Errorf("blocked invite: %v, want M_FORBIDDEN", err)
			}
			room = ownRoom(drb)
			if _, err := drb.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: dra.UserID}); err != nil {
				t.Errorf("invite by an exception: %v", err)
			}
		})
	}, enforce)
}

// TestPolicyOffIsPlainMatrix: with care.policy off, patients' rules do
// not apply (generic conformance suites, federation-only nodes).
func TestPolicyOffIsPlainMatrix(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	anna, bernd := srv.Register(t, "anna"), srv.Register(t, "bernd")
	r, err := anna.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bernd.UserID}})
	if err != nil {
		t.Fatalf("createRoom with invite: %v", err)
	}
	if _, err := bernd.JoinRoomByID(ctx, r.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := anna.PublicRooms(ctx, &mautrix.ReqPublicRooms{}); err != nil {
		t.Errorf("publicRooms: %v", err)
	}
	resp, err := http.Get(srv.URL + "/_matrix/client/v3/profile/" + bernd.UserID.String())
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("anonymous profile lookup: %v %v", resp.Status, err)
	}
	resp.Body.Close()
}

func TestPermissionConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		config  string
		inviter string
		patient bool
		want    bool
	}{
		{"no setting allows", `{}`, "@a:x", false, true},
		{"allow all", `{"defaultSetting":"allow all"}`, "@a:x", false, true},
		{"block all", `{"defaultSetting":"block all"}`, "@a:x", false, false},
		{"block all, user exception", `{"defaultSetting":"block all","userExceptions":{"@a:x":{}}}`, "@a:x", false, true},
		{"block all, server exception", `{"defaultSetting":"block all","serverExceptions":{"x":{}}}`, "@a:x", false, true},
		{"allow all, user exception blocks", `{"defaultSetting":"allow all","userExceptions":{"@a:x":{}}}`, "@a:x", false, false},
		{"allow all, insured persons blocked", `{"defaultSetting":"allow all","groupExceptions":[{"groupName":"isInsuredPerson"}]}`, "@a:x", true, false},
		{"insured-person exception spares staff", `{"defaultSetting":"allow all","groupExceptions":[{"groupName":"isInsuredPerson"}]}`, "@a:x", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := care.PermissionAllows(json.RawMessage(tc.config), tc.inviter, tc.patient); got != tc.want {
				t.Errorf("allows = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSelfRegistrationMakesPatients: under the health rules an account
// registered through the client API is a patient; with the rules off it
// stays an ordinary user.
func TestSelfRegistrationMakesPatients(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   string
	}{{"enforce", care.KindPatient}, {"off", care.KindUser}} {
		t.Run(tc.policy, func(t *testing.T) {
			srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Care.Policy = tc.policy }))
			c, _ := mautrix.NewClient(srv.URL, "", "")
			reg, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: "neu", Password: "neu-password-1"})
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			acc, err := srv.Users.Account(context.Background(), reg.UserID.String())
			if err != nil || acc.Kind != tc.want {
				t.Errorf("kind = %v (%v), want %q", acc.Kind, err, tc.want)
			}
		})
	}
}
