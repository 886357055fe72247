package federation_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// Renaming a device is a device-list change for the partners too: hs1
// sends an m.device_list_update naming the device (not a change of the
// user as a whole, which goes out only as a cross-signing update), hs2
// updates its cache and tells bob's client, and bob's /keys/query shows
// the new name — pushed, so it holds while hs1 cannot be asked
// (Complement TestFederationKeyUploadQuery).
func TestFederatedDeviceRename(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testFederatedDeviceRename)
}

func testFederatedDeviceRename(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice := newE2EEClient(t, hs1.Register(t, "alice"))
	bob := hs2.Register(t, "bob")

	var room id.RoomID
	if err := alice.Locked(func() error {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err == nil {
			room = created.RoomID
		}
		return err
	}); err != nil {
		t.Fatalf("create room: %v", err)
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	waitFor(t, "hs1 to see bob's join", func() bool { return membershipOf(ctx, alice.Client, room, bob.UserID) == "join" })

	displayName := func() string {
		t.Helper()
		resp, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatalf("keys/query: %v", err)
		}
		k, ok := resp.DeviceKeys[alice.UserID][alice.DeviceID]
		if !ok {
			t.Fatalf("bob does not see alice's device %s: %v", alice.DeviceID, resp.DeviceKeys)
		}
		name, _ := k.Unsigned["device_display_name"].(string)
		return name
	}
	before := displayName() // hs2 caches alice's keys
	since, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}

	for i, name := range []string{"Empfang", "Sprechzimmer 2"} {
		if name == before {
			t.Fatalf("test name %q equals the device's name before", name)
		}
		if err := alice.Locked(func() error {
			return alice.SetDeviceInfo(ctx, alice.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: name})
		}); err != nil {
			t.Fatalf("rename device: %v", err)
		}
		waitFor(t, fmt.Sprintf("bob's /sync to report rename %d", i+1), func() bool {
			resp, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: since.NextBatch, Timeout: 0})
			if err != nil || !slices.Contains(resp.DeviceLists.Changed, alice.UserID) {
				return false
			}
			since = resp
			return true
		})
		if i == 1 {
			// the second rename must arrive by itself: hs2 cannot refetch
			n.SetDown("hs1.test", true)
			defer n.SetDown("hs1.test", false)
		}
		if got := displayName(); got != name {
			t.Fatalf("after rename %d bob sees alice's device as %q, want %q", i+1, got, name)
		}
	}
}
