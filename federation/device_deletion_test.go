package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// A device alice@hs1 logs out is gone for bob@hs2 too: hs1 sends an
// m.device_list_update with deleted=true, hs2 drops the device from its
// cache and tells bob's client (device_lists.changed), and bob's
// /keys/query stops listing it, all while hs1 cannot be asked. The
// updates stay chained by prev_id: neither the deletion nor a later new
// device makes hs2 resync (a resync would fail with hs1 unreachable and
// leave alice's cache stale).
func TestFederatedDeviceDeletion(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testFederatedDeviceDeletion)
}

func testFederatedDeviceDeletion(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice := newE2EEClient(t, hs1.Register(t, "alice"))
	bob := hs2.Register(t, "bob")

	var room id.RoomID
	if err := alice.Locked(func() error {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset:       "private_chat",
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		if err == nil {
			room = created.RoomID
		}
		return err
	}); err != nil {
		t.Fatalf("create room: %v", err)
	}
	if err := alice.Locked(func() error {
		_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
		return err
	}); err != nil {
		t.Fatalf("invite: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("join: %v", err)
	}
	waitFor(t, "hs1 to see bob's join", func() bool { return membershipOf(ctx, alice.Client, room, bob.UserID) == "join" })

	aliceDevices := func() []id.DeviceID {
		t.Helper()
		resp, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatalf("keys/query: %v", err)
		}
		if len(resp.Failures) != 0 {
			t.Fatalf("keys/query failures: %v", resp.Failures)
		}
		var out []id.DeviceID
		for d := range resp.DeviceKeys[alice.UserID] {
			out = append(out, d)
		}
		slices.Sort(out)
		return out
	}
	cache := func() (devices []string, streamID int64, stale bool) {
		t.Helper()
		rows, err := hs2.DB.Query(ctx, `SELECT device_id FROM remote_device_keys WHERE user_id = $1 ORDER BY device_id`, alice.UserID.String())
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				t.Fatal(err)
			}
			devices = append(devices, d)
		}
		if err := hs2.DB.QueryRow(ctx, `SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1`, alice.UserID.String()).Scan(&streamID, &stale); err != nil {
			t.Fatal(err)
		}
		return devices, streamID, stale
	}

	// hs2 caches alice's keys on bob's first query.
	if got := aliceDevices(); !slices.Equal(got, []id.DeviceID{alice.DeviceID}) {
		t.Fatalf("alice's devices seen by bob: %v", got)
	}
	// Her second device reaches hs2 as an update; with no stream_id known
	// yet (the cache came from a query) hs2 resyncs once and from then on
	// knows where alice's stream is.
	alice2 := newE2EEClient(t, hs1.Login(t, "alice"))
	waitFor(t, "hs2 to learn alice's second device", func() bool {
		devs, stream, stale := cache()
		return slices.Contains(devs, alice2.DeviceID.String()) && stream > 0 && !stale
	})
	if got := aliceDevices(); !slices.Contains(got, alice2.DeviceID) {
		t.Fatalf("bob does not see alice's second device: %v", got)
	}
	_, before, _ := cache()
	since, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}

	// From here on hs2 cannot ask hs1 anything: what it learns comes from
	// the EDUs hs1 pushes.
	n.SetDown("hs1.test", true)
	defer n.SetDown("hs1.test", false)
	if _, err := alice2.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
	waitFor(t, "the deletion to reach hs2's cache", func() bool {
		devs, _, _ := cache()
		return !slices.Contains(devs, alice2.DeviceID.String())
	})
	if _, stream, stale := cache(); stale || stream <= before {
		t.Fatalf("after the deletion: stream_id %d (was %d), stale %v; want a chained update", stream, before, stale)
	}
	waitFor(t, "bob's /sync to report alice's device list changed", func() bool {
		resp, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: since.NextBatch, Timeout: 0})
		return err == nil && slices.Contains(resp.DeviceLists.Changed, alice.UserID)
	})
	if got := aliceDevices(); !slices.Equal(got, []id.DeviceID{alice.DeviceID}) {
		t.Fatalf("after the logout bob sees alice's devices %v, want only %s", got, alice.DeviceID)
	}

	// A later ordinary update chains onto the deletion: applied from the
	// EDU alone, no resync.
	_, afterDeletion, _ := cache()
	alice3 := newE2EEClient(t, hs1.Login(t, "alice"))
	waitFor(t, "hs2 to learn alice's third device", func() bool {
		devs, _, _ := cache()
		return slices.Contains(devs, alice3.DeviceID.String())
	})
	if _, stream, stale := cache(); stale || stream <= afterDeletion {
		t.Fatalf("after a new device: stream_id %d (was %d), stale %v; want a chained update", stream, afterDeletion, stale)
	}
	if got := aliceDevices(); !slices.Equal(got, sortedIDs(alice.DeviceID, alice3.DeviceID)) {
		t.Fatalf("bob sees alice's devices %v, want %s and %s", got, alice.DeviceID, alice3.DeviceID)
	}
}

func sortedIDs(ids ...id.DeviceID) []id.DeviceID {
	slices.Sort(ids)
	return ids
}

// Deactivating an account deletes all its devices, and the account
// leaves its rooms right after: the partners still hear of every
// deletion and stop serving the devices.
func TestFederatedDeactivationDeletesDevices(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
		carol := newE2EEClient(t, hs1.Register(t, "carol"))
		newE2EEClient(t, hs1.Login(t, "carol"))
		bob := hs2.Register(t, "bob")
		var room id.RoomID
		if err := carol.Locked(func() error {
			created, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				return err
			}
			room = created.RoomID
			_, err = carol.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("join: %v", err)
		}
		waitFor(t, "hs1 to see bob's join", func() bool { return membershipOf(ctx, carol.Client, room, bob.UserID) == "join" })
		cached := func() int {
			var c int
			if err := hs2.DB.QueryRow(ctx, `SELECT COUNT(*) FROM remote_device_keys WHERE user_id = $1`, carol.UserID.String()).Scan(&c); err != nil {
				t.Fatal(err)
			}
			return c
		}
		resp, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{carol.UserID: {}}})
		if err != nil || len(resp.DeviceKeys[carol.UserID]) != 2 || cached() != 2 {
			t.Fatalf("carol's devices seen by bob: %v (cached %d), %v; want 2", resp, cached(), err)
		}

		deactivate := func(body map[string]any) (int, map[string]any) {
			js, _ := json.Marshal(body)
			req, _ := http.NewRequestWithContext(ctx, "POST", hs1.URL+"/_matrix/client/v3/account/deactivate", bytes.NewReader(js))
			req.Header.Set("Authorization", "Bearer "+carol.AccessToken)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(res.Body).Decode(&out)
			return res.StatusCode, out
		}
		status, challenge := deactivate(map[string]any{})
		session, _ := challenge["session"].(string)
		if status != http.StatusUnauthorized || session == "" {
			t.Fatalf("deactivate challenge: %d %v", status, challenge)
		}
		if status, out := deactivate(map[string]any{"auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "carol"},
			"password": "password-carol", "session": session,
		}}); status != http.StatusOK {
			t.Fatalf("deactivate: %d %v", status, out)
		}
		waitFor(t, "hs2 to drop every device of the deactivated account", func() bool { return cached() == 0 })
	})
}
