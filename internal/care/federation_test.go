package care_test

import (
	"context"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/care"
	"praxis/internal/config"
	"praxis/internal/hstest"
)

// TestFederatedContactPolicy: the contact policy holds across servers. A
// user of another server cannot invite a local patient (the invite is
// refused before this server signs it), but may invite local staff; a
// local patient cannot invite or join out.
func TestFederatedContactPolicy(t *testing.T) {
	n := hstest.NewNetworkWith(t, []string{"hs1.test", "hs2.test"}, hstest.WithConfig(func(c *config.Config) {
		if c.ServerName == "hs1.test" {
			c.Care.Policy = "enforce"
		}
	}))
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	a := newPractice(t, hs1, "alpha", map[string]string{"dra": care.RoleDoctor})
	anna := hs1.Register(t, "anna")
	couple(t, anna, a.code(t, care.CodePatient))
	remote := hs2.Register(t, "remote")

	room, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: anna.UserID}); err == nil {
		t.Error("a remote user invited a local patient")
	} else if !strings.Contains(err.Error(), "patient") {
		t.Errorf("refused for another reason than the contact policy: %v", err)
	}
	if m, _ := hs1.Rooms.Membership(ctx, room.RoomID.String(), anna.UserID.String()); m != "" {
		t.Errorf("anna's membership after the refused invite = %q, want none", m)
	}
	if _, err := remote.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: a.staff["dra"].UserID}); err != nil {
		t.Errorf("a remote user invites local staff: %v", err)
	}
	// a patient reaches no one outside
	if _, err := anna.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs2.test"}}); hstest.ErrCode(err) != "M_FORBIDDEN" {
		t.Errorf("patient joins a remote public room: %v, want M_FORBIDDEN", err)
	}
	own, err := anna.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anna.InviteUser(ctx, own.RoomID, &mautrix.ReqInviteUser{UserID: id.UserID("@remote:hs2.test")}); hstest.ErrCode(err) != "M_FORBIDDEN" {
		t.Errorf("patient invites a remote user: %v, want M_FORBIDDEN", err)
	}
}
