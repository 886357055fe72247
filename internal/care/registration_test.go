package care_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/care"
	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

// tokenOnly is a node where registering needs a token: the health rules
// on, open registration off.
var tokenOnly = hstest.WithConfig(func(c *config.Config) {
	c.Care.Policy = "enforce"
	c.Registration.Open = false
	c.Registration.RequiresToken = true
})

// registerWithToken registers as a stock client does: a first request
// for the flows and a session, then the m.login.registration_token stage.
func registerWithToken(t *testing.T, srv *hstest.Server, username, token string) (*mautrix.RespRegister, error) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client(t, "", "", "")
	_, uia, err := c.Register(ctx, &mautrix.ReqRegister[any]{Username: username, Password: "correct horse battery"})
	if uia == nil {
		t.Fatalf("first register request: %v, want a 401 with a session", err)
	}
	resp, _, err := c.Register(ctx, &mautrix.ReqRegister[any]{Username: username, Password: "correct horse battery",
		Auth: map[string]any{"type": "m.login.registration_token", "token": token, "session": uia.Session}})
	return resp, err
}

func TestCouplingAtRegistration(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drmueller": care.RoleDoctor})
		oneTime := n.code(t, care.CodePatient)
		flyer := n.code(t, care.CodePractice)
		revoked, err := srv.Care.CreateCode(ctx, root, "mueller", care.CodePractice, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Care.RevokeCode(ctx, root, "mueller", revoked.CodeID); err != nil {
			t.Fatal(err)
		}
		plain, err := srv.Users.CreateRegistrationToken(ctx, users.RegistrationToken{})
		if err != nil {
			t.Fatal(err)
		}

		for _, tc := range []struct {
			name, user, token string
			wantErr           string // errcode of the token stage; "" = registered
			wantCoupled       bool
			wantVerified      bool
		}{
			{"one-time code couples verified", "anna", oneTime, "", true, true},
			{"one-time code works once", "bernd", oneTime, "M_UNAUTHORIZED", false, false},
			{"practice code couples unverified", "carla", flyer, "", true, false},
			{"practice code is reusable, in a room of one's own", "dora", flyer, "", true, false},
			{"withdrawn code", "emil", revoked.Code, "M_UNAUTHORIZED", false, false},
			{"unknown code", "frida", "nosuchcodeatall1", "M_UNAUTHORIZED", false, false},
			{"an ordinary registration token still works and couples nobody", "gustav", plain.Token, "", false, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				userID := "@" + tc.user + ":hs1.test"
				resp, err := registerWithToken(t, srv, tc.user, tc.token)
				if got := hstest.ErrCode(err); got != tc.wantErr {
					t.Fatalf("register with %s: %v, want %q", tc.name, err, tc.wantErr)
				}
				if tc.wantErr != "" {
					if _, err := srv.Users.Account(ctx, userID); err == nil {
						t.Errorf("%s was created although the stage failed", userID)
					}
					return
				}
				acc, err := srv.Users.Account(ctx, userID)
				if err != nil || acc.Kind != care.KindPatient {
					t.Fatalf("account %s = %+v (%v), want a patient", userID, acc, err)
				}
				cs, err := srv.Care.Couplings(ctx, "", userID)
				if err != nil {
					t.Fatal(err)
				}
				if !tc.wantCoupled {
					if len(cs) != 0 {
						t.Errorf("couplings of %s = %+v, want none", userID, cs)
					}
					return
				}
				if len(cs) != 1 || cs[0].PracticeID != "mueller" || cs[0].Verified != tc.wantVerified {
					t.Fatalf("couplings of %s = %+v, want one with mueller, verified=%v", userID, cs, tc.wantVerified)
				}
				// the new client finds its coupling room on its first look
				patient := srv.Client(t, userID, resp.DeviceID.String(), resp.AccessToken)
				rooms, err := patient.JoinedRooms(ctx)
				if err != nil || len(rooms.JoinedRooms) != 1 || rooms.JoinedRooms[0] != id.RoomID(cs[0].RoomID) {
					t.Errorf("joined rooms = %v (%v), want [%s]", rooms, err, cs[0].RoomID)
				}
				if m, _ := srv.Rooms.Membership(ctx, cs[0].RoomID, "@drmueller:hs1.test"); m != "invite" {
					t.Errorf("doctor's membership = %q, want invite", m)
				}
			})
		}
		carla, _ := srv.Care.Couplings(ctx, "", "@carla:hs1.test")
		dora, _ := srv.Care.Couplings(ctx, "", "@dora:hs1.test")
		if len(carla) == 1 && len(dora) == 1 && carla[0].RoomID == dora[0].RoomID {
			t.Errorf("two patients registered with the flyer code share room %s", carla[0].RoomID)
		}
	}, tokenOnly)
}

// The code is taken just before the account is created: of two
// registrations that both passed the stage with one one-time code, only
// the first gets it, and a failed account creation gives it back.
func TestRegistrationCodeIsClaimedOnce(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", nil)
		code := n.code(t, care.CodePatient)
		for _, sess := range []string{"sess-a", "sess-b"} {
			if ok, err := srv.Care.BindRegistrationCode(ctx, sess, code); !ok || err != nil {
				t.Fatalf("bind to %s: %v %v, want ok", sess, ok, err)
			}
		}
		if ok, err := srv.Care.ClaimRegistrationCode(ctx, "sess-a"); !ok || err != nil {
			t.Fatalf("first claim: %v %v, want ok", ok, err)
		}
		if ok, err := srv.Care.ClaimRegistrationCode(ctx, "sess-b"); ok || err == nil || !isForbidden(err) {
			t.Fatalf("second claim: %v %v, want 403", ok, err)
		}
		// the first account could not be created: its use comes back
		srv.Care.ReleaseRegistrationCode(ctx, "sess-a")
		if ok, err := srv.Care.ClaimRegistrationCode(ctx, "sess-b"); !ok || err != nil {
			t.Fatalf("claim after release: %v %v, want ok", ok, err)
		}
		// a session that gave no coupling code claims nothing
		if ok, err := srv.Care.ClaimRegistrationCode(ctx, "sess-c"); ok || err != nil {
			t.Errorf("claim without a code: %v %v, want false", ok, err)
		}
	})
}

func isForbidden(err error) bool {
	var he *httputil.Error
	return errors.As(err, &he) && he.Status == http.StatusForbidden
}

// The validity endpoint, which clients ask before they submit the stage,
// knows coupling codes too.
func TestRegistrationTokenValidityKnowsCouplingCodes(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", nil)
		now := time.Now()
		srv.Care.SetClock(func() time.Time { return now })
		code := n.code(t, care.CodePatient)
		c := srv.Client(t, "", "", "")
		valid := func() bool {
			var out struct {
				Valid bool `json:"valid"`
			}
			if _, err := c.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodGet,
				URL: c.HomeserverURL.String() + "/_matrix/client/v1/register/m.login.registration_token/validity?token=" + code, ResponseJSON: &out}); err != nil {
				t.Fatalf("validity: %v", err)
			}
			return out.Valid
		}
		if !valid() {
			t.Errorf("fresh one-time code: valid = false, want true")
		}
		now = now.Add(care.DefaultPatientCodeTTL + time.Minute)
		if valid() {
			t.Errorf("expired one-time code: valid = true, want false")
		}
	}, tokenOnly)
}
