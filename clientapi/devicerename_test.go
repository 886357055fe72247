package clientapi_test

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// TestDeviceRenameIsADeviceListChange: device names are part of what
// /keys/query shows, so peers must be told to refetch.
func TestDeviceRenameIsADeviceListChange(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SetDeviceInfo(ctx, alice.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Praxis-Tablet"}); err != nil {
			t.Fatal(err)
		}
		next, err := bob.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(next.DeviceLists.Changed, alice.UserID) {
			t.Fatalf("device_lists after rename = %+v, want alice in changed", next.DeviceLists)
		}
	})
}
