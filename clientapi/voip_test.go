package clientapi_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/call/turn"
	"praxis/internal/config"
	"praxis/internal/hstest"
)

const voipSecret = "voip-test-secret-0123456789"

func TestTurnServerOffIsNotFound(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	_, err := alice.TurnServer(t.Context())
	if code := hstest.ErrCode(err); code != "M_NOT_FOUND" {
		t.Fatalf("TurnServer with TURN off: errcode %q (%v), want M_NOT_FOUND", code, err)
	}
}

func TestTurnServerNeedsLogin(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(externalTURN))
	resp, err := http.Get(srv.URL + "/_matrix/client/v3/voip/turnServer")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
}

func externalTURN(c *config.Config) {
	c.TURN.Enabled = true
	c.TURN.SharedSecret = voipSecret
	c.TURN.URIs = []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"}
	c.TURN.TTL = time.Hour
}

func TestTurnServerCredentials(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(externalTURN))
	alice := srv.Register(t, "alice")
	before := time.Now()
	resp, err := alice.TurnServer(t.Context())
	if err != nil {
		t.Fatalf("TurnServer: %v", err)
	}
	if resp.TTL != 3600 {
		t.Errorf("ttl = %d, want 3600", resp.TTL)
	}
	if strings.Join(resp.URIs, " ") != strings.Join([]string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"}, " ") {
		t.Errorf("uris = %v, want the configured ones", resp.URIs)
	}
	ts, user, ok := strings.Cut(resp.Username, ":")
	if !ok || user != string(alice.UserID) {
		t.Fatalf("username %q, want <expiry>:%s", resp.Username, alice.UserID)
	}
	exp, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Fatalf("username %q: expiry is not a number", resp.Username)
	}
	if lo, hi := before.Add(time.Hour).Unix()-1, time.Now().Add(time.Hour).Unix()+1; exp < lo || exp > hi {
		t.Errorf("expiry %d, want now+ttl in [%d, %d]", exp, lo, hi)
	}
	// The password is what coturn's use-auth-secret computes.
	if want := turn.Password(voipSecret, resp.Username); resp.Password != want {
		t.Errorf("password %q does not verify with the shared secret (want %q)", resp.Password, want)
	}
}

type callsStub map[string]bool

func (c callsStub) InCallWithStaff(_ context.Context, userID string) (bool, error) {
	return c[userID], nil
}

func TestTurnServerStaffOnly(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) {
		externalTURN(c)
		c.TURN.StaffOnly = true
	}))
	ctx := context.Background()
	for _, acc := range []struct {
		localpart, kind string
		admin           bool
	}{{"drsmith", "staff", false}, {"root", "user", true}, {"patient1", "patient", false}, {"patient2", "patient", false}} {
		if _, err := srv.Users.CreateAccount(ctx, acc.localpart, "password-"+acc.localpart, acc.admin, acc.kind); err != nil {
			t.Fatal(err)
		}
	}
	srv.TURN.SetCallChecker(callsStub{srv.Users.UserID("patient2"): true})
	for _, tc := range []struct {
		localpart string
		wantErr   string
	}{
		{"drsmith", ""},
		{"root", ""},
		{"patient1", "M_FORBIDDEN"},
		{"patient2", ""}, // in a call with staff
	} {
		t.Run(tc.localpart, func(t *testing.T) {
			_, err := srv.Login(t, tc.localpart).TurnServer(t.Context())
			if got := hstest.ErrCode(err); got != tc.wantErr {
				t.Fatalf("TurnServer as %s: errcode %q (%v), want %q", tc.localpart, got, err, tc.wantErr)
			}
		})
	}
}

// TestTurnServerEmbeddedRelay checks that the URIs of the embedded relay
// are real: the handed-out credentials allocate and relay on each of them.
func TestTurnServerEmbeddedRelay(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) {
		c.TURN.Enabled = true
		c.TURN.SharedSecret = voipSecret
		c.TURN.ListenUDP = "127.0.0.1:0"
		c.TURN.ListenTCP = "127.0.0.1:0"
		c.TURN.RelayPorts = ""
	}))
	resp, err := srv.Register(t, "alice").TurnServer(t.Context())
	if err != nil {
		t.Fatalf("TurnServer: %v", err)
	}
	if len(resp.URIs) != 2 || !strings.HasSuffix(resp.URIs[0], "?transport=udp") || !strings.HasSuffix(resp.URIs[1], "?transport=tcp") {
		t.Fatalf("uris = %v, want the UDP and TCP listeners", resp.URIs)
	}
	for _, uri := range resp.URIs {
		if res := turn.Probe(t.Context(), uri, resp.Username, resp.Password, nil); res.Err != nil {
			t.Errorf("relay through %s: %v", uri, res.Err)
		}
	}
	if s := srv.TURN.Relay().Stats(); s.RelayedBytes == 0 {
		t.Errorf("relay stats show no relayed bytes after two probes")
	}
}

// TestTurnServerStaffOnlyDuringCall runs the real call policy: a patient
// gets credentials while a staff member's m.call.invite rings, not before
// and not after the hangup.
func TestTurnServerStaffOnlyDuringCall(t *testing.T) {
	hstest.Each(t, staffOnlyDuringCall, hstest.WithConfig(func(c *config.Config) {
		externalTURN(c)
		c.TURN.StaffOnly = true
		c.Rooms.EncryptByDefault = false
	}))
}

func staffOnlyDuringCall(t *testing.T, srv *hstest.Server) {
	ctx := t.Context()
	for localpart, kind := range map[string]string{"drsmith": "staff", "patient": "patient"} {
		if _, err := srv.Users.CreateAccount(ctx, localpart, "password-"+localpart, false, kind); err != nil {
			t.Fatal(err)
		}
	}
	doc, patient := srv.Login(t, "drsmith"), srv.Login(t, "patient")
	room, err := doc.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{patient.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := patient.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	patientGets := func(step string, want string) {
		t.Helper()
		_, err := patient.TurnServer(ctx)
		if got := hstest.ErrCode(err); got != want {
			t.Fatalf("%s: patient's TurnServer errcode %q (%v), want %q", step, got, err, want)
		}
	}
	patientGets("before the call", "M_FORBIDDEN")
	call := map[string]any{"call_id": "c1", "party_id": "p1", "version": "1", "lifetime": 60000,
		"offer": map[string]any{"type": "offer", "sdp": "v=0"}}
	if _, err := doc.SendMessageEvent(ctx, room.RoomID, event.CallInvite, call); err != nil {
		t.Fatal(err)
	}
	patientGets("while the invite rings", "")
	if _, err := doc.SendMessageEvent(ctx, room.RoomID, event.CallHangup, map[string]any{"call_id": "c1", "party_id": "p1", "version": "1"}); err != nil {
		t.Fatal(err)
	}
	patientGets("after the hangup", "M_FORBIDDEN")
}
