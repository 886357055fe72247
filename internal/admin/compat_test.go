package admin_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"praxis/internal/hstest"
)

// TestSynapseAdminClient drives the admin API with mautrix-go's client
// for Synapse's admin API: what a tool written for Synapse sends and
// parses must work unchanged.
func TestSynapseAdminClient(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(withSecret))
	ctx := context.Background()
	anon := &synapseadmin.Client{Client: anonymous(t, srv)}

	reg, err := anon.SharedSecretRegister(ctx, secret, synapseadmin.ReqSharedSecretRegister{Username: "ops", Password: "pw-ops", Admin: true})
	if err != nil {
		t.Fatalf("SharedSecretRegister: %v", err)
	}
	adm := &synapseadmin.Client{Client: srv.Client(t, reg.UserID.String(), reg.DeviceID.String(), reg.AccessToken)}

	if _, err := adm.UsernameAvailable(ctx, "newbie"); err != nil {
		t.Errorf("UsernameAvailable(newbie): %v", err)
	}
	if _, err := adm.UsernameAvailable(ctx, "ops"); hstest.ErrCode(err) != "M_USER_IN_USE" {
		t.Errorf("UsernameAvailable(ops) = %v, want M_USER_IN_USE", err)
	}
	admin := true
	if err := adm.CreateOrModifyAccount(ctx, "@newbie:hs1.test", synapseadmin.ReqCreateOrModifyAccount{Password: "pw-1", Displayname: "Newbie", Admin: &admin}); err != nil {
		t.Fatalf("CreateOrModifyAccount: %v", err)
	}
	info, err := adm.GetUserInfo(ctx, "@newbie:hs1.test")
	if err != nil {
		t.Fatalf("GetUserInfo: %v", err)
	}
	if info.DisplayName != "Newbie" || !info.Admin || info.Deactivated {
		t.Errorf("GetUserInfo = %+v", info)
	}
	if age := time.Since(info.CreationTS.Time); age < 0 || age > time.Hour {
		t.Errorf("creation_ts parses as %v: not seconds since the epoch", info.CreationTS.Time)
	}
	srv.Login(t, "newbie")
	devs, err := adm.ListDevices(ctx, "@newbie:hs1.test")
	if err != nil || devs.Total != 1 || devs.Devices[0].DeviceID == "" {
		t.Fatalf("ListDevices = %+v, %v", devs, err)
	}
	if err := adm.ResetPassword(ctx, synapseadmin.ReqResetPassword{UserID: "@newbie:hs1.test", NewPassword: "pw-2", LogoutDevices: true}); err != nil {
		t.Fatalf("ResetPassword: %v", err)
	}
	if devs, _ := adm.ListDevices(ctx, "@newbie:hs1.test"); devs == nil || devs.Total != 0 {
		t.Errorf("devices after ResetPassword with logout: %+v", devs)
	}

	alice := srv.Register(t, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Front desk", Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rooms, err := adm.ListRooms(ctx, synapseadmin.ReqListRoom{SearchTerm: "front", OrderBy: "name", Direction: mautrix.DirectionForward, Limit: 10})
	if err != nil {
		t.Fatalf("ListRooms: %v", err)
	}
	if rooms.TotalRooms != 1 || rooms.Rooms[0].RoomID != room.RoomID || rooms.Rooms[0].Name != "Front desk" || rooms.Rooms[0].Encryption != id.AlgorithmMegolmV1 {
		t.Errorf("ListRooms = %+v", rooms)
	}
	ri, err := adm.RoomInfo(ctx, room.RoomID)
	if err != nil || ri.Creator != "@alice:hs1.test" || ri.JoinedMembers != 1 {
		t.Errorf("RoomInfo = %+v, %v", ri, err)
	}
	members, err := adm.RoomMembers(ctx, room.RoomID)
	if err != nil || members.Total != 1 || members.Members[0] != "@alice:hs1.test" {
		t.Errorf("RoomMembers = %+v, %v", members, err)
	}

	if err := adm.DeactivateAccount(ctx, "@newbie:hs1.test", synapseadmin.ReqDeleteUser{}); err != nil {
		t.Fatalf("DeactivateAccount: %v", err)
	}
	if info, err := adm.GetUserInfo(ctx, "@newbie:hs1.test"); err != nil || !info.Deactivated {
		t.Errorf("after DeactivateAccount: %+v, %v", info, err)
	}
}
