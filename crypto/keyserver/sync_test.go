package keyserver_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

func syncOnce(t *testing.T, c *mautrix.Client, since string) *mautrix.RespSync {
	t.Helper()
	resp, err := c.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: 0})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return resp
}

// The E2EE parts of /sync: to-device delivery capped per response and
// redelivered until acknowledged, key counts, and device-list changes when
// a room-mate deletes a device.
func TestSyncE2EEFields(t *testing.T) {
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
		first := syncOnce(t, bob, "")

		// 150 messages: more than one response carries.
		const total = 150
		for i := 0; i < total; i++ {
			body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"i": i}}}}
			rawReq(t, alice, http.MethodPut, []any{"sendToDevice", "m.test", fmt.Sprintf("m%d", i)}, body)
		}
		r1 := syncOnce(t, bob, first.NextBatch)
		n1 := len(r1.ToDevice.Events)
		if n1 == 0 || n1 >= total {
			t.Fatalf("first sync carried %d of %d to-device messages, want a capped part", n1, total)
		}
		// Retrying the same since (response lost) gets the same messages again.
		again := syncOnce(t, bob, first.NextBatch)
		if len(again.ToDevice.Events) != n1 || again.ToDevice.Events[0].Content.Raw["i"] != r1.ToDevice.Events[0].Content.Raw["i"] {
			t.Fatalf("retried sync got %d messages, want the same %d", len(again.ToDevice.Events), n1)
		}
		seen := map[float64]bool{}
		for _, e := range r1.ToDevice.Events {
			seen[e.Content.Raw["i"].(float64)] = true
		}
		since := r1.NextBatch
		for len(seen) < total {
			r := syncOnce(t, bob, since)
			if len(r.ToDevice.Events) == 0 {
				t.Fatalf("messages stopped after %d of %d", len(seen), total)
			}
			for _, e := range r.ToDevice.Events {
				i := e.Content.Raw["i"].(float64)
				if seen[i] {
					t.Fatalf("message %v delivered twice after being acknowledged", i)
				}
				seen[i] = true
			}
			since = r.NextBatch
		}

		// One-time key counts and fallback key types.
		rawReq(t, bob, http.MethodPost, []any{"keys", "upload"}, map[string]any{
			"one_time_keys": otkBatch(0, 5),
			"fallback_keys": map[string]any{"signed_curve25519:FB": map[string]any{"key": "fb", "fallback": true}},
		})
		r := syncOnce(t, bob, since)
		if r.DeviceOTKCount.SignedCurve25519 != 5 || len(r.FallbackKeys) != 1 {
			t.Fatalf("counts %+v, fallback %v; want 5 and [signed_curve25519]", r.DeviceOTKCount, r.FallbackKeys)
		}
		since = r.NextBatch

		// Alice deletes a device: bob sees her in device_lists.changed.
		alice2 := srv.Login(t, "alice")
		rawReq(t, alice2, http.MethodPost, []any{"keys", "upload"}, map[string]any{"device_keys": signedDeviceKeysFor(t, alice2.UserID.String(), alice2.DeviceID.String())})
		r = syncOnce(t, bob, since)
		if !containsUser(r.DeviceLists.Changed, alice.UserID) {
			t.Fatalf("after alice's new device: changed = %v", r.DeviceLists.Changed)
		}
		since = r.NextBatch
		if err := srv.Users.DeleteDevices(ctx, alice.UserID.String(), []string{alice2.DeviceID.String()}); err != nil {
			t.Fatal(err)
		}
		r = syncOnce(t, bob, since)
		if !containsUser(r.DeviceLists.Changed, alice.UserID) {
			t.Fatalf("after alice deleted a device: changed = %v", r.DeviceLists.Changed)
		}
		since = r.NextBatch
		// Bob leaves the only shared room: alice sees him in left.
		aliceSince := syncOnce(t, alice, "").NextBatch
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		ra := syncOnce(t, alice, aliceSince)
		if !containsUser(ra.DeviceLists.Left, bob.UserID) {
			t.Fatalf("after bob left: left = %v", ra.DeviceLists.Left)
		}
	})
}

func containsUser(list []id.UserID, u id.UserID) bool {
	for _, v := range list {
		if v == u {
			return true
		}
	}
	return false
}
